"""The preprocess steps: features, chronological split, train-only scalers; and global
mode's shared calendar."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from tickercast.records import Ingested, Preprocessed
from tickercast.sections import PreprocessSettings
from tickercast.splits import SplitDates
from tickercast.tasks.steps import step
from tickercast.tasks.workfiles import outputs


@step("preprocess", ("tickercast.modeling.preprocess",))
def preprocess_step(
    ingested: Ingested,
    section: PreprocessSettings,
    split: SplitDates | None,
    data_dir: str,
    *,
    work: Path,
) -> Preprocessed:
    """Features, chronological split and train-only scalers, saved as arrays + JSON; the
    split by the section's fractions, or by global mode's shared `split` dates."""
    from tickercast.modeling.preprocess import preprocess, save_preprocessed

    who = f"ticker {ingested.ticker}"
    spec, arrays = preprocess(ingested.prices(), section, who=who, split=split)
    npz, spec_path = save_preprocessed(work, spec, arrays)
    get_run_logger().info(
        "%s: %d rows %s..%s -> train %d / val %d / test %d (train ends %s)",
        ingested.ticker,
        spec.n_rows,
        spec.first_day,
        spec.last_day,
        spec.n_train,
        spec.n_val,
        spec.n_test,
        spec.train_end,
    )
    files = outputs(npz, spec_path)
    return Preprocessed(ticker=ingested.ticker, arrays=str(npz), spec=str(spec_path), outputs=files)


@task(name="calendar")
def calendar_step(ingested: list[Ingested], section: PreprocessSettings) -> SplitDates:
    """Global mode: train/validation/test boundaries as dates shared by every ticker."""
    from tickercast.modeling.preprocess import shared_split_dates

    dates = shared_split_dates([i.prices() for i in ingested], section)
    get_run_logger().info(
        "global split over %d tickers: train to %s, validation to %s, test after",
        len(ingested),
        dates.train_end,
        dates.val_end,
    )
    return dates
