"""How long a process holding TensorFlow takes to exit, and a local Dask cluster to close,
with and without `tickercast.fastexit` (the tracked objects frozen at exit).

Two measurements, each arm alternating with the other for `--rounds` rounds:
- a plain process: `python -c` importing Keras (TensorFlow) and fitting a tiny LSTM, then
  printing the time; the exit is from that time to when the parent sees it gone;
- the nightly's local cluster (tasks/runners.local_cluster_kwargs, two one-thread worker
  processes): each worker fits a tiny LSTM, then the cluster is closed (`Client.close`,
  `LocalCluster.close`), what a nightly flow run waits for after its last task. "without"
  is the same cluster without the preload.

Run: python bench/worker_exit.py [--rounds 3]  (RESULTS.md row `worker_exit`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ARMS = ("without", "with")

FIT = """
import time
{setup}
import keras, numpy as np
m = keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(4), keras.layers.Dense(1)])
m.compile("adam", "mse")
m.fit(np.zeros((32, 5, 2)), np.zeros((32, 1)), epochs=1, verbose=0)
print(time.time(), flush=True)
"""
SETUP = {
    "without": "",
    "with": "from tickercast.fastexit import skip_final_collections\nskip_final_collections()",
}


def process_exit(arm: str) -> float:
    """Seconds from a fitted process's last line to its end, as its parent sees it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FIT.format(setup=SETUP[arm])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed = float(proc.stdout.readline())
    proc.wait()
    return time.time() - printed


def _fit(_: int) -> int:
    import keras
    import numpy as np

    m = keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    m.compile("adam", "mse")
    m.fit(np.zeros((32, 5, 2)), np.zeros((32, 1)), epochs=1, verbose=0)
    return os.getpid()


def cluster_close(arm: str) -> float:
    """Seconds to close the nightly's local cluster after its workers fitted."""
    from distributed import Client, LocalCluster

    from tickercast.tasks.runners import local_cluster_kwargs

    kwargs = local_cluster_kwargs(2)
    if arm == "without":
        kwargs.pop("preload")
    cluster = LocalCluster(**kwargs)
    client = Client(cluster)
    pids = set(client.gather(client.map(_fit, range(4 * kwargs["n_workers"]))))
    assert len(pids) == kwargs["n_workers"], pids  # every worker holds TensorFlow
    started = time.perf_counter()
    client.close()
    cluster.close()
    return time.perf_counter() - started


def main() -> None:
    from bench.results import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    seen: dict[str, dict[str, list[float]]] = {"process": {}, "cluster": {}}
    for _ in range(args.rounds):
        for arm in ARMS:
            seen["process"].setdefault(arm, []).append(process_exit(arm))
            seen["cluster"].setdefault(arm, []).append(cluster_close(arm))
            print(arm, {k: round(v[arm][-1], 3) for k, v in seen.items()}, flush=True)
    med = {k: {arm: statistics.median(v[arm]) for arm in ARMS} for k, v in seen.items()}

    def runs(kind: str, arm: str) -> str:
        return ", ".join(f"{s:.2f}" for s in seen[kind][arm])

    row = (
        "| exit of a process holding TensorFlow, and the close of the nightly's local Dask "
        "cluster (two one-thread workers, each fitted a tiny LSTM), with the tracked "
        "objects frozen at exit (`tickercast.fastexit`, the cluster's preload) or not; "
        f"medians of {args.rounds} rounds, arms alternating | without: process exit "
        f"{med['process']['without']:.2f} s ({runs('process', 'without')}); cluster close "
        f"{med['cluster']['without']:.2f} s ({runs('cluster', 'without')}) | with: process "
        f"exit {med['process']['with']:.2f} s ({runs('process', 'with')}); cluster close "
        f"{med['cluster']['with']:.2f} s ({runs('cluster', 'with')}) | process "
        f"{med['process']['with'] / med['process']['without']:.2f}x, cluster close "
        f"{med['cluster']['with'] / med['cluster']['without']:.2f}x |"
    )
    publish("worker_exit", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
