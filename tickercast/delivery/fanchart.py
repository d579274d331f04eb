"""The page's fan chart: the last months of closes and the coming horizon's forecast with
its 80% and 95% bands (and every quantile of the grid when the forecast carries them), as
inline SVG.

SVG drawn here, not a PNG: it needs no plotting library per request, no script, scales
to any width with text that stays legible (the viewBox scales, fonts are in CSS pixels
of the drawing), and the page stays one self-contained document.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tickercast.choices import QUANTILES

WIDTH, HEIGHT = 540, 270
LEFT, RIGHT, TOP, BOTTOM = 54, 112, 12, 30
CLOSE, FORECAST = "#1d2430", "#1f5fbf"


def quantiles_of(row: dict) -> dict[float, float]:
    """The forecast's quantiles on the grid, when it has them: `quantiles` as a list in
    the order of `quantile_levels` (what predict writes), a mapping ({"0.05": v}), or
    columns q_0.05 / q_05."""
    found: dict[float, float] = {}
    given = row.get("quantiles")
    if isinstance(given, (list, tuple)):
        levels = row.get("quantile_levels") or QUANTILES
        given = dict(zip(levels, given, strict=False))
    if isinstance(given, dict):
        for key, value in given.items():
            try:
                found[float(key)] = float(value)
            except (TypeError, ValueError):
                continue
    for q in QUANTILES:
        for key in (f"q_{q:g}", f"q{round(q * 1000):03d}", f"q_{round(q * 100):02d}"):
            value = row.get(key)
            if isinstance(value, (int, float)) and np.isfinite(value):
                found[q] = float(value)
    return {q: v for q, v in sorted(found.items()) if np.isfinite(v)}


def _days_after(day: dt.date, n: int) -> list[dt.date]:
    out, current = [], day
    while len(out) < n:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            out.append(current)
    return out


@dataclass(frozen=True)
class _Frame:
    """Data to drawing coordinates: x by day index (0 = the first close shown, `span` =
    the horizon's end), y by price between `lo` and `hi` (padded by `pad`)."""

    span: float
    lo: float
    hi: float
    pad: float

    def x(self, i: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * i / max(self.span, 1)

    def y(self, v: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (self.hi - v) / (self.hi - self.lo)


def fan_chart(dates: Sequence[str], closes: Sequence[float], rows: list[dict], title: str) -> str:
    """The SVG (an empty string without closes or forecast). `rows` are the forecast's
    outputs: one row (a value for the whole horizon, e.g. the mean close of the next 5
    days) spans the horizon; several rows (one per day) draw a fan day by day."""
    if not len(closes) or not rows:
        return ""
    horizon = int(rows[0].get("horizon") or len(rows))
    # the coming days get at least a sixth of the width: a 5-day block after six months
    # of closes would be a sliver
    ahead = max(float(horizon), len(closes) / 5)
    start = len(closes) - 1
    if len(rows) == 1:
        xs = [(start + ahead * 0.1, start + ahead)]
    else:
        step = ahead / len(rows)
        xs = [(start + step * j, start + step * (j + 1)) for j in range(len(rows))]
    frame = _frame(closes, rows, start + ahead)
    parts = [
        f'<svg class="fan" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        *_axes(frame, dates, len(closes), horizon),
        *_history(frame, closes),
    ]
    for (x0, x1), row in zip(xs, rows, strict=True):
        parts += _block(row, frame.x(x0), frame.x(x1), frame.y)
    parts += _legend(rows[-1], frame.y)
    parts.append("</svg>")
    return "".join(parts)


def _frame(closes: Sequence[float], rows: list[dict], span: float) -> _Frame:
    """The frame whose price range holds every close, forecast, band edge and quantile."""
    values = list(closes) + [
        v
        for r in rows
        for k, v in r.items()
        if (k.startswith(("lo_", "hi_")) or k == "forecast") and isinstance(v, (int, float))
    ]
    for r in rows:
        values += list(quantiles_of(r).values())
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = (hi - lo) * 0.06 or 1.0
    return _Frame(span=span, lo=lo - pad, hi=hi + pad, pad=pad)


def _axes(frame: _Frame, dates: Sequence[str], n: int, horizon: int) -> list[str]:
    """Price gridlines with their labels; the first, middle and last shown day and the
    horizon's last trading day under the x axis."""
    out = []
    for v in np.linspace(frame.lo + frame.pad, frame.hi - frame.pad, 5):
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{frame.y(v):.1f}" '
            f'y2="{frame.y(v):.1f}" stroke="#e4e7ec"/>'
            f'<text x="{LEFT - 6}" y="{frame.y(v) + 4:.1f}" text-anchor="end" class="tick">'
            f"{v:,.2f}</text>"
        )
    for i in (0, n // 2):  # the last close's day is the forecast's "as of"
        out.append(
            f'<text x="{frame.x(i):.1f}" y="{HEIGHT - 12}" text-anchor="middle" class="tick">'
            f"{html.escape(str(dates[i])[:10])}</text>"
        )
    last = dt.date.fromisoformat(str(dates[-1])[:10])
    out.append(
        f'<text x="{frame.x(frame.span):.1f}" y="{HEIGHT - 12}" text-anchor="end" class="tick">'
        f"{_days_after(last, horizon)[-1].isoformat()}</text>"
    )
    return out


def _history(frame: _Frame, closes: Sequence[float]) -> list[str]:
    """The closes as a line, and a dashed line at the last one (the forecast's origin)."""
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{frame.x(i):.1f},{frame.y(c):.1f}" for i, c in enumerate(closes)
    )
    at = frame.x(len(closes) - 1)
    return [
        f'<path d="{path}" fill="none" stroke="{CLOSE}" stroke-width="1.6"/>',
        f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#9aa3b2" stroke-dasharray="3 3"/>',
    ]


def _block(row: dict, x0: float, x1: float, y) -> list[str]:
    """One output's bands (95% light, 80% darker), quantile lines and forecast line."""
    out = []
    for level, opacity, name in (("95", 0.18, "band-95"), ("80", 0.35, "band-80")):
        a, b = row.get(f"lo_{level}"), row.get(f"hi_{level}")
        if a is None or b is None:
            continue
        out.append(
            f'<rect class="{name}" x="{x0:.1f}" width="{max(x1 - x0, 2):.1f}" y="{y(b):.1f}" '
            f'height="{max(y(a) - y(b), 1):.1f}" fill="{FORECAST}" fill-opacity="{opacity}">'
            f"<title>{level}% band {a:,.2f}–{b:,.2f}</title></rect>"
        )
    for q, v in quantiles_of(row).items():
        out.append(
            f'<line class="quantile" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}" stroke="{FORECAST}" stroke-width="0.8" stroke-opacity="0.7">'
            f"<title>quantile {q:g}: {v:,.2f}</title></line>"
        )
    f = row["forecast"]
    out.append(
        f'<line class="forecast" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(f):.1f}" y2="{y(f):.1f}" '
        f'stroke="{FORECAST}" stroke-width="3"><title>forecast {f:,.2f}</title></line>'
    )
    return out


def _legend(row: dict, y) -> list[str]:
    """Labels right of the plot: forecast and each band's edges, at their heights."""
    x = WIDTH - RIGHT + 8
    items = [(row["forecast"], f"forecast {row['forecast']:,.2f}", "forecast-label")]
    for level in ("80", "95"):
        a, b = row.get(f"lo_{level}"), row.get(f"hi_{level}")
        if a is not None and b is not None:
            items.append((b, f"{level}% {b:,.2f}", f"band-label band-{level}-label"))
            items.append((a, f"{level}% {a:,.2f}", f"band-label band-{level}-label"))
    placed: list[float] = []
    out = []
    for value, text, cls in sorted(items, key=lambda t: -t[0]):
        at = y(value) + 4
        while any(abs(at - p) < 13 for p in placed):
            at += 13
        placed.append(at)
        out.append(f'<text x="{x}" y="{at:.1f}" class="tick {cls}">{html.escape(text)}</text>')
    return out
