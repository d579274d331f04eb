"""The registry: the champion gate both ways, the common test window, damaged bundles,
manual promote / rollback, the CLI, and concurrent promotions."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest

from tests.tiny_models import (
    TICKER,
    assert_consistent,
    copy_store,
    linear_version,
    tiny_config,
)
from tickercast.delivery.bundle import BundleError
from tickercast.delivery.gate import challenge
from tickercast.delivery.registry import (
    RegistryError,
    load_champion,
    promote,
    read_registry,
    registry_path,
    rollback,
)


@pytest.fixture
def data(tmp_path):
    """v1 tiny LSTM, v2 bad linear, v3 ridge-as-Dense (beats naive); no registry yet."""
    return copy_store(tmp_path)


def ingested(data_dir):
    from tickercast.market.ingest import ingest_ticker

    return ingest_ticker(TICKER, "sample", data_dir)


def meta(data_dir, version):
    path = data_dir / f"models/{TICKER}/versions/{version}/metadata.json"
    return json.loads(path.read_text())


def test_gate_promotes_only_significant_improvements_and_never_a_loser_to_naive(data):
    first = challenge(data, TICKER, 2)  # no champion, but significantly worse than naive
    assert first["action"] == "reject", first["reason"]
    assert "significantly worse than naive" in first["reason"]
    assert "never promoted automatically" in first["reason"]
    assert first["tests"]["vs_naive"]["p_value"] < 0.05
    assert read_registry(data, TICKER)["champion"] is None  # exported, never promoted

    promote(data, TICKER, 2, reason="by hand")  # a weak champion to beat
    better = challenge(data, TICKER, 3)
    assert better["action"] == "promote", better["reason"]
    assert "significantly better" in better["reason"] and "beats naive" in better["reason"]
    assert better["champion_before"] == 2 and better["champion_after"] == 3
    assert better["tests"]["vs_champion"]["p_value"] < 0.05
    s = better["scores"]
    assert s["challenger"] < s["champion"] and s["challenger"] < s["naive"]
    # same windows as v3's own evaluation (v2 validated before v3's test window)
    assert better["window"]["windows"] == meta(data, 3)["evaluation"]["window"]["windows"]
    assert s["challenger"] == pytest.approx(meta(data, 3)["metrics"]["model"]["rmse"], rel=1e-6)
    assert s["champion"] == pytest.approx(meta(data, 2)["metrics"]["model"]["rmse"], rel=1e-6)

    for worse in (1, 2):
        event = challenge(data, TICKER, worse)
        assert event["action"] == "reject" and "not significantly better" in event["reason"]
    registry = read_registry(data, TICKER)
    assert registry["champion"] == 3 and registry["lineage"] == [2, 3]
    actions = [e["action"] for e in registry["history"]]
    assert actions == ["reject", "manual_promote", "promote", "reject", "reject"]
    assert_consistent(registry)
    assert load_champion(data, TICKER).version == 3


def test_a_lower_error_is_not_enough_at_a_strict_level(data):
    promote(data, TICKER, 2, reason="by hand")
    event = challenge(data, TICKER, 3, level=1e-40)  # far better, but p is 8e-38
    assert event["scores"]["challenger"] < event["scores"]["champion"]
    assert event["action"] == "reject" and "not significantly better" in event["reason"]
    assert event["level"] == 1e-40
    assert read_registry(data, TICKER)["champion"] == 2


def test_require_beat_naive_blocks_a_version_that_does_not(data):
    event = challenge(data, TICKER, 2, require_beat_naive=True)
    assert event["action"] == "reject"
    assert "beating naive is required" in event["reason"]
    assert read_registry(data, TICKER)["champion"] is None
    assert challenge(data, TICKER, 3, require_beat_naive=True)["action"] == "promote"


def test_models_show_puts_every_version_on_one_window(data):
    from tickercast.delivery.gate import compare_versions

    common = compare_versions(data, TICKER)
    rows = {r["version"]: r for r in common["rows"]}
    assert sorted(rows) == [1, 2, 3] and common["window"]["windows"] > 0
    assert len({r["naive_rmse"] for r in rows.values()}) == 1  # one window, one naive
    assert rows[3]["verdict"].startswith("beats naive")
    assert rows[2]["verdict"].startswith("worse than naive")


def test_a_tie_keeps_the_champion(data):
    assert challenge(data, TICKER, 3)["action"] == "promote"
    twin = linear_version(data, ingested(data), tiny_config(data), "ridge-again", "ridge")
    event = challenge(data, TICKER, int(twin.name), metric="mae")
    assert event["action"] == "reject" and event["metric"] == "mae"
    assert event["scores"]["challenger"] == pytest.approx(event["scores"]["champion"])
    assert challenge(data, TICKER, 3)["reason"] == "already the champion"


def test_common_window_is_where_the_champion_is_out_of_sample_too(data):
    late = linear_version(
        data, ingested(data), tiny_config(data, test_fraction=0.05), "late", "ridge"
    )
    promote(data, TICKER, int(late.name))
    champion_val_end = meta(data, int(late.name))["data"]["val_end"]
    event = challenge(data, TICKER, 3)
    own = meta(data, 3)["evaluation"]["window"]["windows"]
    assert 0 < event["window"]["windows"] < own
    assert event["window"]["first_anchor"] >= champion_val_end


def test_different_targets_are_not_compared(data):
    other = linear_version(data, ingested(data), tiny_config(data, horizon=1), "h1", "ridge")
    promote(data, TICKER, 3)
    event = challenge(data, TICKER, int(other.name))
    assert event["action"] == "reject" and "horizon differs" in event["reason"]


def test_damaged_bundles_in_the_gate(data):
    promote(data, TICKER, 1, reason="by hand")
    (data / f"models/{TICKER}/versions/1/preprocessing.json").write_text("{}")
    event = challenge(data, TICKER, 3)  # the champion is damaged: judged on its own
    assert event["action"] == "promote" and "champion v1 fails verification" in event["reason"]
    with (data / f"models/{TICKER}/versions/2/model.keras").open("ab") as handle:
        handle.write(b"\0")
    event = challenge(data, TICKER, 2)
    assert event["action"] == "reject" and "model.keras does not match" in event["reason"]
    assert_consistent(read_registry(data, TICKER))


def test_manual_promote_and_rollback(data):
    for version in (1, 3, 2):
        promote(data, TICKER, version, reason="test")
    assert read_registry(data, TICKER)["lineage"] == [1, 3, 2]
    assert rollback(data, TICKER)["champion"] == 3
    assert rollback(data, TICKER)["champion"] == 1  # the stack, not a toggle
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback(data, TICKER)
    promote(data, TICKER, 2)
    promote(data, TICKER, 3)
    assert rollback(data, TICKER, to=1)["lineage"] == [1]
    promote(data, TICKER, 2)
    with pytest.raises(RegistryError, match="version 3 was not an earlier champion"):
        rollback(data, TICKER, to=3)
    with pytest.raises(RegistryError, match="already the champion"):
        promote(data, TICKER, 2)
    with pytest.raises(RegistryError, match="has no version 9"):
        promote(data, TICKER, 9)
    assert_consistent(read_registry(data, TICKER))


def test_damaged_bundle_is_never_made_champion_by_hand(data):
    promote(data, TICKER, 1)
    before = registry_path(data, TICKER).read_bytes()
    (data / f"models/{TICKER}/versions/3/metadata.json").write_text("{}")
    with pytest.raises(BundleError, match="metadata.json does not match"):
        promote(data, TICKER, 3)
    assert registry_path(data, TICKER).read_bytes() == before
    with pytest.raises(ValueError, match="invalid ticker"):
        read_registry(data, "../x")


def test_cli_models_commands(data, capsys):
    from tickercast.app.cli import main

    d = ["--data-dir", str(data)]
    assert main(["models", "promote", TICKER, "3", *d]) == 0
    assert main(["models", "promote", TICKER, "1", "--reason", "by hand", *d]) == 0
    assert main(["models", "list", *d]) == 0
    assert main(["models", "show", TICKER, *d]) == 0
    out = capsys.readouterr().out
    assert "MSFT: champion v1, 3 version(s), latest v3" in out
    assert " * v1:" in out and "manual_promote v1: by hand" in out and "intact" in out
    assert main(["models", "rollback", TICKER, *d]) == 0
    assert "champion is now v3" in capsys.readouterr().out
    assert main(["models", "show", TICKER, "--json", *d]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["champion"] == 3 and len(shown["versions"]) == 3
    assert main(["models", "promote", TICKER, "9", *d]) == 1
    err = capsys.readouterr().err
    assert "has no version 9" in err and len(err.strip().splitlines()) == 1
    assert main(["models", "rollback", TICKER, "--to", "2", *d]) == 1


def _promote_many(args: tuple[str, list[int], int]) -> int:
    """Run in a separate process: promote each version in turn, `rounds` times."""
    from tickercast.delivery.registry import RegistryError, promote

    data_dir, versions, rounds = args
    done = 0
    for _ in range(rounds):
        for version in versions:
            try:
                promote(data_dir, "MSFT", version)
                done += 1
            except RegistryError:  # already the champion: nothing recorded
                pass
    return done


def test_concurrent_promotions_from_many_processes_stay_consistent(data):
    jobs = [(str(data), order, 6) for order in ([1, 2, 3], [3, 2, 1], [2, 1, 3], [1, 3, 2])]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        done = pool.map(_promote_many, jobs, chunksize=1)
    registry = read_registry(data, TICKER)
    assert len(registry["history"]) == sum(done) > 0
    assert_consistent(registry)
    leftovers = [p.name for p in (data / f"models/{TICKER}").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_concurrent_gated_runs_end_with_the_better_champion(data):
    events, errors = [], []

    def run(version):
        try:
            events.append(challenge(data, TICKER, version))
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(events) == 2
    registry = read_registry(data, TICKER)
    assert registry["champion"] == 3  # whichever ran first, the better one ends up champion
    assert_consistent(registry)
