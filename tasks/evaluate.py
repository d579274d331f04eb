"""The evaluate step: the model and every baseline on the test windows."""

from __future__ import annotations

from pathlib import Path

from prefect.logging import get_run_logger

from tickercast.records import (
    Evaluated,
    ForecastFile,
    GlobalTrained,
    Preprocessed,
    Trained,
)
from tickercast.sections import Evaluation
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs


@step(
    "evaluate",
    (
        "tickercast.evaluation.evaluate",
        "tickercast.evaluation.report",
        "tickercast.modeling.quantiles",
    ),
)
def evaluate_step(
    pre: Preprocessed,
    trained: Trained | GlobalTrained,
    evaluation: Evaluation,
    data_dir: str,
    *,
    work: Path,
) -> Evaluated:
    """Price-unit metrics of the model and every baseline on the test windows, conformal
    intervals from the validation windows, and the plots. `trained` is the ticker's own
    model, or the global model whose file for this ticker is used; `evaluation.band`
    the band it ships without a quantile head. A fit that kept the champion has no
    candidate (the champion was evaluated when it was made): tasks/promote.keep_step."""
    model = trained.for_ticker(pre.ticker)
    kept = model.kept()
    if kept is not None:
        raise ValueError(f"{pre.ticker}: nothing to evaluate: {kept.reason}")
    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import evaluation_summary, write_evaluation
    from tickercast.modeling.models import split_heads
    from tickercast.modeling.quantiles import predict_quantile_prices
    from tickercast.modeling.windows import gap_report

    spec, arrays = pre.load()
    point, head = split_heads(model.load_model())  # a quantile head: its median and grid
    grid = None
    if head is not None:

        def grid(a):
            return predict_quantile_prices(head, spec, arrays["x"], a, arrays["close"])

    ev = evaluate(point, spec, arrays, pre.windows(), predict_quantiles=grid, band=evaluation.band)
    paths = write_evaluation(work, ev, model.history_data()["history"], pre.ticker)
    summary = evaluation_summary(ev)
    gaps = gap_report(spec)  # on record in metadata.json (the preprocess step logged it)
    if gaps is not None:
        summary["evaluation"]["gaps"] = gaps
    coverage = ", ".join(
        f"{k}% -> {v['coverage_test']:.0%}"
        for k, v in summary["intervals"].items()
        if v.get("coverage_test") is not None
    )
    get_run_logger().info(
        "%s test RMSE model %.4f, naive %.4f; interval coverage %s. %s",
        pre.ticker,
        summary["metrics"]["model"]["rmse"],
        summary["metrics"]["naive"]["rmse"],
        coverage or "n/a",
        summary["verdict"],
    )
    files = {name: str(path) for name, path in paths.items() if name != "predictions"}
    return Evaluated(
        ticker=pre.ticker,
        **summary,
        predictions=ForecastFile.of(paths["predictions"]),
        **files,
        outputs=outputs(*paths.values()),
    )
