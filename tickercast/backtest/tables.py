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


DISTRIBUTION_COLUMNS = (
    ("median", "median", "s"),
    ("band", "band", "s"),
    ("crps", "CRPS", ".4f"),
    ("interval_80", "IS 80", ".4f"),
    ("interval_95", "IS 95", ".4f"),
    ("pinball", "pinball", ".4f"),
    ("coverage_80", "cov 80", ".1%"),
    ("coverage_95", "cov 95", ".1%"),
    ("p", "DM p", ".2g"),
    ("verdict", "band vs it", "s"),
)


def _dcell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    if key == "p":
        return "-" if value is None else p_cell(value)
    if key == "verdict":
        return value or "-"
    return fmt(value, spec) if spec != "s" else str(value)


def format_distribution(rows: list[dict]) -> str:
    """The distribution rows (around each median, its own `band` and every distribution
    baseline) as an aligned plain-text table; DM p: the median's band against the row's."""
    if not rows:
        return ""
    cols = DISTRIBUTION_COLUMNS
    cells = [[title for _, title, _ in cols]]
    cells += [[_dcell(r, key, spec) for key, _, spec in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(cols))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def distribution_lines(distribution: dict) -> list[str]:
    """Markdown: the distribution table beside the point table, and its verdicts."""
    rows = distribution.get("rows") or []
    if not rows:
        return []
    cols = DISTRIBUTION_COLUMNS
    lines = [
        "",
        "Distribution (quantile grid; around each median its own band and every "
        "distribution baseline, same calibration; DM on per-origin CRPS):",
        "",
        "| " + " | ".join(title for _, title, _ in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(_dcell(r, k, s) for k, _, s in cols) + " |" for r in rows]
    for median, judged in (distribution.get("medians") or {}).items():
        if judged.get("verdicts"):
            lines.append(f"- around {median}'s median, its band: " + "; ".join(judged["verdicts"]))
    return lines


def pooled_distribution_lines(results: dict[str, Backtested]) -> list[str]:
    """Markdown: per median, its band against each baseline pooled across tickers (the
    per-origin scores relative to the last close, mean difference per date, DM)."""
    import pandas as pd

    from tickercast.backtest.bands import MODEL_BAND
    from tickercast.evaluation.distribution import pooled

    frames = {
        t: pd.read_parquet(r.distribution_parquet)
        for t, r in results.items()
        if r.distribution_parquet
    }
    frames = {t: f for t, f in frames.items() if not f.empty}
    if len(frames) < 2:
        return []
    first = next(iter(results.values())).origins
    overlap = max(1, -(-int(first["horizon"]) // int(first["step"])))
    lines = ["## Distribution pooled across tickers", ""]
    medians = sorted(set.intersection(*(set(f["median"]) for f in frames.values())))
    for median in medians:
        by = {t: f[f["median"] == median] for t, f in frames.items()}
        columns = next(iter(by.values())).columns
        others = [c[: -len("_crps")] for c in columns if c.endswith("_crps")]
        others = [n for n in others if n != MODEL_BAND]
        tests = pooled(by, MODEL_BAND, others, overlap)
        verdicts = "; ".join(v["verdict_text"] for v in tests.values())
        lines.append(f"- around {median}'s median ({len(frames)} tickers), its band: {verdicts}")
    return lines


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
    lines += pooled_distribution_lines(results)
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
    return lines + distribution_lines(result.distribution)


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
    return lines + walk_forward_distribution_lines(backtest["summary"].get("distribution"))


def walk_forward_distribution_lines(pooled: dict | None) -> list[str]:
    """An aligned table: the model's band against each distribution baseline over all folds
    (mean CRPS, DM p on per-origin CRPS differences, the verdict in words)."""
    if not pooled:
        return []
    rows = [
        [name, fmt(v.get("crps_model"), ".4f"), fmt(v.get("crps"), ".4f"),
         f"{p_cell(v.get('p'))} ({v.get('verdict')})"]
        for name, v in pooled.items()
    ]  # fmt: skip
    headers = ["distribution baseline", "CRPS model", "CRPS it", "DM p, model vs it (pooled)"]
    return [
        aligned(headers, rows),
        "Model's band over all folds: "
        + "; ".join(v["verdict_text"] for v in pooled.values())
        + ".",
    ]


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
