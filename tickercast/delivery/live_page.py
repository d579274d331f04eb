"""A champion's live record as an HTML fragment for the service's pages (issue 23): the
forecasts it published, with their bands, against what happened, and its live skill and
coverage beside what its test split promised. The page (tickercast.delivery.page) embeds
the fragment; everything from a file is escaped there and here alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from tickercast.delivery import ledger
from tickercast.delivery.page import Raw, esc, percent, price, table
from tickercast.significance import format_p

RECENT = 10  # published forecasts shown, newest first


def live_fragment(data_dir: str | Path, ticker: str, version: int) -> str:
    """The fragment for `version` of `ticker` (a short note when nothing was published)."""
    try:
        scored = ledger.score(data_dir, ticker)
        kept = ledger.read(data_dir, ticker)
    except (OSError, ValueError) as exc:
        return f'<p class="warn">live record unavailable: {esc(exc)}</p>'
    mine = kept[kept["version"] == int(version)] if not kept.empty else kept
    if mine.empty:
        return f'<p class="muted">v{int(version)} has published no forecast yet.</p>'
    record = ledger.version_record(data_dir, ticker, version, scored)
    return summary(record, len(mine)) + published_table(mine, scored)


def summary(record: Mapping, issued: int) -> str:
    """Live skill and coverage with the promise beside them, and the flag if any."""
    promise = record.get("promised") or {}
    n = record.get("n", 0)
    rows = [
        [
            Raw("skill vs naive (MAE)"),
            percent(record.get("skill"), signed=True),
            percent(promise.get("skill"), signed=True),
            Raw(f"DM p {esc(format_p(record.get('dm_p')))}" if n >= 3 else "too few yet"),
        ]
    ]
    for band in ledger.BANDS:
        p = record.get(f"kupiec_p_below_{band}")
        rows.append(
            [
                Raw(f"{band}% band coverage"),
                percent(record.get(f"coverage_{band}")),
                percent(promise.get(f"coverage_{band}")),
                Raw(f"Kupiec p (below) {esc(format_p(p))}" if p is not None else "–"),
            ]
        )
    flag = record.get("flag")
    note = (
        f'<p class="warn">flagged: {esc(flag)}</p>'
        if flag
        else '<p class="muted">not flagged: nothing significantly wrong so far</p>'
    )
    head = f'<p class="muted">{issued} forecast(s) published, {n} scored so far</p>'
    return head + table(("", "live", "test split promised", "test"), rows) + note


def published_table(kept: pd.DataFrame, scored: pd.DataFrame) -> str:
    """The latest published forecasts (first output), newest first, with the truth."""
    first = kept[kept["output"] == 1].tail(RECENT).iloc[::-1]
    truth = {}
    if not scored.empty:
        for row in scored[scored["output"] == 1].to_dict("records"):
            truth[(str(row["as_of"]), int(row["version"]))] = row
    out = []
    for row in first.to_dict("records"):
        done = truth.get((str(row["as_of"]), int(row["version"])))
        hit = "–" if done is None else _hits(done)
        out.append(
            [
                Raw(esc(row["as_of"])),
                price(row.get("forecast")),
                f"{price(row.get('lo_80'))} – {price(row.get('hi_80'))}",
                f"{price(row.get('lo_95'))} – {price(row.get('hi_95'))}",
                "not yet" if done is None else price(done["realized"]),
                Raw(esc(hit)),
            ]
        )
    headers = ("origin", "forecast", "80% band", "95% band", "realized", "in band")
    return table(headers, out)


def _hits(row: Mapping) -> str:
    inside = [b for b in ledger.BANDS if row.get(f"hit_{b}") is True]
    return ", ".join(f"{b}%" for b in inside) or "outside"
