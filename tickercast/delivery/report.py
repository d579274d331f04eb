"""A version's retrain report (markdown), written from its bundle's metadata alone, so the
export step's `report-<t>` artifact and the MLflow run of any version, even one mirrored
long after it was trained, show the same text."""

from __future__ import annotations

from pathlib import Path


def retrain_report(ticker: str, bundle: str | Path, metadata: dict) -> str:
    """Data, verdict, every forecaster's metrics, interval coverage, walk-forward."""
    from tickercast.evaluation.baseline_registry import recorded_descriptions
    from tickercast.evaluation.report import distribution_table, markdown_table

    data, training = metadata["data"], metadata.get("training") or {}
    evaluation = metadata.get("evaluation") or {}
    window = evaluation.get("window") or {}
    intervals = [
        f"| {k}% | {v['coverage_test']:.1%} |"
        if v.get("coverage_test") is not None
        else f"| {k}% | n/a (too few validation windows) |"
        for k, v in (metadata.get("intervals") or {}).items()
    ]
    lines = [
        f"# Retrain {ticker}",
        "",
        f"- bundle: `{bundle}`",
        f"- data: {data['first_day']} .. {data['last_day']} "
        f"({data['rows']} rows, sha256 `{data['sha256'][:12]}`)",
        f"- best epoch {training.get('best_epoch')} of {training.get('epochs_run')}"
        + (
            " (0: no epoch beat the champion's weights it started from; they were kept)"
            if training.get("best_epoch") == 0
            else ""
        ),
    ]
    if window:
        lines.append(
            f"- test: {window['windows']} windows, targets {window['first_target']} .. "
            f"{window['last_target']}; actual moved up in "
            f"{evaluation['up_share']:.0f}% of them"
        )
    if evaluation.get("gaps"):  # rows missing in the days: windows skipped or bridged
        lines.append(f"- gaps: {evaluation['gaps']['text']}")
    lines += [
        "",
        f"**{metadata['verdict']}**",
        "",
        *markdown_table(metadata["metrics"], recorded_descriptions(evaluation)),
        "",
        "Split-conformal intervals (calibrated on validation residuals):",
        "",
        "| nominal | test coverage |",
        "|---|---|",
        *intervals,
    ]
    if evaluation.get("distribution"):
        lines += ["", "Distribution (quantile grid, issue 21):", ""]
        lines += distribution_table(evaluation["distribution"])
    if metadata.get("walk_forward"):
        from tickercast.backtest.tables import summary_lines

        lines += ["", *summary_lines(metadata["walk_forward"])]
    return "\n".join(lines)
