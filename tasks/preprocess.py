"""The preprocess step: features, chronological split, train-only scalers."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.workfiles import ingested_prices, outputs, work_dir

# The library code this step runs (its imports' closure is hashed: tasks/caching.py).
PREPROCESS_MODULES = ("tickercast.modeling.preprocess",)


@task(name="preprocess", cache_key_fn=content_cache_key("preprocess", PREPROCESS_MODULES))
def preprocess_step(ingested: dict, cfg: dict, data_dir: str) -> dict:
    """Features, chronological split and train-only scalers, saved as arrays + JSON."""
    from tickercast.modeling.preprocess import preprocess, save_preprocessed

    params = {"ingested": ingested, "cfg": cfg, "data_dir": data_dir}
    out = work_dir(data_dir, "preprocess", PREPROCESS_MODULES, params)
    prices = ingested_prices(ingested)
    spec, arrays = preprocess(prices, cfg, who=f"ticker {ingested['ticker']}")
    npz, spec_path = save_preprocessed(out, spec, arrays)
    get_run_logger().info(
        "%s: %d rows %s..%s -> train %d / val %d / test %d (train ends %s)",
        ingested["ticker"],
        spec.n_train + spec.n_val + spec.n_test,
        spec.first_day,
        spec.last_day,
        spec.n_train,
        spec.n_val,
        spec.n_test,
        spec.train_end,
    )
    return {
        "ticker": ingested["ticker"],
        "arrays": str(npz),
        "spec": str(spec_path),
        "outputs": outputs(npz, spec_path),
    }


@task(name="calendar")
def calendar_step(ingested: list[dict], cfg: dict) -> dict[str, str]:
    """Global mode: train/validation/test boundaries as dates shared by every ticker."""
    from tickercast.modeling.preprocess import shared_split_dates

    dates = shared_split_dates(
        [ingested_prices(i) for i in ingested],
        cfg.get("start"),
        cfg.get("end"),
        cfg["val_fraction"],
        cfg["test_fraction"],
    )
    get_run_logger().info(
        "global split over %d tickers: train to %s, validation to %s, test after",
        len(ingested),
        dates["train_end"],
        dates["val_end"],
    )
    return dates
