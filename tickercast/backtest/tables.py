"""Backtest results as text: the CLI's aligned table and the markdown reports of both
engines. Nothing here feeds a cached result, so editing a layout invalidates no backtest."""

from __future__ import annotations

from tickercast.evaluation.baseline_registry import legend
from tickercast.evaluation.formats import aligned, fmt, p_cell
from tickercast.evaluation.names import NAIVE
from tickercast.records import Backtested
from tickercast.significance import format_p

COLUMNS = (
    ("model", "model", "s"),
    ("step", "step", "s"),
    ("n", "n", "d"),
    ("rmse", "RMSE", ".4f"),
    ("mae", "MAE", ".4f"),
    ("mape", "MAPE %", ".2f"),
    ("mase", "MASE", ".3f"),
    ("directional_accuracy", "dir %", ".1f"),
    ("coverage_80", "cov 80", ".0%"),
    ("coverage_95", "cov 95", ".0%"),
    ("skill", "skill", "+.1%"),
    ("p", "DM p", ".2g"),
    ("lag", "lag", "d"),
    ("lagging", "lagging", "s"),
)


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if key == "lagging":
        return "LAGGING" if value else ""
    if key == "p":
        return "-" if value is None else p_cell(value)
    if value is None:
        return "n/a" if key not in ("coverage_80", "coverage_95") else "-"
    return fmt(value, spec) if spec != "s" else str(value)


def format_table(rows: list[dict]) -> str:
    """The metrics rows as an aligned plain-text table (what the CLI prints)."""
    cells = [[title for _, title, _ in COLUMNS]]
    cells += [[_cell(r, key, spec) for key, _, spec in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_report(results: dict[str, Backtested], folder: str | None = None) -> str:
    """The markdown report of a backtest run: each ticker's section; the run's folder."""
    lines = ["# Backtest", ""]
    if folder is not None:
        lines += [f"Files: `{folder}`", ""]
    for ticker, result in results.items():
        lines += [*markdown_lines(ticker, result), ""]
    return "\n".join(lines)


def artifact_rows(results: dict[str, Backtested]) -> list[dict]:
    """Every ticker's metrics rows for the run's table artifact, rounded."""
    return [
        {"ticker": ticker, **{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}}
        for ticker, result in results.items()
        for r in result.metrics
    ]


def markdown_lines(ticker: str, result: Backtested) -> list[str]:
    """The markdown report of one ticker: what was run, the table, the lag verdicts."""
    o = result.origins
    lines = [
        f"## {ticker}",
        "",
        f"- {o['origins']} origins {o['first_origin']} .. {o['last_origin']} (every "
        f"{o['step']} day(s)) over {o['rows']} rows {o['first_day']} .. {o['last_day']}",
        f"- target `{o['target']}`, horizon {o['horizon']}; {o['window']} training window, "
        f"first {o['initial']} rows; networks refit every {o['refit_every']} origin(s), "
        "baselines at every origin",
        f"- MASE scale: {o['mase_scale']}; lag searched over 0..{o['max_lag']} days",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in result.metrics:
        lines.append("| " + " | ".join(_cell(r, k, s) for k, _, s in COLUMNS) + " |")
    lines.append("")
    for name in result.models:
        lagging = [r for r in result.metrics if r["model"] == name and r["lagging"]]
        if lagging:
            lines.append(lagging_note(name, lagging[0]))
    described = o.get("baselines")
    if described:
        lines += ["", "Baselines:", "", *(f"- {x}" for x in legend(result.models, described))]
    return lines


def lagging_note(name: str, r: dict) -> str:
    """Why a model is flagged LAGGING: its best lag, and its Diebold-Mariano verdict
    against naive said as it is ("significantly worse" is not "not significantly better")."""
    test = "significantly worse" if r.get("dm") == "worse" else "not significantly better"
    p = f", DM p {format_p(r.get('p'))}" if r.get("p") is not None else ""
    return (
        f"- **{name} is lagging** ({r['step']}): its forecast best matches the actual series "
        f"{r['lag']} day(s) late (correlation {r['lag_corr']:.2f}) and it is {test} than naive "
        f"(at 5%{p}): it follows the price instead of anticipating it."
        + (" (By construction for naive, the reference.)" if name == NAIVE else "")
    )


def summary_lines(backtest: dict) -> list[str]:
    """The walk-forward result as text: mean ± std per forecaster over the folds (an
    aligned table), then the pooled verdict against naive as a sentence."""
    s = backtest["summary"]["metrics"]

    def pm(name, metric, spec):
        v = s[name].get(metric, {})
        if v.get("mean") is None:
            return "n/a"
        return f"{fmt(v['mean'], spec)} ± {fmt(v['std'], spec.lstrip('+'))}"

    tests = backtest["summary"].get("significance", {})
    rows = []
    for name in s:
        test = tests.get(name)
        rows.append(
            [
                name,
                pm(name, "rmse", ".4f"),
                pm(name, "mae", ".4f"),
                pm(name, "mape", ".2f"),
                pm(name, "mase", ".3f"),
                pm(name, "directional_accuracy", ".1f"),
                pm(name, "skill", "+.1%"),
                "—" if test is None else _p_cell(test),
            ]
        )
    headers = ["forecaster", "RMSE", "MAE", "MAPE %", "MASE", "direction %", "skill vs naive"]
    lines = [
        f"Walk-forward: {backtest['n_folds']} expanding folds, "
        f"{backtest['epochs_per_fold']} epochs max per fold (mean ± std over folds).",
        aligned([*headers, "DM p, model vs it (pooled)"], rows),
    ]
    naive = tests.get(NAIVE)
    if naive is not None:
        lines.append(f"Over all folds the model {pooled_sentence(naive)}.")
    return lines


def pooled_sentence(test: dict) -> str:
    """'is indistinguishable from naive (DM p = 0.27)': the pooled test as a predicate."""
    state = {
        "better": "beats naive",
        "worse": "is worse than naive",
        "indistinguishable": "is indistinguishable from naive",
    }.get(test.get("verdict"), "was not tested against naive")
    return f"{state} (DM p {format_p(test.get('p_value'))})"


def _p_cell(test: dict) -> str:
    p = test.get("p_value")
    return "n/a" if p is None else f"{p_cell(p)} ({test['verdict']})"
