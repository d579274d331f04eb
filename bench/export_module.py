"""The SavedModel written from a tf.Module that tracks the network's variables and traces
the network once vs one that tracks the Keras objects vs Keras' ExportArchive, side by side
in one process.

`tickercast.delivery.servable.write_saved_model` saves a `tf.Module` that tracks the
network's variables, with the two serving functions as its signatures, both calling one
traced function of the network. Before, the module tracked the Keras model (and quantile
head) themselves and each signature traced the network (`objects` below), so saving and
loading back walked every layer's tracked attributes and the LSTMs' loops were traced and
stored twice; before that it used Keras' ExportArchive (`archive`), which before saving
lists the variables every endpoint uses, tracing them for it. This makes real bundles
(the nightly config on sample tickers, as bench/export_band.py does) and runs the whole
`export_saved_model` (write, reload, check against `predict`) on each bundle's model,
alternating the three writers, `--rounds` times; all are checked by the export itself.

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


def objects(servable, dest: Path) -> None:
    """The previous writer: the module tracks the Keras model (and quantile head)."""
    import tensorflow as tf

    from tickercast.delivery import servable as sv

    module = tf.Module()
    module.model = servable.model
    if isinstance(servable, sv.QuantileServable):
        module.head = servable.head
    module.serve = tf.function(servable.serve, input_signature=[servable.input_spec()])
    module.serve_scaled = tf.function(
        servable.serve_scaled, input_signature=[servable.scaled_input_spec()]
    )
    signatures = {sv.SIGNATURE: module.serve, sv.SCALED_SIGNATURE: module.serve_scaled}
    tf.saved_model.save(module, str(dest), signatures=signatures)


def measure(rounds: int) -> dict[str, list[tuple[float, int]]]:
    from bench.export_band import alternate_exports
    from tickercast.delivery import servable

    module = servable.write_saved_model

    def use(writer) -> Callable[[], None]:
        return lambda: setattr(servable, "write_saved_model", writer)

    arms = {"module": use(module), "objects": use(objects), "archive": use(archive)}
    return alternate_exports(rounds, arms)


def main() -> None:
    from bench.export_band import TICKERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    arms = measure(args.rounds)
    mod, obj, base = (
        statistics.median(s for s, _ in arms[k]) for k in ("module", "objects", "archive")
    )
    kib = {k: statistics.median(n for _, n in arms[k]) for k in arms}
    row = (
        f"| seconds per `export_saved_model` (write the SavedModel, reload it, check it "
        f"against predict) of nightly bundles ({', '.join(TICKERS)}; median of {args.rounds} "
        f"rounds x {len(TICKERS)} bundles per arm, arms alternating) | Keras' ExportArchive: "
        f"{base:.2f} s, {kib['archive']:.0f} KiB; a tf.Module tracking the Keras model: "
        f"{obj:.2f} s, {kib['objects']:.0f} KiB | a tf.Module tracking the network's "
        f"variables, both signatures calling one traced network: {mod:.2f} s, "
        f"{kib['module']:.0f} KiB (same signatures, checked by the export) | "
        f"{mod / base:.2f}x ExportArchive, {mod / obj:.2f}x the Keras-tracking module |"
    )
    from bench.results import publish

    publish("export_module", row, keep=not args.no_record)


if __name__ == "__main__":
    main()
