"""The worker warm-up (tickercast.deployments.warm_worker): a process that ran it fits
its first ticker on the pooled network it traced, with the same weights as a cold
process; a real `dask worker --preload` of it is warm before its first task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.dask_processes import cluster
from tests.test_dask_cluster import TINY
from tickercast.config import RetrainConfig
from tickercast.deployments import warm_worker
from tickercast.deployments.nightly import nightly_config
from tickercast.deployments.warm_worker import made_up_history
from tickercast.modeling.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]

# One fresh process, as a one-thread worker is: optionally warmed up on CONFIG, then one
# fit of another made-up ticker; prints what the pool held and the fit's weights' hash.
FIT = r"""
import hashlib, json, sys, tempfile
from pathlib import Path
from tickercast.config import RetrainConfig
from tickercast.deployments.warm_worker import made_up_history, warm_up
from tickercast.modeling import pool
from tickercast.modeling.preprocess import preprocess
from tickercast.modeling.shrink import naive_output
from tickercast.modeling.threads import size_pools
from tickercast.modeling.train import train_model
from tickercast.modeling.windows import split_anchors

config = RetrainConfig(**json.loads(sys.argv[1]))
size_pools(1)
if sys.argv[2] == "warm":
    warm_up(config)
pooled = pool.pooled_count()
spec, arrays = preprocess(made_up_history(seed=7), config.preprocessing, "OTHER")
anchors = split_anchors(len(arrays["x"]), spec.n_train, spec.n_val, spec.lookback, spec.horizon)
with tempfile.TemporaryDirectory() as tmp:
    summary = train_model(arrays, anchors, spec.lookback, config.fit_spec(), Path(tmp),
                          label="OTHER", naive=naive_output(spec))
    import keras
    model = keras.models.load_model(Path(tmp) / "model.keras", compile=False)
    values = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
print(json.dumps({"pooled_before_fit": pooled, "weights": values,
                  "best_val_loss": summary["best_val_loss"]}))
"""


def _fit_in_a_fresh_process(config: dict, mode: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", FIT, json.dumps(config), mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_made_up_history_is_a_lake_history_the_nightly_preprocesses():
    frame = made_up_history(years=3)
    assert list(frame.columns) == ["date", "open", "high", "low", "close", "adj_close", "volume"]
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    # the settings the warm-up reads, imported with this module: imported first inside
    # the capsys test below, they left Prefect's console logging writing to its closed
    # stream ("I/O operation on closed file" in tests/test_dask_cluster.py after it)
    spec, arrays = preprocess(frame, nightly_config(RetrainConfig).preprocessing, "WARMUP")
    assert spec.n_train > 0 and spec.n_val > 0 and spec.n_test > 0
    assert len(arrays["x"]) == len(arrays["close"])


def test_a_failed_warm_up_leaves_the_worker_starting_cold(monkeypatch, capsys):
    """The preload hook sizes the pools, and a warm-up that raises is reported, not
    raised: Dask would otherwise refuse to start the worker."""
    from types import SimpleNamespace

    from tickercast.modeling import threads

    sized = []
    monkeypatch.setattr(threads, "size_pools", sized.append)  # not this test process's pools

    def broken(config):
        raise ValueError("deployments/nightly.json: bad field")

    monkeypatch.setattr(warm_worker, "warm_up", broken)
    warm_worker.dask_setup(SimpleNamespace(state=SimpleNamespace(nthreads=1)))
    assert sized == [1]
    out = capsys.readouterr().out
    assert "warm-up failed, starting cold: ValueError: deployments/nightly.json: bad field" in out


@pytest.mark.slow
def test_a_warmed_up_process_fits_on_the_traced_network_with_the_same_weights():
    """The warm-up leaves this config's network in the pool, and the next ticker's fit
    (on that pooled network) equals a cold process's fit bit for bit."""
    config = {"tickers": ["X"], **TINY, "epochs": 3}
    warm = _fit_in_a_fresh_process(config, "warm")
    cold = _fit_in_a_fresh_process(config, "cold")
    assert warm["pooled_before_fit"] == 1 and cold["pooled_before_fit"] == 0
    assert warm["weights"] == cold["weights"]
    assert warm["best_val_loss"] == cold["best_val_loss"]


@pytest.mark.slow
def test_a_real_dask_worker_preloading_it_is_warm_before_its_first_task(tmp_path):
    """`dask worker ... --preload tickercast.deployments.warm_worker` (the README's
    command, as the benchmark starts it): by the time it joins the scheduler, TensorFlow
    runs on its one thread and the nightly's network (deployments/nightly.json) is pooled."""
    from distributed import Client

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with cluster(1, env, tmp_path, preload=[warm_worker.__name__]) as (address, _):

        def state() -> tuple[int, int]:
            import tensorflow as tf

            from tickercast.modeling import pool

            return tf.config.threading.get_intra_op_parallelism_threads(), pool.pooled_count()

        with Client(address, timeout=60) as client:
            assert list(client.run(state).values()) == [(1, 1)]
    assert "worker warmed up in" in (tmp_path / "dask-1.log").read_text()
