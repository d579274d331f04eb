"""How reports print numbers: one rule for every table and sentence."""

from __future__ import annotations

import math
import re

from tickercast.significance import format_p


def fmt(value: float | int | None, spec: str, missing: str = "n/a") -> str:
    """`value` by the format `spec`; `missing` when there is no value (None, NaN). Never a
    negative zero: -1e-17 as a skill is "+0.0%", not "-0.0%", which reads as a loss that
    is not there."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    text = format(value, spec)
    if text.startswith("-") and not any(c in "123456789" for c in text):
        return format(0.0 if isinstance(value, float) else 0, spec)
    return text


def p_cell(p: float | None) -> str:
    """A p-value in a table cell: '0.041', '< 0.001', or 'n/a' (the sentences'
    `significance.format_p` without its '= ')."""
    return format_p(p).removeprefix("= ")


def aligned(headers: list[str], rows: list[list[str]]) -> str:
    """Rows of text cells as a plain aligned table (logs, pipes): text columns left,
    columns of numbers right, a dashed rule under the header."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    numeric = [
        all(_numberish(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))
    ]

    def line(row: list[str]) -> str:
        cols = zip(row, widths, numeric, strict=True)
        out = (c.rjust(w) if num else c.ljust(w) for c, w, num in cols)
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


_NUMBER = re.compile(r"^[<>+\-]?\s*[\d.,]+%?( ± [\d.,]+%?)?( \(.*\))?$")


def _numberish(cell: str) -> bool:
    """A number (with ± spread or a note in parentheses) or a missing value; not a date."""
    text = cell.strip()
    return text in ("n/a", "–", "-", "—", "") or bool(_NUMBER.match(text))
