"""The evaluate step: the model and every baseline on the test windows."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.workfiles import load_anchors, outputs, work_dir

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
EVALUATE_MODULES = ("tickercast.evaluation.evaluate", "tickercast.evaluation.report")


@task(name="evaluate", cache_key_fn=content_cache_key("evaluate", EVALUATE_MODULES))
def evaluate_step(pre: dict, win: dict, trained: dict, data_dir: str) -> dict:
    """Price-unit metrics of the model and every baseline on the test windows, conformal
    intervals from the validation windows, and the plots."""
    import keras

    from tickercast.evaluation.evaluate import evaluate
    from tickercast.evaluation.report import evaluation_summary, write_evaluation
    from tickercast.modeling.preprocess import load_preprocessed
    from tickercast.modeling.train import load_history

    params = {"pre": pre, "win": win, "trained": trained, "data_dir": data_dir}
    out = work_dir(data_dir, "evaluate", EVALUATE_MODULES, params)
    spec, arrays = load_preprocessed(pre["arrays"], pre["spec"])
    model = keras.models.load_model(trained["model"], safe_mode=True, compile=False)
    ev = evaluate(model, spec, arrays, load_anchors(win))
    ticker = pre["ticker"]
    paths = write_evaluation(out, ev, load_history(trained["history"])["history"], ticker)
    summary = evaluation_summary(ev)
    coverage = ", ".join(
        f"{k}% -> {v['coverage_test']:.0%}"
        for k, v in summary["intervals"].items()
        if v.get("coverage_test") is not None
    )
    get_run_logger().info(
        "%s test RMSE model %.4f, naive %.4f; interval coverage %s. %s",
        ticker,
        summary["metrics"]["model"]["rmse"],
        summary["metrics"]["naive"]["rmse"],
        coverage or "n/a",
        summary["verdict"],
    )
    return {
        "ticker": ticker,
        **summary,
        **{name: str(path) for name, path in paths.items()},
        "outputs": outputs(*paths.values()),
    }
