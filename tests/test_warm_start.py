"""Warm start (issue 22): the second night fine-tunes the champion's fitted weights."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from tickercast.config import RetrainConfig
from tickercast.modeling.warm import Champion, plan

TICKER = "W001"


def config(**changes) -> RetrainConfig:
    fields = dict(
        tickers=[TICKER],
        lookback=20,
        units=[8, 4],
        epochs=6,
        batch_size=64,
        warm_start="auto",
        warm_start_epochs=2,
        full_refit_days=30,
    )
    return RetrainConfig(**{**fields, **changes})


def prepared(days: int, cfg: RetrainConfig):
    """(spec, arrays, anchors) of a synthetic ticker's first `days` business days."""
    import pandas as pd

    from tests.synthetic import yahoo_history
    from tickercast.modeling.preprocess import preprocess
    from tickercast.modeling.windows import anchors_for

    frame = yahoo_history(TICKER, days, quirks=False)
    prices = pd.DataFrame(
        {
            "date": pd.to_datetime(frame["Date"]).dt.date,
            "open": frame["Open"],
            "high": frame["High"],
            "low": frame["Low"],
            "close": frame["Close"],
            "adj_close": frame["Adj Close"],
            "volume": frame["Volume"].astype("int64"),
        }
    )
    spec, arrays = preprocess(prices, cfg.preprocessing, who=TICKER)
    return spec, arrays, anchors_for(spec)


def champion_of(cfg: RetrainConfig, data_spec, **changes) -> Champion:
    """A champion trained with `cfg` on `spec`'s data (`changes`: its fields replaced)."""
    fields = dict(
        version=1,
        config=cfg.recorded(),
        last_day=data_spec.last_day,
        spec=data_spec.to_json(),
        weights=Path("fitted-weights.npz"),
        weights_sha256="0" * 64,
    )
    return Champion(**{**fields, **changes})


@pytest.fixture(scope="module")
def night1_spec():
    cfg = config()
    return cfg, prepared(400, cfg)[0]


def test_compatible_champion_is_warm_started(night1_spec):
    cfg, spec = night1_spec
    chosen = plan(cfg.warm, champion_of(cfg, spec), cfg.fit_spec(), spec)
    assert (chosen.mode, chosen.source_version, chosen.epochs) == ("warm", 1, 2)
    assert chosen.full_refit_last_day == spec.last_day  # the champion's own full refit
    assert chosen.patience == 2  # warm_start_patience, within the config's patience
    tight = plan(
        config(patience=1).warm, champion_of(cfg, spec), config(patience=1).fit_spec(), spec
    )
    assert tight.patience == 1


def test_changed_architecture_refits_from_scratch(night1_spec):
    cfg, spec = night1_spec
    old = champion_of(cfg, spec, config={**cfg.recorded(), "units": [16, 8]})
    chosen = plan(cfg.warm, old, cfg.fit_spec(), spec)
    assert chosen.mode == "full"
    assert "units was [16, 8], now [8, 4]" in chosen.reason and "v1" in chosen.reason
    # inputs changed: the champion's preprocessing.json says so whatever its config says
    other = champion_of(cfg, spec, spec={**spec.to_json(), "features": ["log_return"]})
    assert "features" in plan(cfg.warm, other, cfg.fit_spec(), spec).reason


def test_no_champion_no_weights_or_off_refit(night1_spec):
    cfg, spec = night1_spec
    assert (
        plan(cfg.warm, None, cfg.fit_spec(), spec).reason
        == "no champion or earlier version to start from"
    )
    bare = champion_of(cfg, spec, weights=None, weights_sha256=None)
    assert "no fitted weights" in plan(cfg.warm, bare, cfg.fit_spec(), spec).reason
    off = config(warm_start="off")
    assert plan(off.warm, champion_of(cfg, spec), off.fit_spec(), spec).mode == "full"


def test_full_refit_after_full_refit_days(night1_spec):
    cfg, spec = night1_spec
    last = dt.date.fromisoformat(spec.last_day)
    for age, mode in ((30, "warm"), (31, "full")):
        since = (last - dt.timedelta(days=age)).isoformat()
        # warm-started champions carry the day of the full refit behind their weights
        old = champion_of(cfg, spec, warm_start={"mode": "warm", "full_refit_last_day": since})
        chosen = plan(cfg.warm, old, cfg.fit_spec(), spec)
        assert chosen.mode == mode, chosen.reason
        if mode == "full":
            assert f"{age} calendar days" in chosen.reason and "full_refit_days 30" in chosen.reason
            assert chosen.full_refit_last_day == spec.last_day
        else:
            assert chosen.full_refit_last_day == since


def test_full_refits_are_staggered_by_ticker_over_a_third_of_the_cycle(night1_spec):
    """Each ticker refits from scratch after full_refit_days less its stagger (up to a
    third of the cycle's business days, drawn from its name and its last full refit's
    day): a universe fitted on one night spreads its next full refits over the cycle's
    last third, one weekday night per stagger, and the next cycle draws again."""
    from tickercast.modeling.warm import refit_after_days

    universe = [f"U{i:03d}" for i in range(500)]
    due = [refit_after_days(30, t, "2026-01-02") for t in universe]  # a Friday
    assert 30 - 30 // 3 - 3 <= min(due) and max(due) <= 30
    # counted in business days: every deadline is a weekday of its own, 8 of them (a third
    # of the cycle's 21 business days, and 0), none holding more than a fifth of the tickers
    deadlines = {dt.date(2026, 1, 2) + dt.timedelta(days=d) for d in due}
    assert len(deadlines) == 8 and all(d.weekday() < 5 for d in deadlines)
    assert max(due.count(d) for d in set(due)) < len(universe) / 5
    assert due == [refit_after_days(30, t, "2026-01-02") for t in universe]  # reproducible
    again = [refit_after_days(30, t, "2026-02-03") for t in universe]
    assert sum(a != b for a, b in zip(due, again, strict=True)) > len(universe) / 2
    assert refit_after_days(0, "AAPL", "2026-01-02") == 0
    assert refit_after_days(30, "", "2026-01-02") == 30  # no ticker, no stagger
    cfg, spec = night1_spec
    since = (dt.date.fromisoformat(spec.last_day) - dt.timedelta(days=25)).isoformat()
    staggers = {t: 30 - refit_after_days(30, t, since) for t in universe[:40]}
    for ticker, stagger in staggers.items():  # 25 days old: due past 30 - stagger
        old = champion_of(cfg, spec, ticker=ticker, warm_start={"full_refit_last_day": since})
        chosen = plan(cfg.warm, old, cfg.fit_spec(), spec)
        assert chosen.mode == ("full" if stagger > 5 else "warm"), chosen.reason
        if stagger > 5:
            assert f"full_refit_days 30, less this ticker's stagger of {stagger})" in (
                chosen.reason
            )
    assert {s > 5 for s in staggers.values()} == {True, False}  # both cases were seen


def test_drift_tolerance_sets_the_loss_at_which_the_champion_still_fits(night1_spec):
    cfg, spec = night1_spec
    champion = champion_of(cfg, spec, val_loss=0.02)
    assert plan(cfg.warm, champion, cfg.fit_spec(), spec).keep_at is None  # drift off
    drifting = config(warm_start_drift=0.05)
    chosen = plan(drifting.warm, champion, drifting.fit_spec(), spec)
    assert chosen.mode == "warm" and chosen.keep_at == pytest.approx(0.021)
    assert "at most 0.021 (their 0.02 when made, warm_start_drift 0.05)" in chosen.reason
    # a champion exported without its validation loss is fine-tuned as before
    unknown = champion_of(cfg, spec, val_loss=None)
    assert plan(drifting.warm, unknown, drifting.fit_spec(), spec).keep_at is None


def test_without_a_champion_the_latest_version_is_fine_tuned_and_gated_again(night1_spec):
    """A ticker whose versions the gate never promoted starts from its latest version:
    warm, with the monthly full refit, but never kept as it is (no drift bound: whatever
    the fine-tune ends with is gated as a new version)."""
    cfg, spec = night1_spec
    rejected = champion_of(cfg, spec, version=3, val_loss=0.02, is_champion=False)
    drifting = config(warm_start_drift=10.0)
    chosen = plan(drifting.warm, rejected, drifting.fit_spec(), spec)
    assert (chosen.mode, chosen.source_version, chosen.epochs) == ("warm", 3, 2)
    assert chosen.keep_at is None and not chosen.keeps_source
    assert "v3 (the latest version; the gate promoted none)" in chosen.reason
    assert "gated as a new version" in chosen.reason
    same = plan(drifting.warm, champion_of(cfg, spec, val_loss=0.02), drifting.fit_spec(), spec)
    assert same.keeps_source and same.keep_at == pytest.approx(0.22)  # a champion may stay
    last = dt.date.fromisoformat(spec.last_day)
    stale = dataclasses.replace(
        rejected, warm_start={"full_refit_last_day": (last - dt.timedelta(days=31)).isoformat()}
    )
    old = plan(cfg.warm, stale, cfg.fit_spec(), spec)
    assert old.mode == "full" and old.reason.startswith("v3 (the latest version;")


def test_find_source_names_the_champion_or_else_the_latest_version(tmp_path):
    """The warm start's source: the champion while there is one; without one, the latest
    version, marked as no champion; nothing for a ticker without versions."""
    from tests.tiny_models import TICKER as STORED
    from tests.tiny_models import copy_store
    from tickercast.delivery.registry import promote, read_registry
    from tickercast.delivery.warmstart import find_source, read_champion

    data = copy_store(tmp_path)
    assert read_registry(data, STORED)["champion"] is None
    latest = find_source(data, STORED)
    assert (latest.version, latest.champion) == (3, False)
    assert not read_champion(latest).is_champion
    promote(data, STORED, 1, reason="test")
    champion = find_source(data, STORED)
    assert (champion.version, champion.champion) == (1, True)
    assert read_champion(champion).is_champion
    assert find_source(data, "NOPE") is None


def night_one(cfg: RetrainConfig, folder: Path):
    """(spec, summary, fitted weights) of a full fit on the first 400 days."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model
    from tickercast.modeling.warm import load_weights

    spec, arrays, anchors = prepared(400, cfg)
    first = plan(cfg.warm, None, cfg.fit_spec(), spec)
    summary = train_model(
        arrays, anchors, 20, cfg.fit_spec(), folder, naive=naive_output(spec), plan=first
    )
    return spec, summary, load_weights(folder / "fitted-weights.npz")


def night_two(cfg: RetrainConfig, champion: Champion, folder: Path, fitted, callbacks=()):
    """(plan, summary) of tonight's fit with `cfg`, one new day, from `champion`'s
    `fitted` weights."""
    from tickercast.modeling.shrink import naive_output
    from tickercast.modeling.train import train_model

    spec, arrays, anchors = prepared(401, cfg)
    chosen = plan(cfg.warm, champion, cfg.fit_spec(), spec)
    summary = train_model(
        arrays,
        anchors,
        20,
        cfg.fit_spec(),
        folder,
        callbacks=callbacks,
        naive=naive_output(spec),
        plan=chosen,
        start_weights=fitted,
    )
    return chosen, summary


def test_warm_fit_starts_from_the_champions_weights(tmp_path):
    """Night 2 starts exactly from night 1's fitted (pre-shrink) weights and runs at most
    warm_start_epochs; history.json records how it started; the saved fitted weights are
    the exported model's before its shrinkage."""
    import keras

    cfg = config()
    spec1, night1, fitted = night_one(cfg, tmp_path / "n1")
    assert night1["warm_start"]["mode"] == "full" and night1["epochs_run"] == 6
    exported = keras.models.load_model(tmp_path / "n1/model.keras", compile=False).get_weights()
    alpha = night1["shrinkage"]["alpha"]
    for kept, fit_ in zip(exported[:-2], fitted[:-2], strict=True):
        assert np.array_equal(kept, fit_)  # the trunk is untouched by the shrinkage
    np.testing.assert_allclose(exported[-2], alpha * fitted[-2], rtol=1e-5, atol=1e-7)

    champion = champion_of(cfg, spec1, weights=tmp_path / "n1/fitted-weights.npz")
    seen: list = []

    class FirstWeights(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not seen:
                seen.append(self.model.get_weights())

    second, night2 = night_two(cfg, champion, tmp_path / "n2", fitted, [FirstWeights()])
    assert second.mode == "warm"
    assert all(np.array_equal(a, b) for a, b in zip(seen[0], fitted, strict=True))
    assert night2["epochs_run"] <= 2 < night1["epochs_run"]
    recorded = json.loads((tmp_path / "n2/history.json").read_text())["warm_start"]
    assert recorded == dataclasses.asdict(second) and recorded["source_version"] == 1


def test_a_fine_tune_that_only_gets_worse_keeps_the_champions_weights(tmp_path):
    """The starting weights compete with the fine-tune's epochs on tonight's validation
    windows: when every epoch is worse (here a learning rate that wrecks the network), the
    fit stops after warm_start_patience epochs and keeps the champion: only its history
    is written, naming the champion kept."""
    cfg = config()
    spec1, _, fitted = night_one(cfg, tmp_path / "n1")
    wild = config(learning_rate=0.9, warm_start_epochs=4, warm_start_patience=2)
    champion = champion_of(cfg, spec1, weights=tmp_path / "n1/fitted-weights.npz")
    _, night2 = night_two(wild, champion, tmp_path / "n2", fitted)
    val = night2["history"]["val_loss"]
    assert night2["start_val_loss"] < min(val)  # every epoch worse than the start
    assert night2["epochs_run"] == 2 < 4  # stopped by the warm patience, not the cap
    assert night2["best_epoch"] == 0 and night2["best_val_loss"] == night2["start_val_loss"]
    assert night2["kept_champion"] == 1  # the champion stays: nothing new is written
    assert sorted(p.name for p in (tmp_path / "n2").iterdir()) == ["history.json"]
    recorded = json.loads((tmp_path / "n2/history.json").read_text())
    assert recorded["kept_champion"] == 1 and recorded["best_epoch"] == 0


def test_a_version_the_gate_never_promoted_is_shipped_even_when_no_epoch_beats_it(tmp_path):
    """The same wrecking fine-tune from weights that are not a champion's: they still win
    over every epoch, but are shrunk, calibrated and saved as a new model (gated again),
    not kept."""
    cfg = config()
    spec1, _, fitted = night_one(cfg, tmp_path / "n1")
    wild = config(learning_rate=0.9, warm_start_epochs=4, warm_start_patience=2)
    rejected = champion_of(
        cfg, spec1, weights=tmp_path / "n1/fitted-weights.npz", is_champion=False
    )
    chosen, night2 = night_two(wild, rejected, tmp_path / "n2", fitted)
    assert chosen.mode == "warm" and night2["best_epoch"] == 0
    assert "kept_champion" not in night2 and "shrinkage" in night2
    written = {p.name for p in (tmp_path / "n2").iterdir()}
    assert {"model.keras", "fitted-weights.npz", "history.json"} <= written
    from tickercast.modeling.warm import load_weights

    again = load_weights(tmp_path / "n2/fitted-weights.npz")
    assert all(np.array_equal(a, b) for a, b in zip(again, fitted, strict=True))


def test_a_champion_that_still_fits_is_kept_without_an_epoch(tmp_path):
    """With warm_start_drift, the champion's weights are scored on tonight's validation
    windows first: within (1 + drift) x their loss when made, no epoch runs and only the
    history is written (the champion kept); a champion whose loss tonight is above that
    bound is fine-tuned as before."""
    cfg = config()
    spec1, night1, fitted = night_one(cfg, tmp_path / "n1")
    made = night1["best_val_loss"]
    weights = tmp_path / "n1/fitted-weights.npz"
    generous = config(warm_start_drift=10.0)  # 11x its loss when made: surely still fits
    champion = champion_of(cfg, spec1, weights=weights, val_loss=made)
    chosen, night2 = night_two(generous, champion, tmp_path / "n2", fitted)
    assert chosen.keep_at == pytest.approx(11 * made)
    assert night2["epochs_run"] == 0 and night2["history"] == {}
    assert night2["start_val_loss"] <= chosen.keep_at and night2["kept_champion"] == 1
    assert sorted(p.name for p in (tmp_path / "n2").iterdir()) == ["history.json"]
    # a champion recorded as far better than it scores tonight has drifted: fine-tuned
    drifted = champion_of(cfg, spec1, weights=weights, val_loss=made / 1000)
    chosen, night2 = night_two(config(warm_start_drift=0.05), drifted, tmp_path / "n3", fitted)
    assert night2["start_val_loss"] > chosen.keep_at
    assert 1 <= night2["epochs_run"] <= 2


@pytest.mark.slow
def test_five_nights_of_the_retrain_flow(prefect_server, tmp_path):
    """Night 1 fits from scratch, night 2 (one new day) fine-tunes the champion into a new
    version, night 3 (one more day) fine-tunes at a learning rate that only makes the
    network worse, so the champion is kept and no version is made, night 4 (one more day,
    warm_start_drift on) finds the champion still fits and runs no epoch, night 5 (past
    full_refit_days) refits from scratch; each version's metadata says how it started.
    A night that keeps the champion runs one keep task where a new network runs evaluate,
    export and promote."""
    from tests.synthetic import write_yahoo_universe
    from tests.test_flow import task_states
    from tickercast.delivery.bundle import list_versions
    from tickercast.delivery.registry import promote, read_registry
    from tickercast.flows.retrain import retrain

    csv, data = tmp_path / "csv", tmp_path / "data"
    where = dict(source="csv", csv_dir=str(csv), data_dir=str(data), full_refit_days=5)
    cfg = config(**where, epochs=3, warm_start_epochs=1)
    wild = config(**where, epochs=3, warm_start_epochs=1, learning_rate=0.9)
    steady = config(**where, epochs=3, warm_start_epochs=1, warm_start_drift=10.0)
    nights = ((1, 500, cfg), (2, 501, cfg), (3, 502, wild), (4, 503, steady), (5, 510, cfg))
    records, results = [], []
    for night, days, settings in nights:
        write_yahoo_universe(csv, [TICKER], days=days, quirks=False)
        registry = read_registry(data, TICKER)
        state = retrain(settings, return_state=True)
        assert state.is_completed(), state.message
        tasks = set(task_states(state))
        finish = {"keep"} if night in (3, 4) else {"evaluate", "export", "promote"}
        fit = "train" if night == 1 else "train-batch"  # from a champion: batched fits
        assert tasks == {"prepare", fit, *finish}, night
        result = state.result()[TICKER]
        results.append(result)
        bundle = Path(result["bundle"])
        if night in (3, 4):
            assert read_registry(data, TICKER) == registry  # untouched
            continue
        assert bundle.name == str(len(records) + 1)
        assert "fitted-weights.npz" in json.loads((bundle / "manifest.json").read_text())["files"]
        records.append(json.loads((bundle / "metadata.json").read_text())["training"])
        if read_registry(data, TICKER)["champion"] != int(bundle.name):  # gate not under test
            promote(data, TICKER, int(bundle.name), reason="test: the next night starts from it")
    first, second, third = (r["warm_start"] for r in records)
    assert (first["mode"], first["reason"]) == (
        "full",
        "no champion or earlier version to start from",
    )
    assert (second["mode"], second["source_version"], second["epochs"]) == ("warm", 1, 1)
    assert records[1]["epochs_run"] == 1 and records[0]["epochs_run"] == 3
    assert records[1]["best_epoch"] == 1  # the fine-tune beat the champion: a new version
    assert second["full_refit_last_day"] == first["full_refit_last_day"]
    # W001's stagger from that day is 0 (refit_after_days): due past 5 days, nights 2-4
    # (1-5 calendar days old) fine-tune or keep, night 5 (14 days) refits from scratch
    assert third["mode"] == "full" and "(full_refit_days 5)" in third["reason"]
    kept = results[2]  # night 3: the champion (v2) stays, the registry untouched
    assert kept["version"] == 2 and kept["bundle"] == results[1]["bundle"]
    assert kept["unchanged"] and "champion v2 kept, no new version" in kept["kept_reason"]
    event = kept["promotion"]
    assert (event["action"], event["version"], event["kept"]) == ("unchanged", 2, True)
    still = results[3]  # night 4: within the drift bound, not a single epoch
    assert still["version"] == 2 and still["unchanged"]
    assert "v2's weights still fit tonight's validation windows" in still["kept_reason"]
    history = sorted((data / "work" / "train").glob("*/history.json"))
    assert sorted(json.loads(h.read_text())["epochs_run"] for h in history)[0] == 0
    assert list_versions(data, TICKER) == [1, 2, 3]


@pytest.mark.slow
def test_a_ticker_the_gate_never_promoted_fine_tunes_its_latest_version(prefect_server, tmp_path):
    """Night 1's version fails the gate (it must beat naive significantly; a tiny network
    on a random walk does not); night 2 (one new day, warm_start_drift on) fine-tunes that
    version rather than refitting from scratch, never keeps it as it is, and gates what it
    ends with as version 2."""
    from tests.synthetic import write_yahoo_universe
    from tests.test_flow import task_states
    from tickercast.delivery.registry import read_registry
    from tickercast.flows.retrain import retrain

    csv, data = tmp_path / "csv", tmp_path / "data"
    cfg = config(
        source="csv",
        csv_dir=str(csv),
        data_dir=str(data),
        epochs=3,
        warm_start_epochs=1,
        warm_start_drift=10.0,
        require_beat_naive=True,
    )
    trainings = []
    for fit, days in (("train", 500), ("train-batch", 501)):  # night 2 from version 1
        write_yahoo_universe(csv, [TICKER], days=days, quirks=False)
        state = retrain(cfg, return_state=True)
        assert state.is_completed(), state.message
        assert set(task_states(state)) == {"prepare", fit, "evaluate", "export", "promote"}
        assert read_registry(data, TICKER)["champion"] is None, "the gate promoted it"
        bundle = Path(state.result()[TICKER]["bundle"])
        trainings.append(json.loads((bundle / "metadata.json").read_text())["training"])
    first, second = (t["warm_start"] for t in trainings)
    assert (first["mode"], first["reason"]) == (
        "full",
        "no champion or earlier version to start from",
    )
    assert (second["mode"], second["source_version"], second["keeps_source"]) == (
        "warm",
        1,
        False,
    )
    assert second["keep_at"] is None and trainings[1]["epochs_run"] <= 1
    assert second["full_refit_last_day"] == first["full_refit_last_day"]


@pytest.mark.slow
def test_kept_champions_share_keep_tasks_and_one_failure_stays_its_own(
    prefect_server, tmp_path, monkeypatch
):
    """A night whose fits all keep their champion keeps them KEEP_BATCH tickers to a keep
    task (here 2: three tickers, two keep task runs), and one ticker whose keep fails (its
    champion's metadata lost its verdict) fails alone, named with its one-line cause,
    while the others keep their champions and the run says which ticker failed."""
    from tests.prefect_runs import task_runs
    from tests.synthetic import write_yahoo_universe
    from tickercast.delivery.bundle import bundle_path
    from tickercast.delivery.registry import promote, read_registry
    from tickercast.flows import retrain as retrain_module

    monkeypatch.setattr(retrain_module, "KEEP_BATCH", 2)
    tickers = ["K001", "K002", "K003"]
    csv, data = tmp_path / "csv", tmp_path / "data"
    where = dict(tickers=tickers, source="csv", csv_dir=str(csv), data_dir=str(data))
    write_yahoo_universe(csv, tickers, days=500, quirks=False)
    assert retrain_module.retrain(config(**where, epochs=2), return_state=True).is_completed()
    for ticker in tickers:
        if read_registry(data, ticker)["champion"] != 1:  # the gate is not under test
            promote(data, ticker, 1, reason="test: the next night starts from it")
    metadata = bundle_path(data, "K002", 1) / "metadata.json"
    broken = json.loads(metadata.read_text())
    del broken["verdict"]
    metadata.write_text(json.dumps(broken))
    registries = {t: read_registry(data, t) for t in tickers}

    write_yahoo_universe(csv, tickers, days=501, quirks=False)
    steady = config(**where, epochs=2, warm_start_epochs=1, warm_start_drift=10.0)
    state = retrain_module.retrain(steady, return_state=True)

    assert state.is_failed()
    assert state.message == "1 of 3 ticker(s) failed: K002: KeyError: 'verdict'"
    names = [run.name for run in task_runs(state) if run.name.startswith("keep")]
    assert len(names) == 2
    results = state.result(raise_on_failure=False)
    for ticker in ("K001", "K003"):
        kept = results[ticker]
        assert kept["version"] == 1 and kept["unchanged"] and kept["promotion"]["kept"]
        assert "still fit" in kept["kept_reason"]
    assert results["K002"] == {"ticker": "K002", "error": "KeyError: 'verdict'"}
    assert {t: read_registry(data, t) for t in tickers} == registries  # untouched


@pytest.mark.slow
def test_fits_from_champions_share_a_train_batch_and_one_failure_stays_its_own(
    prefect_server, tmp_path
):
    """A night whose tickers all have champions trains them in train-batch task runs (here
    one: three tickers, one worker), each ticker's fit its own (its work folder, its
    record); one whose champion's fitted weights changed since the night found them fails
    alone, named with its one-line cause, while the others keep their champions. A first
    night's fits are train task runs of their own."""
    from tests.prefect_runs import task_runs
    from tests.synthetic import write_yahoo_universe
    from tickercast.delivery.bundle import bundle_path
    from tickercast.delivery.registry import promote, read_registry
    from tickercast.flows.retrain import retrain

    tickers = ["B001", "B002", "B003"]
    csv, data = tmp_path / "csv", tmp_path / "data"
    where = dict(tickers=tickers, source="csv", csv_dir=str(csv), data_dir=str(data), max_workers=1)
    write_yahoo_universe(csv, tickers, days=500, quirks=False)
    first = retrain(config(**where, epochs=2), return_state=True)
    assert first.is_completed(), first.message
    fits = [run.name for run in task_runs(first) if run.name.startswith("train")]
    assert len(fits) == 3 and not any(name.startswith("train-batch") for name in fits)
    for ticker in tickers:
        if read_registry(data, ticker)["champion"] != 1:  # the gate is not under test
            promote(data, ticker, 1, reason="test: the next night starts from it")
    weights = bundle_path(data, "B002", 1) / "fitted-weights.npz"
    weights.write_bytes(weights.read_bytes() + b"\0")  # not what its manifest hashed

    write_yahoo_universe(csv, tickers, days=501, quirks=False)
    steady = config(**where, epochs=2, warm_start_epochs=1, warm_start_drift=10.0)
    state = retrain(steady, return_state=True)

    assert state.is_failed()
    assert state.message.startswith("1 of 3 ticker(s) failed: B002: ValueError: ")
    assert "changed since it was chosen to warm-start from" in state.message
    fits = [run.name for run in task_runs(state) if run.name.startswith("train")]
    assert len(fits) == 1 and fits[0].startswith("train-batch"), fits
    results = state.result(raise_on_failure=False)
    for ticker in ("B001", "B003"):
        kept = results[ticker]
        assert kept["version"] == 1 and kept["unchanged"] and "still fit" in kept["kept_reason"]
    histories = list((data / "work" / "train").glob("*/history.json"))
    assert len(histories) == 3 + 2  # each fit in its own work folder, as a train step's
