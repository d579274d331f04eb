"""A version's verdict in plain language, one rule for the page and the terminal.

A person reading "shrunk toward naive (alpha 0)" needs "no skill found: this forecast is
the last close"; the statistics (DM p, alpha) stay beside it, never instead of it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tickercast.evaluation.names import NAIVE
from tickercast.significance import format_p

NO_SKILL = "no skill found: this forecast is the last close"


def naive_test(metadata: Mapping) -> dict:
    """The Diebold-Mariano test of the model against naive that evaluation recorded."""
    naive = (metadata.get("metrics") or {}).get(NAIVE) or {}
    return {"p_value": naive.get("dm_p"), "verdict": naive.get("dm_verdict")}


def alpha_of(metadata: Mapping) -> float | None:
    return (metadata.get("shrinkage") or {}).get("alpha")


def verdict_words(metadata: Mapping) -> tuple[str, str]:
    """(state, sentence): state is better | worse | indistinguishable (the colour), the
    sentence what it means for the forecast, with its test's p-value."""
    test = naive_test(metadata)
    state, p = test.get("verdict"), test.get("p_value")
    alpha = alpha_of(metadata)
    stats = f"DM p {format_p(p)} on the test split"
    if alpha is not None and alpha <= 1e-6:
        return "indistinguishable", f"{NO_SKILL} ({stats}; shrunk to alpha 0)"
    pulled = ""
    if alpha is not None and alpha < 0.995:
        pulled = f"; the network's move is scaled by alpha {alpha:.2f} toward the last close"
    if state == "better":
        return "better", f"beats the last close (naive): {stats}{pulled}"
    if state == "worse":
        return "worse", f"significantly worse than the last close (naive): {stats}{pulled}"
    if state == "indistinguishable":
        return "indistinguishable", f"no evidence of skill over the last close: {stats}{pulled}"
    return "indistinguishable", "not tested against the last close"


TARGET_WORDS = {
    "close": "close in {h} trading days",
    "mean_close": "average close of the next {h} trading days",
    "mean_close_log_return": "average close of the next {h} trading days",
    "close_log_return": "close in {h} trading days",
}


def target_words(row: dict) -> str:
    """What the number forecasts: 'average close of the next 5 trading days'."""
    target = str(row.get("target"))
    if target.startswith("closes"):  # one output per day ahead
        return f"close {row.get('output')} trading day(s) ahead"
    return TARGET_WORDS.get(target, "{h}-day forecast").format(h=row["horizon"])


def band_words(row: dict) -> str:
    """'80%: 118.90–125.92; 95%: 115.10–129.70' (empty without bands)."""
    return "; ".join(
        f"{level}%: {row[f'lo_{level}']:,.2f}–{row[f'hi_{level}']:,.2f}"
        for level in ("80", "95")
        if row.get(f"lo_{level}") is not None and row.get(f"hi_{level}") is not None
    )


def forecast_words(row: dict) -> str:
    """'average close of the next 5 trading days 122.41 (80%: 118.90–125.92)'."""
    what, bands = target_words(row), band_words(row)
    return f"{what} {row['forecast']:,.2f}" + (f" ({bands})" if bands else "")
