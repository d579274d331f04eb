"""The SavedModel that serves itself: raw prices in, forecasts in prices with bands out.

A bundle's `saved_model/` signature `serving_default` takes the raw window a TF Serving
client has (the lake's prices and volumes, oldest day first) and runs, as TensorFlow ops
in the graph, everything `tickercast predict` does in Python (`tickercast.delivery.
predict.forecast_next`): the features, the training-fit min-max scaling, the network (with
any shrinkage, which is folded into its last layer), the inverse target scaling, the
mapping of a log return to a price (last close * exp), and the split-conformal 80%/95%
bands scaled by the recent volatility of the window's closes, or, for a version shipping
a fitted variance recursion (GJR-GARCH(1,1)-t by default: `tickercast.evaluation.
garch_band`), that band's whole quantile grid in prices (`quantiles`) from the window's
last lookback + 20 daily returns, its 80%/95% levels the bands. A client re-implements
nothing. `export_saved_model` refuses to write a SavedModel whose answer on probe windows
differs from `forecast_next`'s.

The window is float64: prices ~1e3 held in float32 keep ~7 digits, which leaves a daily
log return of ~1e-2 with only ~4; in float64 the graph matches the Python path to ~1e-12
apart from the network, which runs in float32 in both.

A window TF Serving cannot answer honestly is refused with an InvalidArgumentError naming
the problem, never answered with NaN: a shape other than the declared [batch, rows,
fields] (named), a non-finite value, a price <= 0 (its log is -inf or NaN) or absurd
(> plausibility.MAX_PRICE), a negative volume, or a forecast that comes out non-finite,
non-positive or implausibly far from the window's last close (the plausibility gate's
threshold for the bundle's training volatility and horizon, fixed at export). The bands
are built in log space, as the conformal quantiles were calibrated: prices > 0.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tickercast import layout
from tickercast.atomic import write_json
from tickercast.choices import QUANTILES
from tickercast.delivery.bundle import (
    SAVED_MODEL,
    SERVING,
    SIGNATURE,
    Bundle,
    BundleError,
    sweep_stale_staging,
    write_bundle,
)
from tickercast.delivery.plausibility import MAX_PRICE, Refused, export_limit
from tickercast.delivery.predict import forecast_next, shipped_band
from tickercast.evaluation import distribution as dist
from tickercast.evaluation.conformal import (
    LINEAR_SPACE,
    MIN_VOLATILITY,
    SCALE,
    VOLATILITY_DAYS,
)
from tickercast.evaluation.garch_band import VARIANCE_FLOOR
from tickercast.modeling import inference
from tickercast.modeling.features import (
    ABS_TO_SIGMA,
    GARMAN_KLASS_C,
    NEEDS,
    PARKINSON_DIVISOR,
    READS,
    VOLATILITY_WINDOW,
)
from tickercast.modeling.preprocess import Preprocessing, is_log_return, output_width

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# The raw fields a window may hold, in this order (those a model needs, close always).
RAW_FIELDS = ("open", "high", "low", "close", "volume", "epoch_day")
PRICE_FIELDS = frozenset({"open", "high", "low", "close"})
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0, as pandas' day_of_week)
INPUT = "window"
SCALED_SIGNATURE = "scaled"  # the network alone, on scaled features (the old signature)
OUTPUT = "forecast"
SCALED_OUTPUT = "scaled_target"
# Relative agreement with predict.forecast_next that export demands on its probe windows.
RTOL = 1e-5


def _log_return(cols: dict[str, tf.Tensor]) -> tf.Tensor:
    import tensorflow as tf

    logs = tf.math.log(cols["close"])
    return logs[:, 1:] - logs[:, :-1]


def _rolling_std(series: tf.Tensor, window: int) -> tf.Tensor:
    """Sample standard deviation (ddof 1) of each `window` consecutive values, ending at
    every position from the `window`-th on (pandas' rolling(window).std())."""
    import tensorflow as tf

    frames = tf.signal.frame(series, window, 1, axis=-1)
    centred = frames - tf.reduce_mean(frames, axis=-1, keepdims=True)
    return tf.sqrt(tf.reduce_sum(centred * centred, axis=-1) / (window - 1))


def _log1p(values: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.math.log1p(values)


def _day_of_week(cols: dict[str, tf.Tensor]) -> tf.Tensor:
    import tensorflow as tf

    return tf.math.floormod(cols["epoch_day"] + EPOCH_WEEKDAY, 7.0) / 4.0


# Per feature (tickercast.modeling.features): the raw rows it needs before its first value
# and its builder in TF ops. A builder returns the series ending at the window's last row.
GRAPH_FEATURES: dict[str, tuple[int, Callable]] = {
    "close": (0, lambda c: c["close"]),
    "open": (0, lambda c: c["open"]),
    "high": (0, lambda c: c["high"]),
    "low": (0, lambda c: c["low"]),
    "volume": (0, lambda c: c["volume"]),
    "log_volume": (0, lambda c: _log1p(c["volume"])),
    "return": (1, lambda c: c["close"][:, 1:] / c["close"][:, :-1] - 1.0),
    "log_return": (1, _log_return),
    "volatility": (VOLATILITY_WINDOW, lambda c: _rolling_std(_log_return(c), VOLATILITY_WINDOW)),
    "day_of_week": (0, _day_of_week),
    "abs_log_return": (1, lambda c: _abs_log_return(c)),
    "parkinson": (0, lambda c: _parkinson(c)),
    "garman_klass": (0, lambda c: _garman_klass(c)),
}


def check_supported(spec: Preprocessing, intervals: dict, band: dict | None = None) -> None:
    """Refuse, naming it, a choice the serving graph does not implement (`band`: the
    shipped variance-recursion band, whose scale its intervals name)."""
    unknown = [f for f in spec.features if f not in GRAPH_FEATURES]
    if unknown:
        raise BundleError(
            f"the SavedModel cannot compute feature(s) {unknown} in its graph; "
            f"supported: {sorted(GRAPH_FEATURES)}"
        )
    output_width(spec.target, spec.horizon)  # an unknown target raises, naming it
    shipped = band.get("scale") if band else None
    for key, cal in intervals.items():
        if cal.get("scale") not in (None, SCALE, shipped):
            raise BundleError(
                f"the SavedModel cannot scale the {key}% band by {cal.get('scale')!r}; "
                f"supported: {SCALE!r} or none"
            )


def raw_fields(spec: Preprocessing) -> list[str]:
    """The raw fields of a serving window, in RAW_FIELDS order: close (the price mapping
    and the bands read it) plus whatever the features read."""
    wanted = {"close"}
    for name in spec.features:
        wanted.update(NEEDS.get(name, ()))
        wanted.update(READS.get(name, ()))
        if name == "day_of_week":
            wanted.add("epoch_day")
    return [f for f in RAW_FIELDS if f in wanted]


def window_rows(spec: Preprocessing, band: dict | None = None) -> int:
    """Rows of a serving window: `lookback` plus the features' warm-up, and at least the
    VOLATILITY_DAYS + 1 closes the bands' volatility reads, or the returns + 1 closes a
    shipped band's recursion reads (`band`)."""
    warmup = max(GRAPH_FEATURES[f][0] for f in spec.features)
    closes = int(band["params"]["returns"]) + 1 if band else VOLATILITY_DAYS + 1
    return max(spec.lookback + warmup, closes)


def band_keys(intervals: dict) -> list[str]:
    """The band levels in output order ("80", "95"): one place for serve, check, docs."""
    return sorted(intervals)


def _checked_shape(window: tf.Tensor, rows: int, fields: list[str]) -> tf.Tensor:
    """The window, or an InvalidArgumentError naming the declared shape: a signature of
    [None, rows, fields] alone lets TF Serving drop extra rows or ignore extra fields."""
    import tensorflow as tf

    expected = f"[batch, {rows}, {len(fields)}]: {rows} days, oldest first, of {fields}"
    shape = tf.shape(window)
    tf.debugging.assert_equal(shape[1], rows, message=f"window must have shape {expected}")
    tf.debugging.assert_equal(shape[2], len(fields), message=f"window must have shape {expected}")
    return window


def _plausible(forecast: tf.Tensor, last_close: tf.Tensor, max_log_move: float) -> tf.Tensor:
    """The forecast, or an InvalidArgumentError: non-finite, non-positive, or further than
    `max_log_move` (plausibility.max_log_move at export) from the window's last close."""
    import tensorflow as tf

    forecast = tf.debugging.check_numerics(forecast, "the model's forecast is not a finite number")
    tf.debugging.assert_positive(forecast, message="the model's forecast is not a positive price")
    if math.isfinite(max_log_move):
        move = tf.abs(tf.math.log(forecast / last_close))
        tf.debugging.assert_less_equal(
            move,
            tf.constant(max_log_move, tf.float64),
            message=f"the forecast is implausibly far from the last close (more than a "
            f"factor {math.exp(max_log_move):.3g})",
        )
    return forecast


def _no_jump(cols: dict[str, tf.Tensor], max_daily_move: float) -> None:
    """InvalidArgumentError when a daily move of the window's closes is beyond the gate's
    one-day threshold (a bad print), as `plausibility.check_closes` refuses it."""
    import tensorflow as tf

    if math.isfinite(max_daily_move):
        tf.debugging.assert_less_equal(
            tf.abs(_log_return(cols)),
            tf.constant(max_daily_move, tf.float64),
            message=f"implausible jump in the closes: a daily move beyond a factor "
            f"{math.exp(max_daily_move):.3g}",
        )


def _band(forecast: tf.Tensor, cal: dict, width: int, volatility: tf.Tensor) -> tuple:
    """(lower, upper) of one conformal level, as `conformal.interval` builds them: in log
    space F * exp(-+q * vol) (both prices > 0); legacy linear quantiles F -+ |F| q vol cut
    at zero; unbounded where no quantile was calibrated."""
    import tensorflow as tf

    q = np.array([_quantile(v) for v in cal.get("q", [])], dtype=np.float64)
    if q.size != width:
        q = np.full(width, math.inf)
    spread = tf.constant(np.where(np.isfinite(q), q, 0.0), tf.float64)
    if cal.get("scale") == SCALE:
        spread = spread * volatility
    if cal.get("space", LINEAR_SPACE) == LINEAR_SPACE:
        lower = tf.maximum(forecast - tf.abs(forecast) * spread, 0.0)
        upper = forecast + tf.abs(forecast) * spread
    else:
        lower, upper = forecast * tf.exp(-spread), forecast * tf.exp(spread)
    bounded = tf.constant(np.isfinite(q))
    return tf.where(bounded, lower, -math.inf), tf.where(bounded, upper, math.inf)


class Servable:
    """Builds the serving function of one model: `serve(window) -> {forecast, lower_<k>,
    upper_<k>}` in TF ops, from the bundle's preprocessing spec and conformal intervals."""

    def __init__(
        self,
        model: keras.Model,
        spec: Preprocessing,
        intervals: dict,
        max_log_move: float = math.inf,
        max_daily_move: float = math.inf,
        band: dict | None = None,
    ):
        check_supported(spec, intervals, band)
        self.model = model
        self.spec = spec
        self.intervals = intervals
        self.band = band
        self.fields = raw_fields(spec)
        self.rows = window_rows(spec, band)
        self.max_log_move = max_log_move
        self.max_daily_move = max_daily_move
        # scaled features -> scaled target; write_saved_model makes it one traced
        # function that both signatures call, so the network is traced once, not twice
        self.network: Callable = lambda scaled: model(scaled, training=False)

    def input_spec(self) -> tf.TensorSpec:
        import tensorflow as tf

        return tf.TensorSpec([None, self.rows, len(self.fields)], tf.float64, name=INPUT)

    def scaled_input_spec(self) -> tf.TensorSpec:
        import tensorflow as tf

        shape = [None, self.spec.lookback, len(self.spec.features)]
        return tf.TensorSpec(shape, tf.float32, name=INPUT)

    def _checked_columns(self, window: tf.Tensor) -> dict[str, tf.Tensor]:
        import tensorflow as tf

        window = _checked_shape(window, self.rows, self.fields)
        window = tf.debugging.check_numerics(window, "window holds NaN or infinite values")
        cols = {name: window[:, :, j] for j, name in enumerate(self.fields)}
        for name in self.fields:
            if name in PRICE_FIELDS:
                tf.debugging.assert_positive(
                    cols[name], message=f"window field {name} must be > 0 (a price)"
                )
                tf.debugging.assert_less_equal(
                    cols[name],
                    tf.constant(MAX_PRICE, tf.float64),
                    message=f"window field {name} must be <= {MAX_PRICE:g} (an absurd price)",
                )
            elif name == "volume":
                tf.debugging.assert_non_negative(
                    cols[name], message="window field volume must be >= 0"
                )
        return cols

    def _scaled_inputs(self, window: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """A raw window's checked columns and the network's input: the features of the
        last `lookback` days, scaled as in training (float32), for the point and quantile
        heads."""
        import tensorflow as tf

        spec, lookback = self.spec, self.spec.lookback
        cols = self._checked_columns(window)
        features = tf.stack(
            [GRAPH_FEATURES[name][1](cols)[:, -lookback:] for name in spec.features], axis=-1
        )
        lo, span = spec.feature_scaler.offset_and_span()
        scaled = (features - tf.constant(lo, tf.float64)) / tf.constant(span, tf.float64)
        return cols, tf.cast(scaled, tf.float32)

    def serve(self, window: tf.Tensor) -> dict[str, tf.Tensor]:
        """The forecast in prices and its bands from a raw window [batch, rows, fields]."""
        import tensorflow as tf

        spec, (cols, scaled) = self.spec, self._scaled_inputs(window)
        out = tf.cast(self.network(scaled), tf.float64)
        width = output_width(spec.target, spec.horizon)
        t_lo, t_span = spec.target_scaler.offset_and_span()
        values = tf.reshape(out, [-1, width]) * tf.constant(t_span, tf.float64) + tf.constant(
            t_lo, tf.float64
        )
        last_close = cols["close"][:, -1:]
        forecast = last_close * tf.exp(values) if is_log_return(spec.target) else values
        forecast = tf.debugging.check_numerics(
            forecast, "the model's forecast is not a finite number"
        )
        _no_jump(cols, self.max_daily_move)
        result = {OUTPUT: _plausible(forecast, last_close, self.max_log_move)}
        if self.band:
            grid = band_grid(self.band, _log_return(cols), result[OUTPUT], spec, width)
            return {**result, QUANTILES_OUTPUT: grid, **grid_bounds(grid, self.intervals)}
        returns = _log_return(cols)[:, -VOLATILITY_DAYS:]
        volatility = tf.maximum(_rolling_std(returns, VOLATILITY_DAYS), MIN_VOLATILITY)
        for key in band_keys(self.intervals):
            result[f"lower_{key}"], result[f"upper_{key}"] = _band(
                forecast, self.intervals[key], width, volatility
            )
        return result

    def serve_scaled(self, window: tf.Tensor) -> dict[str, tf.Tensor]:
        """The network alone: scaled features in, the scaled target out."""
        return {SCALED_OUTPUT: self.network(window)}


def _quantile(value) -> float:
    """A recorded conformal quantile; None or NaN (too few calibration windows) is an
    unbounded band, as `predict` reports it (no bound)."""
    if value is None or not math.isfinite(float(value)):
        return math.inf
    return float(value)


def write_saved_model(servable: Servable, dest: Path) -> None:
    """The SavedModel: `serving_default` (raw window) and `scaled` (the network alone).

    A `tf.Module` that tracks the network's variables (and the quantile head's), saved by
    `tf.saved_model.save`: the same signatures as Keras' ExportArchive wrote, without its
    second pass listing the variables every endpoint uses (bench/RESULTS.md
    `export_module`). It tracks the variables alone, as ExportArchive's variable
    collections do, not the Keras objects: the signatures are all a server loads, and
    saving (and loading back, for the check) walked every layer's tracked attributes.
    Both signatures call one traced function of the network (`servable.network`), so its
    LSTMs' loops are traced and stored once, not once per signature."""
    import tensorflow as tf

    module = tf.Module()
    module.network_variables = network_variables(servable)
    servable.network = tf.function(servable.network, input_signature=[servable.scaled_input_spec()])
    module.serve = tf.function(servable.serve, input_signature=[servable.input_spec()])
    module.serve_scaled = tf.function(
        servable.serve_scaled, input_signature=[servable.scaled_input_spec()]
    )
    signatures = {SIGNATURE: module.serve, SCALED_SIGNATURE: module.serve_scaled}
    tf.saved_model.save(module, str(dest), signatures=signatures)


def network_variables(servable: Servable) -> list:
    """Every variable the serving functions read, once each: the network's, and a
    quantile head's (which shares the trunk's)."""
    layers = [servable.model]
    if isinstance(servable, QuantileServable):
        layers.append(servable.head)
    unique: dict[int, object] = {}
    for layer in layers:
        for variable in layer.weights:
            unique.setdefault(id(variable), variable)
    return list(unique.values())


# ----------------------------------------------------------------------- probe windows


def probe_prices(spec: Preprocessing, rows: int, seed: int, metadata: dict) -> pd.DataFrame:
    """Plausible lake rows for checking an export: a random walk of closes inside the
    training ranges where the features have one (else the training closes' range the
    bundle records for the plausibility gate), consistent open/high/low, volumes, and
    weekdays ending on the last training day."""
    rng = np.random.default_rng(seed)
    bounds = zip(spec.feature_scaler.min, spec.feature_scaler.max, strict=True)
    ranges = dict(zip(spec.features, bounds, strict=True))
    lo, hi = ranges.get("close", _recorded_closes(metadata))
    start = lo + (hi - lo) * rng.uniform(0.3, 0.7)
    close = start * np.exp(np.cumsum(rng.normal(0.0, 0.01, rows)))
    open_ = close * np.exp(rng.normal(0.0, 0.005, rows))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.0, 0.01, rows))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.0, 0.01, rows))
    v_lo, v_hi = ranges.get("volume", (1e6, 1e7))
    if "log_volume" in ranges and "volume" not in ranges:
        v_lo, v_hi = np.expm1(ranges["log_volume"][0]), np.expm1(ranges["log_volume"][1])
    volume = np.round(rng.uniform(v_lo, v_hi, rows))
    days = pd.bdate_range(end=pd.Timestamp(spec.last_day), periods=rows)
    return pd.DataFrame(
        {
            "date": days.date,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def _recorded_closes(metadata: dict) -> tuple[float, float]:
    """The training closes' range the bundle records (plausibility), or a generic share's:
    probes of a $9-16 ticker at ~$100 were refused by predict as far outside its training
    closes, while the graph (which cannot know the day it serves) answered them, and such
    a ticker could never be exported (a 500-ticker night, measured)."""
    recorded = metadata.get("plausibility") or {}
    if recorded.get("close_min") and recorded.get("close_max"):
        return float(recorded["close_min"]), float(recorded["close_max"])
    return 50.0, 150.0


def raw_window(prices: pd.DataFrame, fields: list[str], rows: int) -> np.ndarray:
    """The last `rows` lake rows as a serving window [rows, fields] (float64)."""
    tail = prices.iloc[-rows:]
    columns = []
    for name in fields:
        if name == "epoch_day":
            days = pd.to_datetime(tail["date"]).to_numpy(dtype="datetime64[D]")
            columns.append((days - np.datetime64("1970-01-01", "D")).astype(np.float64))
        else:
            columns.append(tail[name].to_numpy(dtype=np.float64))
    return np.stack(columns, axis=1)


def _expected(
    model: keras.Model, spec: Preprocessing, metadata: dict, prices: pd.DataFrame, head=None
) -> dict:
    """What `tickercast predict` answers for these lake rows, as arrays [1, width] (and a
    quantile head's or shipped band's grid [1, width, len(QUANTILES)])."""
    bundle = Bundle(Path("0"), model, spec, metadata, head)
    rows = forecast_next(bundle, prices, "probe")
    out = {OUTPUT: np.array([[r[OUTPUT] for r in rows]])}
    if head is not None or shipped_band(bundle) is not None:
        out[QUANTILES_OUTPUT] = np.array([[r[QUANTILES_OUTPUT] for r in rows]])
    for key in band_keys(metadata.get("intervals") or {}):
        for side, name in (("lo", "lower"), ("hi", "upper")):
            values = [r.get(f"{side}_{key}") for r in rows]
            sign = -1 if side == "lo" else 1
            out[f"{name}_{key}"] = np.array([[sign * math.inf if v is None else v for v in values]])
    return out


def verify_saved_model(dest: Path, servable: Servable, metadata: dict) -> None:
    """Reload the SavedModel as TF Serving would and refuse it unless `serving_default`
    answers two probe windows as `forecast_next` does, and `scaled` as the network does."""
    import tensorflow as tf

    model, spec = servable.model, servable.spec
    loaded = tf.saved_model.load(str(dest))
    # predict gets more history than the window holds: features look back a bounded number
    # of days, so the answer must be the same
    history = servable.rows + VOLATILITY_DAYS + 1
    probes = [probe_prices(spec, history, seed, metadata) for seed in (0, 1)]
    head = servable.head if isinstance(servable, QuantileServable) else None
    for prices in probes:
        window = raw_window(prices, servable.fields, servable.rows)[None]
        try:
            expected = _expected(model, spec, metadata, prices, head)
        except Refused:  # predict refuses this forecast (implausible): so must the graph
            expected = None
        try:
            served = loaded.signatures[SIGNATURE](**{INPUT: tf.constant(window)})
        except tf.errors.InvalidArgumentError as exc:
            if expected is None and "not a finite number" not in exc.message:
                continue  # both refuse an implausible forecast: they agree (a served
                # forecast is checked again); a network that overflows is never exported
            raise BundleError(f"SavedModel refused a probe window: {exc.message}") from exc
        if expected is None:
            raise BundleError("SavedModel answered a probe window tickercast predict refuses")
        for name, want in expected.items():
            got = np.asarray(served[name])
            if not np.allclose(got, want, rtol=RTOL, atol=0.0, equal_nan=False):
                raise BundleError(
                    f"SavedModel output {name!r} differs from tickercast predict's on a probe "
                    f"window: {got.ravel()[:3]} vs {want.ravel()[:3]}"
                )
    scaled = np.random.default_rng(0).random((2, spec.lookback, len(spec.features)))
    scaled = scaled.astype(np.float32)
    out = loaded.signatures[SCALED_SIGNATURE](**{INPUT: tf.constant(scaled)})[SCALED_OUTPUT]
    keras_out = inference.predict(model, scaled)
    if not np.allclose(np.asarray(out), keras_out, rtol=1e-4, atol=1e-5):
        raise BundleError("SavedModel signature 'scaled' does not reproduce the Keras model")


def _describe(tensor_spec: tf.TensorSpec) -> dict:
    return {"dtype": tensor_spec.dtype.name, "shape": tensor_spec.shape.as_list()}


def serving_description(servable: Servable) -> dict:
    """serving.json: what a TF Serving client sends and gets back."""
    spec, fields, rows = servable.spec, servable.fields, servable.rows
    width = output_width(spec.target, spec.horizon)
    outputs = {OUTPUT: {"dtype": "float64", "shape": [None, width]}}
    for key in band_keys(servable.intervals):
        for side in ("lower", "upper"):
            outputs[f"{side}_{key}"] = {"dtype": "float64", "shape": [None, width]}
    return {
        "format": "tf_saved_model",
        "path": SAVED_MODEL,
        "tag": "serve",
        "signature": SIGNATURE,
        "inputs": {INPUT: _describe(servable.input_spec())},
        "fields": fields,
        "rows": rows,
        "window": (
            f"{rows} consecutive trading days, oldest first, one row per day holding "
            f"{fields} in that order: prices as stored in the lake (split-adjusted), "
            "volume in shares, epoch_day = days since 1970-01-01. Every transform "
            "(features, scaling, network, target mapping, bands) runs in the graph"
        ),
        "outputs": outputs,
        "output_meaning": (
            f"forecast: the {spec.target} target in prices ({width} per window); "
            "lower_<k>/upper_<k>: the split-conformal k% band, in log space so both "
            "bounds are prices > 0: forecast * exp(-+q * (std of the window's last "
            f"{VOLATILITY_DAYS} daily log returns of close, at least {MIN_VOLATILITY})); "
            "-inf/+inf where too few calibration windows gave no quantile"
        ),
        "refuses": (
            'an InvalidArgumentError naming the problem (TF Serving answers {"error": '
            "...}), never NaN: a window of another shape than [batch, rows, fields], NaN "
            f"or infinite values, a price <= 0 or above {MAX_PRICE:g}, a volume < 0, or a "
            "forecast that is not finite, not positive, or implausibly far from the last "
            "close (tickercast.delivery.plausibility's threshold over the horizon)"
        ),
        "signatures": {
            SCALED_SIGNATURE: {
                "inputs": {INPUT: _describe(servable.scaled_input_spec())},
                "outputs": {SCALED_OUTPUT: {"dtype": "float32", "shape": [None, width]}},
                "meaning": (
                    "the network alone: features min-max scaled with preprocessing.json "
                    "feature_scaler, lookback days; output the scaled target "
                    "(target_scaler inverse; a log return for *_log_return targets)"
                ),
            }
        },
        "features": list(spec.features),
        "lookback": spec.lookback,
        "horizon": spec.horizon,
        "target": spec.target,
    }


def export_saved_model(model: keras.Model, spec: Preprocessing, metadata: dict, dest: Path) -> dict:
    """Write the self-serving SavedModel, check it against `tickercast predict`, and return
    serving.json's content."""
    band = shipped_band(Bundle(Path("0"), model, spec, metadata))
    servable = servable_for(model, spec, metadata.get("intervals") or {}, band)
    # the plausibility gate's thresholds for this bundle, built into the graph
    servable.max_log_move = export_limit(metadata, spec.horizon)
    servable.max_daily_move = export_limit(metadata, 1)
    write_saved_model(servable, dest)
    verify_saved_model(dest, servable, metadata)
    return quantile_description(servable, serving_description(servable))


def build_bundle(
    data_dir: str | Path,
    name: str,
    files: dict[str, Path],
    metadata: dict,
    model_path: Path,
    spec: Preprocessing,
) -> Path:
    """`write_bundle` plus the TF SavedModel and serving.json made from `model_path`."""
    import keras

    staging = layout.export_staging(data_dir)
    staging.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(staging, ".export-")
    with tempfile.TemporaryDirectory(dir=staging, prefix=".export-") as tmp:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
        serving = export_saved_model(model, spec, metadata, Path(tmp) / SAVED_MODEL)
        write_json(Path(tmp) / SERVING, serving)
        files = {**files, SAVED_MODEL: Path(tmp) / SAVED_MODEL, SERVING: Path(tmp) / SERVING}
        return write_bundle(data_dir, name, files, {**metadata, "serving": serving})


# ------------------------------------------------------------ range features and quantiles


def _abs_log_return(cols: dict[str, tf.Tensor]) -> tf.Tensor:
    import tensorflow as tf

    return tf.abs(_log_return(cols))


def _range_fallback(cols: dict[str, tf.Tensor], ok: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """A range estimator's value where the day's range is usable, else |log return| *
    sqrt(pi / 2) (tickercast.modeling.features); the window's first row has no return (0
    there: pandas drops that row, so it never reaches a model's lookback)."""
    import tensorflow as tf

    fallback = _abs_log_return(cols) * ABS_TO_SIGMA
    fallback = tf.concat([tf.zeros_like(fallback[:, :1]), fallback], axis=1)
    return tf.where(ok, value, fallback)


def _positive(values: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.maximum(values, 1e-300)  # the unselected branch of tf.where stays finite


def _parkinson(cols: dict[str, tf.Tensor]) -> tf.Tensor:
    import tensorflow as tf

    high, low = cols["high"], cols["low"]
    ok = (high > 0) & (low > 0) & (high >= low)
    value = tf.abs(tf.math.log(_positive(high) / _positive(low))) / PARKINSON_DIVISOR
    return _range_fallback(cols, ok, value)


def _garman_klass(cols: dict[str, tf.Tensor]) -> tf.Tensor:
    import tensorflow as tf

    open_, high, low, close = cols["open"], cols["high"], cols["low"], cols["close"]
    hl = tf.math.log(_positive(high) / _positive(low))
    co = tf.math.log(_positive(close) / _positive(open_))
    variance = 0.5 * hl * hl - GARMAN_KLASS_C * co * co
    ok = (open_ > 0) & (high > 0) & (low > 0) & (high >= low) & (variance >= 0)
    return _range_fallback(cols, ok, tf.sqrt(tf.maximum(variance, 0.0)))


QUANTILES_OUTPUT = "quantiles"  # the version's grid in prices, as predict's rows


class QuantileServable(Servable):
    """A network with a quantile head: `serve` also answers `quantiles`, the calibrated
    grid [batch, outputs, len(QUANTILES)] in prices, as `predict` does."""

    def __init__(self, model: keras.Model, spec: Preprocessing, intervals: dict, head):
        super().__init__(model, spec, intervals)
        self.head = head

    def serve(self, window: tf.Tensor) -> dict[str, tf.Tensor]:
        result = super().serve(window)
        result[QUANTILES_OUTPUT] = self.serve_quantiles(window)
        return result

    def serve_quantiles(self, window: tf.Tensor) -> tf.Tensor:
        """The head's scaled grid -> target scaler inverse -> last close * exp (log-return
        targets): every step increasing, so the grid stays ordered."""
        import tensorflow as tf

        spec, (cols, scaled) = self.spec, self._scaled_inputs(window)
        out = tf.cast(self.head(scaled, training=False), tf.float64)
        width = output_width(spec.target, spec.horizon)
        t_lo, t_span = spec.target_scaler.offset_and_span()
        values = tf.reshape(out, [-1, width, len(QUANTILES)]) * tf.constant(
            np.reshape(t_span, (1, -1, 1)), tf.float64
        ) + tf.constant(np.reshape(t_lo, (1, -1, 1)), tf.float64)
        if is_log_return(spec.target):
            values = cols["close"][:, -1:, None] * tf.exp(values)
        return tf.debugging.check_numerics(values, "the model's quantiles are not finite numbers")


def servable_for(
    model: keras.Model, spec: Preprocessing, intervals: dict, band: dict | None = None
) -> Servable:
    """The servable of a loaded model: a quantile head's serves its grid as well, and so
    does a point head's shipped variance-recursion band (`band`, its record)."""
    from tickercast.modeling.models import split_heads

    point, head = split_heads(model)
    if head is None:
        return Servable(point, spec, intervals, band=band)
    return QuantileServable(point, spec, intervals, head)


def quantile_description(servable: Servable, description: dict) -> dict:
    """serving.json with the `quantiles` output described (a quantile head, or a shipped
    variance-recursion band)."""
    if not isinstance(servable, QuantileServable) and not servable.band:
        return description
    width = output_width(servable.spec.target, servable.spec.horizon)
    outputs = {
        **description["outputs"],
        QUANTILES_OUTPUT: {"dtype": "float64", "shape": [None, width, len(QUANTILES)]},
    }
    meaning = (
        f"{description['output_meaning']}; quantiles: per output the network's calibrated "
        f"(CQR) quantiles in prices at levels {list(QUANTILES)}, never decreasing, the 0.5 "
        "level equal to forecast"
    )
    if servable.band:
        meaning = band_meaning(servable.band, servable.rows)
    return {
        **description,
        "outputs": outputs,
        "output_meaning": meaning,
        "quantile_levels": list(QUANTILES),
    }


# ------------------------------------------------------------------ the shipped band


def _band_variance(params: dict, returns: tf.Tensor, horizon: int) -> tf.Tensor:
    """`garch_band.variance_path` in TF ops: the recursion over the window's last
    `returns` daily log returns (all finite: the window is checked), then the k-step
    forecasts; [batch, horizon]."""
    import tensorflow as tf

    mu, omega, alpha, gamma, beta = (
        float(params[k]) for k in ("mu", "omega", "alpha", "gamma", "beta")
    )
    floor = tf.constant(VARIANCE_FLOOR, tf.float64)
    eps = returns[:, -int(params["returns"]) :] - mu
    weight = alpha + gamma * tf.cast(eps < 0, tf.float64)
    shock = omega + weight * eps * eps  # [batch, days], each day's term but beta * s2
    start = tf.ones_like(eps[:, 0]) * float(params["start_variance"])
    # a loop in the graph, not unrolled: the 80-day recursion unrolled was ~600 ops that
    # tracing the serving function (twice per export) spent ~1.4 s building
    s2 = tf.foldl(lambda s2, day: tf.maximum(day + beta * s2, floor), tf.transpose(shock), start)
    path, persistence = [], alpha + gamma / 2 + beta
    for _ in range(horizon):
        path.append(s2)
        s2 = tf.maximum(omega + persistence * s2, floor)
    return tf.stack(path, axis=1)


def band_grid(
    band: dict, returns: tf.Tensor, forecast: tf.Tensor, spec: Preprocessing, width: int
) -> tf.Tensor:
    """The shipped band's grid in prices [batch, outputs, len(QUANTILES)], as
    `distribution.band_from_returns` builds it: the variance path mapped onto the target
    (`variance_weights`), forecast * exp(-+q * scale) with the nested conformal q."""
    import tensorflow as tf

    weights = dist.target_weights(spec.target, spec.horizon, width)
    daily = _band_variance(band["params"], returns, spec.horizon)
    v = tf.constant(dist.variance_weights(weights).T, tf.float64)
    scale = tf.sqrt(tf.matmul(daily, v))  # [batch, outputs]
    q = dist.nested(np.asarray(band["q"], dtype=np.float64))
    signed = np.zeros((width, len(QUANTILES)))
    for p, (lo, hi) in enumerate(dist.PAIRS):
        signed[:, lo], signed[:, hi] = -q[:, p], q[:, p]
    grid = forecast[:, :, None] * tf.exp(tf.constant(signed, tf.float64) * scale[:, :, None])
    return tf.debugging.check_numerics(grid, "the band's quantiles are not finite numbers")


def grid_bounds(grid: tf.Tensor, intervals: dict) -> dict[str, tf.Tensor]:
    """lower_<k>/upper_<k> from the shipped band's grid, as predict's `grid_bands`."""
    out = {}
    for key, (lower, upper) in dist.interval_bounds(grid, band_keys(intervals)).items():
        out[f"lower_{key}"], out[f"upper_{key}"] = lower, upper
    return out


def band_meaning(band: dict, rows: int) -> str:
    """serving.json's words for a shipped variance-recursion band's outputs."""
    params = band["params"]
    return (
        f"forecast: the target in prices; quantiles: per output the {band['scale']} band "
        f"in prices at levels {list(QUANTILES)} (never decreasing, the 0.5 level equal to "
        f"forecast): forecast * exp(-+q * scale), scale the target's standard deviation "
        f"from the variance recursion (parameters in metadata, fit on the training rows) "
        f"over the window's last {params['returns']} daily log returns of close ({rows} "
        "rows), q split-conformal on the validation split; lower_<k>/upper_<k>: its k% "
        "levels (0.1/0.9, 0.025/0.975)"
    )
