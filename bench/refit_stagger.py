"""Full refits across a universe's nights, staggered by ticker or not (issue 22).

A simulation of the warm-start planner's refit rule alone (tickercast.modeling.warm:
`data_age_days` against `refit_after_days`), no fit: 500 tickers first fitted on one night,
then one new business day a night for a year; a ticker refits from scratch when the data
its last full refit saw ended more than its due age before tonight's last day (30 days,
the default full_refit_days; staggered: less up to a third of the cycle's business days,
drawn from the ticker's name and its last full refit's day), and
otherwise keeps or fine-tunes its champion. Counted per night: how many tickers refit from
scratch. The worst night is what the nightly window must hold: unstaggered, the whole
universe refits on one night a month, a first night's cost.

Run: python bench/refit_stagger.py [--tickers 500] [--nights 250] [--no-record]
(writes the RESULTS.md row `refit_stagger`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def refits_per_night(
    tickers: list[str], days: list[str], due: Callable[[str, str], int]
) -> list[int]:
    """Per night after the first (all fitted from scratch on days[0]), how many tickers
    refit from scratch, each when its last full refit's data (up to day `since`) is more
    than due(ticker, since) days old."""
    from tickercast.modeling.warm import data_age_days

    last_full = dict.fromkeys(tickers, days[0])
    counts = []
    for today in days[1:]:
        refit = [t for t in tickers if data_age_days(last_full[t], today) > due(t, last_full[t])]
        for t in refit:
            last_full[t] = today
        counts.append(len(refit))
    return counts


def main(argv: list[str] | None = None) -> dict:
    from bench.results import publish
    from tickercast.modeling.warm import refit_after_days

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--nights", type=int, default=250)
    parser.add_argument("--full-refit-days", type=int, default=30)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    tickers = [f"U{i:03d}" for i in range(1, args.tickers + 1)]
    days = [d.date().isoformat() for d in pd.bdate_range("2026-01-02", periods=args.nights + 1)]
    f = args.full_refit_days
    arms = {
        "unstaggered": refits_per_night(tickers, days, lambda t, since: f),
        "staggered": refits_per_night(tickers, days, lambda t, s: refit_after_days(f, t, s)),
    }
    # the steady state: the nights after the first third (about four 30-day cycles), once
    # the staggered tickers' cycles have drawn apart
    steady = len(days) // 3
    out = {
        name: {
            "worst": max(c),
            "worst_steady": max(c[steady:]),
            "mean": float(np.mean(c)),
            "nights_over_10pct": sum(1 for n in c if n > args.tickers / 10),
        }
        for name, c in arms.items()
    }
    u, s = out["unstaggered"], out["staggered"]
    row = (
        f"| full refits from scratch per night, {args.tickers} tickers first fitted on one "
        f"night, one new business day a night for {args.nights} nights, full_refit_days {f} "
        "(the planner's rule alone: tickercast.modeling.warm, no fit) | unstaggered: worst "
        f"night {u['worst']} tickers ({u['nights_over_10pct']} nights over 10% of the "
        f"universe), mean {u['mean']:.1f} a night | staggered by ticker (up to a third of "
        f"the cycle's business days, drawn again each cycle): worst night {s['worst']} "
        f"(after the first third of the nights {s['worst_steady']}; "
        f"{s['nights_over_10pct']} nights over 10%), mean "
        f"{s['mean']:.1f} a night | worst night {s['worst'] / u['worst']:.2f}x, mean "
        f"{s['mean'] / u['mean']:.2f}x |"
    )
    publish("refit_stagger", row, keep=not args.no_record)
    return out


if __name__ == "__main__":
    main()
