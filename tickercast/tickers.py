"""Ticker symbols are checked before they touch a path or a URL."""

from __future__ import annotations

import re

# Yahoo's alphabet: letters, digits and . - ^ =  (BRK-B, ^GSPC, EURUSD=X, ES=F).
_TICKER = re.compile(r"^[A-Za-z0-9.\-^=]{1,20}$")


class InvalidTickerError(ValueError):
    """A symbol outside Yahoo's alphabet, refused before any I/O."""


def validate_ticker(symbol: str) -> str:
    """Return the upper-cased symbol or raise naming it; never lets '..' or '/' through."""
    if not isinstance(symbol, str) or not _TICKER.fullmatch(symbol) or set(symbol) <= {"."}:
        raise InvalidTickerError(
            f"invalid ticker {symbol!r}: use 1-20 characters from letters, digits and . - ^ ="
        )
    return symbol.upper()


def slug(text: str, lower: bool = True) -> str:
    """`text` with every character but letters and digits as '-': a ticker (or key) in a
    Prefect artifact key or a Keras layer name, which allow no other characters."""
    text = text.lower() if lower else text
    return "".join(c if c.isalnum() else "-" for c in text)
