"""The SavedModel written from a tf.Module vs through Keras' ExportArchive, side by side in
one process.

`tickercast.delivery.servable.write_saved_model` saves a `tf.Module` that tracks the
network, with the two serving functions as its signatures. It used Keras' ExportArchive
(`archive`, the baseline below: the code it replaced), which before saving lists the
variables every endpoint uses, tracing them for it. This makes real bundles (the nightly
config on sample tickers, as bench/export_band.py does) and runs the whole
`export_saved_model` (write, reload, check against `predict`) on each bundle's model,
alternating the two writers, `--rounds` times; both are checked by the export itself.

Run: python bench/export_module.py [--rounds 3] [--no-record]  (RESULTS.md row
`export_module`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def archive(servable, dest: Path) -> None:
    """The baseline: the SavedModel written by Keras' ExportArchive."""
    import keras

    from tickercast.delivery import servable as sv

    export = keras.export.ExportArchive()
    export.track(servable.model)
    if isinstance(servable, sv.QuantileServable):
        export.track(servable.head)
    export.add_endpoint(sv.SIGNATURE, servable.serve, input_signature=[servable.input_spec()])
    export.add_endpoint(
        sv.SCALED_SIGNATURE, servable.serve_scaled, input_signature=[servable.scaled_input_spec()]
    )
    export.write_out(str(dest), verbose=False)


def measure(rounds: int) -> dict[str, list[tuple[float, int]]]:
    from bench.export_band import alternate_exports
    from tickercast.delivery import servable

    module = servable.write_saved_model

    def use(writer) -> Callable[[], None]:
        return lambda: setattr(servable, "write_saved_model", writer)

    return alternate_exports(rounds, {"module": use(module), "archive": use(archive)})


def main() -> None:
    from bench.export_band import TICKERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms = measure(args.rounds)
    mod, base = (statistics.median(s for s, _ in arms[k]) for k in ("module", "archive"))
    kib = {k: statistics.median(n for _, n in arms[k]) for k in arms}
    row = (
        f"| seconds per `export_saved_model` (write the SavedModel, reload it, check it "
        f"against predict) of nightly bundles ({', '.join(TICKERS)}; median of {args.rounds} "
        f"rounds x {len(TICKERS)} bundles per arm, arms alternating) | Keras' ExportArchive: "
        f"{base:.2f} s, {kib['archive']:.0f} KiB | a tf.Module saved by tf.saved_model.save: "
        f"{mod:.2f} s, {kib['module']:.0f} KiB (same signatures, checked by the export) | "
        f"{mod / base:.2f}x |"
    )
    from bench.results import publish

    publish("export_module", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
