"""The train steps: one network per ticker (alone, or a batch of tickers' fits from their
champions), or one global network."""

from __future__ import annotations

from pathlib import Path

from prefect.logging import get_run_logger

from tickercast.delivery.warmstart import WarmSource
from tickercast.fanout import each_ticker
from tickercast.layout import FITTED_WEIGHTS_FILE, HISTORY_FILE, MODEL_FILE
from tickercast.records import GlobalTrained, Preprocessed, Trained
from tickercast.sections import FitSpec, Scope, WarmStart
from tickercast.tasks.runners import training_lock
from tickercast.tasks.steps import batch_of, step
from tickercast.tasks.workfiles import outputs

MODULES = ("tickercast.modeling.train", "tickercast.delivery.warmstart")


@step("train", MODULES)
def train_step(
    pre: Preprocessed,
    spec: FitSpec,
    data_dir: str,
    warm: WarmStart | None = None,
    champion: WarmSource | None = None,
    *,
    work: Path,
) -> Trained:
    """Fit the network on training windows, early-stopped on validation windows; with
    `warm` on, from the `champion`'s fitted weights when the plan allows (its hash is in
    this step's key: a new champion is a new fit)."""
    from tickercast.delivery.warmstart import read_champion
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model
    from tickercast.modeling.warm import load_weights, plan

    preprocessing, arrays = pre.load()
    known = read_champion(champion) if champion is not None else None
    chosen = plan(warm or WarmStart(), known, spec, preprocessing)
    start = None
    if chosen.mode == "warm" and known is not None and known.weights is not None:
        start = load_weights(known.weights, known.weights_sha256)
    logger = get_run_logger()
    logger.info("%s: %s start: %s", pre.ticker, chosen.mode, chosen.reason)
    with training_lock():
        summary = train_model(
            arrays,
            pre.windows(),
            preprocessing.lookback,
            spec,
            work,
            logger,
            label=pre.ticker,
            naive=naive_output(preprocessing),
            plan=chosen,
            start_weights=start,
        )
    history_path = work / HISTORY_FILE
    fields = dict(
        ticker=pre.ticker,
        history=str(history_path),
        best_epoch=summary["best_epoch"],
        epochs_run=summary["epochs_run"],
    )
    kept = summary.get("kept_champion")
    if kept is not None:  # no epoch beat the champion's weights: nothing new to ship
        logger.info("%s: kept champion v%d's weights: no new version tonight", pre.ticker, kept)
        return Trained(**fields, model=None, kept_champion=kept, outputs=outputs(history_path))
    model_path, fitted = work / MODEL_FILE, work / FITTED_WEIGHTS_FILE
    return Trained(
        **fields,
        model=str(model_path),
        shrinkage=summary["shrinkage"],
        fitted_weights=str(fitted),
        outputs=outputs(model_path, history_path, fitted),
    )


@step("train-batch", MODULES)
def train_batch_step(
    pres: list[Preprocessed],
    spec: FitSpec,
    data_dir: str,
    warm: WarmStart | None,
    champions: list[WarmSource | None],
) -> dict:
    """Each ticker's train step (its own code, work folder and record; each ticker's
    failure its own) for a batch of tickers that start from a champion or an earlier
    version. On a second night most of them score the champion on tonight's validation
    windows and keep it without an epoch (~0.1 s), and a Prefect task run costs a worker
    ~0.07 s beside its work: one task run per ticker left both workers in that overhead at
    once between tasks, the gaps that grew a second night's orchestration with the
    universe. Returns `fanout.batch_result` of `Trained` records (`fanout.Share` hands
    each ticker its own), with every record's files under "outputs" so a cached batch
    whose files changed runs again."""
    work = {p.ticker: (p, c) for p, c in zip(pres, champions, strict=True)}

    def train(ticker: str) -> Trained:
        pre, champion = work[ticker]
        return train_step.fn(pre, spec, data_dir, warm, champion)

    return batch_of(each_ticker(list(work), train), lambda record: [record], "not trained")


@step("train-global", ("tickercast.modeling.train",))
def train_global_step(
    pres: list[Preprocessed],
    spec: FitSpec,
    scope: Scope,
    data_dir: str,
    *,
    work: Path,
) -> GlobalTrained:
    """One network over every ticker's windows (mode=global); per ticker, the model file
    its evaluation and bundle use."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import GlobalData, train_global

    specs = [p.preprocessing for p in pres]

    def load(i: int):
        _, arrays = pres[i].load()
        return arrays["x"], arrays["y"], pres[i].windows()

    source = GlobalData(
        [p.ticker for p in pres], [s.n_rows for s in specs], load, [naive_output(s) for s in specs]
    )
    with training_lock():
        summary = train_global(
            source, specs[0].lookback, spec, scope.ticker_embedding, work, get_run_logger()
        )
    history = work / HISTORY_FILE
    models = {
        ticker: Trained(
            ticker=ticker,
            model=path,
            history=str(history),
            best_epoch=summary["best_epoch"],
            epochs_run=summary["epochs_run"],
            shrinkage=summary["shrinkage"][ticker],
            outputs=outputs(Path(path), history),
        )
        for ticker, path in summary["models"].items()
    }
    files = sorted({*(m.model for m in models.values()), str(history)})
    return GlobalTrained(models=models, outputs=outputs(*map(Path, files)))
