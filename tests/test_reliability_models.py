"""The failure-mode suite, model side: bundles, training, the registry and the HTTP service.

Each failure of docs/RELIABILITY.md is tried for real: bundle exports and registry
writes killed with SIGKILL mid-write, a full disk (a real tmpfs where mounting is
allowed, an ENOSPC from the writer everywhere), a NaN loss inside a real retrain run,
two retrain processes of one ticker at once, and hostile or heavy traffic against a
running service. The data side (ingest, lake, config) is in tests/test_reliability.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.serve_load import fire, serve_in_thread
from tests.test_reliability import run_until_flag, tiny_disk
from tests.tiny_models import TICKER, assert_consistent, copy_store, tiny_config
from tickercast import layout
from tickercast.atomic import file_lock
from tickercast.delivery.bundle import list_versions, verify_bundle, write_bundle
from tickercast.delivery.gate import challenge
from tickercast.delivery.registry import (
    load_champion,
    promote,
    read_registry,
    registry_path,
)
from tickercast.market import lake
from tickercast.market.sources import sine_prices

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FILES = ("model.keras", "preprocessing.json", "history.json", "predictions.parquet")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The tiny store (v1 LSTM, v2 bad linear, v3 ridge) with v3 as champion."""
    data_dir = copy_store(tmp_path)
    promote(data_dir, TICKER, 3, reason="test")
    return data_dir


def models_state(data_dir: Path) -> dict:
    """Versions, registry bytes and every bundle's manifest check, to compare before/after."""
    versions = list_versions(data_dir, TICKER)
    return {
        "versions": versions,
        "registry": registry_path(data_dir, TICKER).read_bytes(),
        "manifests": [verify_bundle(data_dir / f"models/{TICKER}/versions/{v}") for v in versions],
    }


def export_again(data_dir: Path) -> Path:
    """A new bundle version made of v3's files (what an export writes, minus training)."""
    source = data_dir / f"models/{TICKER}/versions/3"
    metadata = json.loads((source / "metadata.json").read_text())
    return write_bundle(data_dir, TICKER, {n: source / n for n in BUNDLE_FILES}, metadata)


# -- killed during a bundle export or a registry write -----------------------------------

KILLED_EXPORT = """
import json, shutil, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import tickercast.delivery.bundle as export

real = shutil.copyfile

def slow_copy(src, dst, *args, **kwargs):
    out = real(src, dst, *args, **kwargs)
    if Path(dst).name == "model.keras":  # half of the model is on disk
        data = Path(dst).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        Path({flag!r}).touch()
        time.sleep(120)
    return out

export.shutil.copyfile = slow_copy
source = Path({data!r}) / "models/MSFT/versions/3"
files = {{n: source / n for n in {files!r}}}
export.write_bundle({data!r}, "MSFT", files, json.loads((source / "metadata.json").read_text()))
"""

KILLED_REGISTRY_WRITE = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tickercast.delivery.registry import promote

real = Path.write_text

def slow_write(self, text, *args, **kwargs):
    if self.name.startswith(".registry.json"):  # the new registry, half written
        real(self, text[: len(text) // 2], *args, **kwargs)
        Path({flag!r}).touch()
        time.sleep(120)
    return real(self, text, *args, **kwargs)

Path.write_text = slow_write
promote({data!r}, "MSFT", 1, reason="killed half way")
"""


@pytest.mark.parametrize("where", ["bundle-export", "registry-write"])
def test_sigkill_mid_write_leaves_bundles_and_registry_intact(
    data: Path, tmp_path: Path, where: str
) -> None:
    before = models_state(data)
    flag = tmp_path / "mid-write"
    script = KILLED_EXPORT if where == "bundle-export" else KILLED_REGISTRY_WRITE
    code = script.format(root=str(ROOT), flag=str(flag), data=str(data), files=BUNDLE_FILES)

    proc = run_until_flag(code, flag)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL

    assert models_state(data) == before, "every old bundle and the registry are intact"
    hidden = [p.name for p in (data / f"models/{TICKER}/versions").iterdir()]
    hidden += [p.name for p in (data / f"models/{TICKER}").iterdir()]
    assert any(name.startswith(".") and name not in (".registry.lock",) for name in hidden)
    assert load_champion(data, TICKER).version == 3
    from tickercast.app.service import Champions

    assert Champions(data).get(TICKER).bundle.version == 3, "serving never sees the half"
    # the dead writer held the registry lock: it was released with the process
    assert promote(data, TICKER, 1, reason="after the crash")["champion"] == 1
    new = export_again(data)
    assert new.name == "4" and verify_bundle(new)
    assert_consistent(read_registry(data, TICKER))


# -- disk full -----------------------------------------------------------------------


def assert_full_disk_refused(data: Path, before: dict) -> None:
    with pytest.raises(OSError) as err:
        export_again(data)
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and "No space left on device" in message
    assert f"a new bundle of {TICKER}" in message and "nothing was replaced" in message
    with pytest.raises(OSError) as err:
        promote(data, TICKER, 1, reason="disk full")
    assert err.value.errno == errno.ENOSPC and str(registry_path(data, TICKER)) in str(err.value)
    assert models_state(data) == before, "no version taken, registry unchanged"
    leftovers = [
        p for p in (data / "models").rglob("*") if p.name.startswith((".tmp-", ".registry.json."))
    ]
    assert leftovers == [], "nothing half-written is left behind"


def test_disk_full_on_a_real_tmpfs_keeps_bundles_and_registry(tmp_path: Path) -> None:
    import shutil

    source = copy_store(tmp_path / "src")
    promote(source, TICKER, 3, reason="test")
    with tiny_disk(tmp_path / "disk", "4m") as disk:
        data = disk / "data"
        shutil.copytree(source / "models", data / "models")
        shutil.copytree(source / "lake", data / "lake")
        before = models_state(data)
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as handle:  # fill the disk to the last byte
            with pytest.raises(OSError) as full:
                for _ in range(10_000):
                    handle.write(b"\0" * 65536)
            assert full.value.errno == errno.ENOSPC
        assert_full_disk_refused(data, before)
        filler.unlink()
        assert export_again(data).name == "4", "works again once there is room"


def test_disk_full_simulated_in_the_writers_keeps_bundles_and_registry(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import tickercast.delivery.bundle

    before = models_state(data)
    real_copy, real_write = shutil.copyfile, Path.write_text

    def full_copy(src, dst, *args, **kwargs):
        if Path(dst).name == "history.json":
            Path(dst).write_bytes(Path(src).read_bytes()[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    def full_write(self, text, *args, **kwargs):
        if self.name.startswith(".registry.json"):
            real_write(self, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(tickercast.delivery.bundle.shutil, "copyfile", full_copy)
    monkeypatch.setattr(Path, "write_text", full_write)
    assert_full_disk_refused(data, before)


# -- NaN loss inside a real retrain run ----------------------------------------------


SINE = dict(
    tickers=["SINE"],
    source="sine",
    start=None,
    features=["close"],
    target="close",
    lookback=5,
    horizon=1,
    units=[4, 4],
    epochs=1,
)


def sine_config(data_dir: Path, **overrides):
    """tiny_config on the sine source: one epoch of a 4-unit model, 5-day windows."""
    return tiny_config(data_dir, **{**SINE, **overrides})


NAN_RUN = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
import tickercast.modeling.preprocess

real = tickercast.modeling.preprocess.load_preprocessed

def exploding(*args, **kwargs):  # what exploding gradients leave: a NaN loss from batch 1
    spec, arrays = real(*args, **kwargs)
    return spec, {{**arrays, "y": np.full_like(arrays["y"], np.nan)}}

tickercast.modeling.preprocess.load_preprocessed = exploding
from tickercast.app.cli import main
sys.exit(main(["retrain", "--config", {config!r}]))
"""


def harness_env() -> dict:
    """The environment for a child process that reports to this session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_nan_loss_fails_the_run_clearly_exports_nothing_and_keeps_the_champion(
    prefect_server, tmp_path: Path
) -> None:
    from tickercast.flows.retrain import retrain

    data = tmp_path / "data"
    # a champion to keep: a return target shrunk toward naive is never clearly worse than it
    config = sine_config(data, features=["log_return"], target="close_log_return", shrink=True)
    first = retrain(config)
    assert first["SINE"]["version"] == 1 and first["SINE"]["promotion"]["action"] == "promote"
    registry_before = registry_path(data, "SINE").read_bytes()
    versions_folder = data / "models/SINE/versions"
    listing_before = sorted(p.name for p in versions_folder.iterdir())
    path = tmp_path / "second.json"
    path.write_text(config.model_copy(update={"seed": 7}).model_dump_json())

    proc = subprocess.run(
        [sys.executable, "-c", NAN_RUN.format(root=str(ROOT), config=str(path))],
        cwd=ROOT,
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tickercast retrain: error:")]
    assert len(lines) == 1 and "TrainingDivergedError" in lines[0], proc.stderr[-3000:]
    assert "training diverged: the loss became NaN/inf in epoch 1" in lines[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in versions_folder.iterdir()) == listing_before, "nothing exported"
    assert registry_path(data, "SINE").read_bytes() == registry_before, "champion unchanged"
    assert load_champion(data, "SINE").version == 1
    trained = list((data / "work/train").glob("*/model.keras"))
    assert len(trained) == 1, "the diverged run saved no model"


def test_history_too_short_fails_the_run_saying_rows_needed_and_present(
    prefect_server, tmp_path: Path
) -> None:
    from tickercast.flows.retrain import retrain
    from tickercast.modeling.preprocess import InsufficientHistoryError

    data = tmp_path / "data"
    state = retrain(sine_config(data, lookback=600), return_state=True)  # the sine has 629 rows

    assert state.is_failed()
    message = state.message
    assert f"SINE: {InsufficientHistoryError.__name__}: ticker SINE: history too short" in message
    assert "lookback 600 + horizon 1 with a 70%/15%/15% split" in message
    needed = int(re.search(r"needs at least (\d+) usable rows, there are 629", message)[1])
    assert needed > 629
    assert not (data / "models").exists() or list_versions(data, "SINE") == []


def test_a_corrupt_ticker_skipped_by_choice_does_not_stop_the_retrain_of_the_others(
    prefect_server, tmp_path: Path
) -> None:
    from tickercast.flows.retrain import retrain

    data = tmp_path / "data"
    config = sine_config(data, tickers=["SINA", "SINB"], on_corrupt="skip")
    for ticker in config.tickers:  # both in the lake, then SINA's partition is damaged
        lake.write_partition(data, ticker, sine_prices().prices)
    damaged = lake.partition_path(data, "SINA")
    damaged.write_bytes(damaged.read_bytes()[:-100])

    state = retrain(config, return_state=True)

    assert state.is_completed(), state.message
    results = state.result()
    assert (
        str(damaged) in results["SINA"]["skipped"]
        and "on_corrupt=skip" in results["SINA"]["skipped"]
    )
    assert results["SINB"]["version"] == 1
    assert list_versions(data, "SINA") == [] and damaged.exists()
    state = retrain(config.model_copy(update={"tickers": ["SINA"]}), return_state=True)
    assert state.is_failed() and "every ticker was skipped" in state.message


# -- two retrain runs of one ticker at once ---------------------------------------------

CONCURRENT_RUN = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tickercast.app.cli import main
import tickercast.flows.retrain  # every heavy import done before the start line
import tensorflow

Path({ready!r}).touch()
deadline = time.monotonic() + 300
while not Path({go!r}).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(main(["retrain", "--config", {config!r}]))
"""


WAITING = "another retrain run holds"


def read_log(log) -> str:
    """What a child process has written to its log so far (unbuffered: see below)."""
    with open(log.name) as f:
        return f.read()


@pytest.mark.slow
def test_two_retrain_processes_of_one_ticker_both_finish_with_distinct_versions(
    prefect_server, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    go = tmp_path / "go"
    env = {**harness_env(), "PYTHONUNBUFFERED": "1"}  # the wait line reaches the log at once
    procs, ready, logs = [], [], []
    for i in range(2):
        # two seeds: two different models (identical configs would rightly export one
        # version, the second run reporting "unchanged since v1")
        config = tmp_path / f"config-{i}.json"
        config.write_text(sine_config(data, epochs=2, seed=42 + i).model_dump_json())
        flag = tmp_path / f"ready-{i}"
        code = CONCURRENT_RUN.format(
            root=str(ROOT), ready=str(flag), go=str(go), config=str(config)
        )
        log = (tmp_path / f"run-{i}.log").open("w+")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        )
        ready.append(flag)
        logs.append(log)
    try:
        deadline = time.monotonic() + 300
        while not all(f.exists() for f in ready):
            assert all(p.poll() is None for p in procs), "a run died while starting"
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.05)
        # Force the overlap instead of hoping for it: this test holds the ticker's lock
        # while both runs start, and lets go only once each reports waiting on it; then
        # the two contend for it (a full suite's load could let one finish first).
        with file_lock(layout.retrain_lock(data, "SINE")):
            go.touch()
            while not all(WAITING in read_log(log) for log in logs):
                assert all(p.poll() is None for p in procs), "a run died before the lock"
                assert time.monotonic() < deadline + 300, "the runs never reached the lock"
                time.sleep(0.05)
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    bundles = sorted(re.findall(r"SINE: bundle (\S+)", "\n".join(outputs)))
    assert [Path(b).name for b in bundles] == ["1", "2"], "distinct version numbers"
    registry = read_registry(data, "SINE")
    assert [e["version"] for e in registry["history"]] == [1, 2]
    assert_consistent(registry)
    for version in (1, 2):
        verify_bundle(data / f"models/SINE/versions/{version}")


# -- the HTTP service: hostile traffic, heavy traffic -------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from tickercast.app.service import create_app  # its body limit is part of the app

    data = copy_store(tmp_path_factory.mktemp("reliability-serve"))
    promote(data, TICKER, 3, reason="test")
    with serve_in_thread(create_app(data)) as url:
        yield url, data


def window(rows: int = 20, values=(200.0, 3e7)) -> list[list[float]]:
    return [list(values)] * rows


def body(obj) -> bytes:
    return json.dumps(obj).encode()


HOSTILE = {
    "truncated JSON": (b'{"ticker": "MSFT", "window": [[1', 422, "JSON"),
    "not JSON at all": (b"window=1,2,3", 422, "JSON"),
    "a JSON list": (b"[]", 422, "valid dictionary"),
    "null": (b"null", 422, "Field required"),
    "empty body": (b"", 422, "Field required"),
    "bad UTF-8": (b'{"ticker": "\xff\xfe", "window": []}', 400, "error parsing the body"),
    "deeply nested": (b"[" * 50_000 + b"]" * 50_000, 400, "error parsing the body"),
    "ticker not a string": (body({"ticker": 5, "window": window()}), 422, "valid string"),
    "ticker with a path": (body({"ticker": "../etc", "window": window()}), 422, "invalid ticker"),
    "unknown ticker": (body({"ticker": "ZZZZQ", "window": window()}), 404, "unknown ticker"),
    "too few rows": (body({"ticker": "MSFT", "window": window(19)}), 422, "expected 20 to 21 rows"),
    "ragged rows": (
        body({"ticker": "MSFT", "window": window(19) + [[1.0]]}),
        422,
        "list of rows of numbers",
    ),
    "rows of lists": (body({"ticker": "MSFT", "window": [[[1.0]]] * 20}), 422, "valid number"),
    "text in a row": (body({"ticker": "MSFT", "window": [["a", 1.0]] * 20}), 422, "number"),
    "NaN": (
        b'{"ticker": "MSFT", "window": [' + b",".join([b"[NaN, 1.0]"] * 20) + b"]}",
        422,
        "NaN",
    ),
    "Infinity": (
        b'{"ticker": "MSFT", "window": [' + b",".join([b"[Infinity, 1.0]"] * 20) + b"]}",
        422,
        "infinite",
    ),
    "1e308 prices": (
        body({"ticker": "MSFT", "window": window(values=(1e308, 1.0))}),
        422,
        "absurd price",
    ),
    "1,000x prices": (
        body({"ticker": "MSFT", "window": window(values=(200_000.0, 3e7))}),
        422,
        "far outside the training range",
    ),
    "NaN last_close": (
        b'{"ticker": "MSFT", "window": [[200.0, 3e7]], "last_close": NaN}',
        422,
        "finite number",
    ),
    "negative price": (
        body({"ticker": "MSFT", "window": window(values=(-5.0, 1.0))}),
        422,
        "must be > 0",
    ),
    "too many features": (
        body({"ticker": "MSFT", "window": [[1.0] * 65] * 20}),
        422,
        "at most 64 features",
    ),
    "an extra field": (body({"ticker": "MSFT", "window": window(), "x": 1}), 422, "extra"),
    "2 MiB body": (
        b'{"ticker": "MSFT", "window": [' + b"[1.0, 2.0]," * 200_000 + b"[1.0, 2.0]]}",
        413,
        "larger than",
    ),
}


def test_hostile_requests_get_4xx_with_a_message_and_the_service_keeps_serving(service) -> None:
    url, _ = service
    calls = [("POST", "/predict", payload) for payload, _, _ in HOSTILE.values()]
    calls += [
        ("GET", "/forecast/ZZZZQ", b""),
        ("GET", "/forecast/A;rm", b""),
        ("GET", "/forecast/" + "A" * 300, b""),
        ("GET", "/forecast/%00", b""),
        ("POST", "/predict", body({"ticker": "MSFT", "window": window()})),
        ("GET", "/forecast/MSFT", b""),
    ]
    expected = [(status, text) for _, status, text in HOSTILE.values()]
    expected += [
        (404, "unknown ticker"),
        (422, "invalid ticker"),
        (422, "invalid ticker"),
        (422, "invalid ticker"),
        (200, "forecasts"),
        (200, "forecasts"),
    ]
    names = [*HOSTILE, "GET unknown", "GET shell", "GET long", "GET NUL", "good POST", "good GET"]
    results = fire(url, calls)  # all at once
    for name, (status, _, text), (want, fragment) in zip(names, results, expected, strict=True):
        assert status == want, f"{name}: {status} {text[:300]!r}"
        answer = json.loads(text)
        if status >= 400:  # a message saying what is wrong
            assert fragment in json.dumps(answer["detail"]), f"{name}: {answer}"
        else:
            assert fragment in answer, f"{name}: {answer}"
    forecasts = json.loads(results[-1][2])["forecasts"]
    assert all(np.isfinite(row["forecast"]) for row in forecasts)

    # a client that goes away in the middle of its upload
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    ((status, _, _),) = fire(url, [("GET", "/health", b"")])
    assert status == 200, "still serving"


def test_two_hundred_concurrent_forecasts_all_succeed(service) -> None:
    url, data = service
    results = fire(url, [("GET", f"/forecast/{TICKER}", b"")] * 200)
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * 200, sorted(set(map(str, statuses)))
    values = {json.loads(text)["forecasts"][0]["forecast"] for _, _, text in results}
    assert len(values) == 1, "every answer is the same forecast"
    # and a mixed crowd: good and bad requests at once, nobody gets a 5xx
    good = [("GET", f"/forecast/{TICKER}", b"")] * 100
    bad = [("POST", "/predict", payload) for payload, _, _ in HOSTILE.values()] * 5
    mixed = fire(url, good + bad)
    assert [s for s, _, _ in mixed[:100]] == [200] * 100
    assert all(s is not None and 400 <= s < 500 for s, _, _ in mixed[100:])


def test_gate_refuses_a_tampered_challenger_and_the_champion_stays(data: Path) -> None:
    new = export_again(data)
    with (new / "model.keras").open("ab") as handle:
        handle.write(b"tampered")
    event = challenge(data, TICKER, int(new.name))
    assert event["action"] == "reject" and "model.keras does not match" in event["reason"]
    assert read_registry(data, TICKER)["champion"] == 3
