"""The SavedModel export with the band's variance recursion as a graph loop vs unrolled,
side by side in one process.

The shipped GJR-GARCH band runs its recursion over the window's last lookback + 20 daily
returns inside the serving graph. Written day by day in Python it was ~600 ops, which
every trace of the serving function built again (tf.saved_model.save traces it twice).
`tickercast.delivery.servable._band_variance` now runs it as one `tf.foldl` loop. This
makes real bundles (`tickercast retrain` with the nightly config on sample tickers, into
a temporary folder), then runs the whole `export_saved_model` (write, reload, check
against `predict`) on each bundle's model, alternating the loop and the unrolled
recursion (`unrolled` below, the code it replaced, the baseline), `--rounds` times.

Run: python bench/export_band.py [--rounds 3] [--no-record]  (RESULTS.md row `export_band`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TICKERS = ("AAPL", "MSFT", "NVDA")


def unrolled(params: dict, returns, horizon: int):
    """The baseline: the recursion written day by day (the export's code before the loop)."""
    import tensorflow as tf

    from tickercast.evaluation.garch_band import VARIANCE_FLOOR

    mu, omega, alpha, gamma, beta = (
        float(params[k]) for k in ("mu", "omega", "alpha", "gamma", "beta")
    )
    floor = tf.constant(VARIANCE_FLOOR, tf.float64)
    r = returns[:, -int(params["returns"]) :]
    s2 = tf.ones_like(r[:, 0]) * float(params["start_variance"])
    for k in range(int(params["returns"])):
        eps = r[:, k] - mu
        weight = alpha + gamma * tf.cast(eps < 0, tf.float64)
        s2 = tf.maximum(omega + weight * eps * eps + beta * s2, floor)
    path, persistence = [], alpha + gamma / 2 + beta
    for _ in range(horizon):
        path.append(s2)
        s2 = tf.maximum(omega + persistence * s2, floor)
    return tf.stack(path, axis=1)


def bundles(data: Path) -> list[Path]:
    """The nightly config's first versions of TICKERS, made by the CLI."""
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "tickercast"),
            "retrain",
            "--config",
            str(ROOT / "deployments" / "nightly.json"),
            "--source",
            "sample",
            "--task-runner",
            "threads",
            "--data-dir",
            str(data),
            "--tickers",
            *TICKERS,
        ],
        check=True,
        capture_output=True,
    )
    return [data / "models" / t / "versions" / "1" for t in TICKERS]


def size_kib(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) // 1024


def alternate_exports(
    rounds: int, arms: dict[str, Callable[[], None]]
) -> dict[str, list[tuple[float, int]]]:
    """(seconds, KiB) of each whole `export_saved_model` of the nightly bundles per arm,
    the arms' order alternating each round; an arm's callable puts its variant in place
    before each of its exports, the first arm's is put back at the end."""
    import keras

    from tickercast.delivery import servable
    from tickercast.delivery.bundle import load_bundle

    names = list(arms)
    times: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        made = bundles(Path(tmp) / "data")
        try:
            for r in range(rounds):
                for path in made:
                    bundle = load_bundle(path)
                    assert bundle.metadata["evaluation"]["distribution"]["model"]["calibration"]
                    for arm in names if r % 2 == 0 else names[::-1]:
                        arms[arm]()
                        model = keras.models.load_model(path / "model.keras", compile=False)
                        dest = Path(tmp) / f"{arm}-{path.parts[-3]}-{r}"
                        started = time.perf_counter()
                        servable.export_saved_model(model, bundle.spec, bundle.metadata, dest)
                        times[arm].append((time.perf_counter() - started, size_kib(dest)))
        finally:
            arms[names[0]]()
    print({k: [round(t, 2) for t, _ in v] for k, v in times.items()}, flush=True)
    return times


def measure(rounds: int) -> dict[str, list[float]]:
    from tickercast.delivery import servable

    looped = servable._band_variance

    def use(variance) -> Callable[[], None]:
        return lambda: setattr(servable, "_band_variance", variance)

    times = alternate_exports(rounds, {"loop": use(looped), "unrolled": use(unrolled)})
    return {arm: [t for t, _ in runs] for arm, runs in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms = measure(args.rounds)
    loop, base = (statistics.median(arms[k]) for k in ("loop", "unrolled"))
    row = (
        f"| seconds per `export_saved_model` (write the SavedModel, reload it, check it "
        f"against predict) of nightly bundles ({', '.join(TICKERS)}, GJR-GARCH band over "
        f"80 returns; median of {args.rounds} rounds x {len(TICKERS)} bundles per arm, "
        f"arms alternating) | the band's recursion unrolled day by day: {base:.2f} s | "
        f"as a tf.foldl loop: {loop:.2f} s | "
        f"{loop / base:.2f}x |"
    )
    from bench.results import publish

    publish("export_band", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
