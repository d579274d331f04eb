"""The LSTM family, built only from stock Keras layers so bundles load in safe mode.

LSTM layers keep Keras' defaults (tanh/sigmoid, bias, no recurrent dropout, no unroll),
which is what makes them eligible for the fused cuDNN kernel on a GPU; `cudnn_problems`
names anything in a built model that breaks that, so training can warn about it. A
one-thread worker's CPU fits unroll the time loops (`unroll_on_cpu`); saved models keep
the loop (`rolled`).

A global model with a ticker embedding takes two inputs (`window`, `ticker`).
`bind_ticker` turns it into the single-input model of one ticker (the embedding row
becomes a constant), so evaluation, bundles and inference never need the ticker id.

Seeds: given `seed` (see `model_seed`), every random part of a model (each initializer,
each LSTM's and Dropout's own seed generator) gets an explicit seed derived from it and
the layer's fixed name (`LayerSeeds`). Keras would otherwise draw each layer's seed from
Python's process-global `random`, so any other thread drawing from it (Prefect, a library,
a second fit) would change the initial weights of a "seeded" fit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from tickercast.choices import HEADS, MIN_UNITS, NETWORKS, QUANTILES

MODELS = NETWORKS
CONV_KERNEL = 3
FORECAST = "forecast"  # the point forecast (a quantile head's median); shrinkage's layer
QUANTILE_OUTPUT = "quantiles"  # a quantile head's output: (batch, outputs, len(QUANTILES))
CALIBRATION = "quantile_calibration"  # CQR's per-band shifts (tickercast.modeling.quantiles)
MEDIAN = QUANTILES.index(0.5)
SEED_MAX = 2**31 - 1


def _digest(*parts: object) -> int:
    """A 31-bit integer from `parts`, the same in every process and Python version
    (unlike hash(), which is salted per process for strings)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & SEED_MAX


def model_seed(seed: int, ticker: str | None = None) -> int:
    """The base seed of one ticker's network: the run's seed and the ticker together, so
    two tickers of one run start from different weights and the same (seed, ticker)
    always starts from the same ones."""
    return _digest("tickercast-model", int(seed), ticker or "")


class LayerSeeds:
    """Explicit seeds for a model's random parts, derived from one base seed and each
    part's name; `base=None` keeps Keras' own unseeded defaults (drawn from `random`)."""

    def __init__(self, base: int | None):
        self.base = base

    def __call__(self, layer: str, part: str) -> int | None:
        return None if self.base is None else _digest(self.base, layer, part)

    def initializer(self, kind: str, layer: str, part: str):
        """The Keras initializer `kind` ("glorot_uniform", "orthogonal", "uniform"),
        seeded for (layer, part); the plain name when unseeded (Keras' default config)."""
        import keras

        classes = {
            "glorot_uniform": keras.initializers.GlorotUniform,
            "orthogonal": keras.initializers.Orthogonal,
            "uniform": lambda seed: keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
        }
        if self.base is None:
            return kind
        return classes[kind](seed=self(layer, part))


def min_units(name: str) -> int:
    """How many entries `units` needs for an architecture (its layers' sizes)."""
    return MIN_UNITS.get(name, 1)


class _Layers:
    """The trunk's layer makers, sharing one L2 regularizer, the seeds and the LSTM
    options; layer names are fixed so weights can move between models. `seed` (optional)
    seeds every random part explicitly (`LayerSeeds`)."""

    def __init__(
        self, dropout: float, l2: float, rdrop: float, use_cudnn: bool | str, seed: int | None
    ):
        import keras

        self.keras = keras
        self.reg = keras.regularizers.L2(l2) if l2 > 0 else None
        self.seeds = LayerSeeds(seed)
        self.seeded = seed is not None
        self.dropout, self.rdrop, self.use_cudnn = dropout, rdrop, use_cudnn

    def lstm(self, size: int, i: int, sequences: bool, backwards: bool = False):
        name = f"{'backward_' if backwards else ''}lstm_{i}"
        return self.keras.layers.LSTM(
            size,
            return_sequences=sequences,
            kernel_regularizer=self.reg,
            recurrent_dropout=self.rdrop,
            use_cudnn=self.use_cudnn,
            go_backwards=backwards,
            kernel_initializer=self.seeds.initializer("glorot_uniform", name, "kernel"),
            recurrent_initializer=self.seeds.initializer("orthogonal", name, "recurrent_kernel"),
            seed=self.seeds(name, "dropout"),
            name=name,
        )

    def dense(self, units: int, name: str, **kwargs):
        init = self.seeds.initializer("glorot_uniform", name, "kernel")
        return self.keras.layers.Dense(
            units, kernel_regularizer=self.reg, kernel_initializer=init, name=name, **kwargs
        )

    def drop(self, i: int):
        if self.dropout <= 0:
            return None
        name = f"dropout_{i}"
        return self.keras.layers.Dropout(self.dropout, seed=self.seeds(name, "dropout"), name=name)

    def stack(self, x, sizes: list[int], all_sequences: bool = False, bidirectional: bool = False):
        for i, size in enumerate(sizes):
            sequences = all_sequences or i < len(sizes) - 1
            layer = self.lstm(size, i, sequences)
            if bidirectional:
                # its own backward layer: a copy of the forward one would repeat its seeds
                backward = self.lstm(size, i, sequences, backwards=True) if self.seeded else None
                layer = self.keras.layers.Bidirectional(
                    layer, backward_layer=backward, name=f"bilstm_{i}"
                )
            x = layer(x)
            if (d := self.drop(i)) is not None:
                x = d(x)
        return x

    def conv_lstm(self, x, units: list[int]):
        """Causal padding: output step t sees inputs <= t only, like the LSTM after it."""
        x = self.keras.layers.Conv1D(
            units[0],
            CONV_KERNEL,
            padding="causal",
            activation="relu",
            kernel_regularizer=self.reg,
            kernel_initializer=self.seeds.initializer("glorot_uniform", "conv_0", "kernel"),
            name="conv_0",
        )(x)
        return self.stack(x, units[1:])

    def attention(self, x, units: list[int]):
        """Every step of the LSTM stack, weighted by a learned softmax over the steps."""
        layers = self.keras.layers
        seq = self.stack(x, units, all_sequences=True)
        hidden = self.dense(units[-1], "attention_hidden", activation="tanh")(seq)
        score = layers.Dense(
            1,
            kernel_initializer=self.seeds.initializer(
                "glorot_uniform", "attention_score", "kernel"
            ),
            name="attention_score",
        )(hidden)
        weights = layers.Softmax(axis=1, name="attention_weights")(score)
        context = layers.Dot(axes=1, name="attention_context")([weights, seq])
        return layers.Flatten(name="context")(context)


# Each architecture's trunk from the shared layer makers
_TRUNKS = {
    "lstm": lambda make, x, units: make.stack(x, units[:1]),
    "stacked_lstm": lambda make, x, units: make.stack(x, units),
    "bilstm": lambda make, x, units: make.stack(x, units, bidirectional=True),
    "cnn_lstm": lambda make, x, units: make.conv_lstm(x, units),
    "lstm_attention": lambda make, x, units: make.attention(x, units),
}


def _body(
    x,
    name: str,
    units: list[int],
    dropout: float,
    l2: float,
    rdrop: float,
    use_cudnn: bool | str = "auto",
    seed: int | None = None,
):
    """The shared trunk of architecture `name` (the heads go on top of it)."""
    if name not in _TRUNKS:
        raise ValueError(f"unknown model {name!r}; valid: {list(MODELS)}")
    return _TRUNKS[name](_Layers(dropout, l2, rdrop, use_cudnn, seed), x, units)


def _point(x, outputs: int, l2: float, seed: int | None = None):
    """The forecast layer (shrinkage folds into it: tickercast.modeling.shrink)."""
    import keras

    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    # float32 output even under mixed precision: the loss and the forecast stay exact.
    init = LayerSeeds(seed).initializer("glorot_uniform", FORECAST, "kernel")
    return keras.layers.Dense(
        outputs, kernel_regularizer=reg, kernel_initializer=init, dtype="float32", name=FORECAST
    )(x)


def build_model(
    name: str,
    lookback: int,
    n_features: int,
    units: list[int],
    learning_rate: float = 1e-3,
    clipvalue: float = 1.0,
    outputs: int = 1,
    dropout: float = 0.0,
    l2: float = 0.0,
    recurrent_dropout: float = 0.0,
    n_tickers: int = 0,
    ticker_embedding: int = 0,
    bound_ticker_vector=None,
    compile: bool = True,
    use_cudnn: bool | str = "auto",
    seed: int | None = None,
    head: str = "point",
):
    """Default (the tutorial): LSTM(64, seq) -> LSTM(32) -> Dense(1), Adam(clipvalue=1).

    `ticker_embedding > 0` (global mode) adds a `ticker` input whose learned vector is
    appended to every time step's features. `bound_ticker_vector` builds the one-ticker
    version instead: same trunk, the vector as a constant. `use_cudnn=False` keeps the LSTM
    off the cuDNN kernel (training pinned to the CPU on a machine that has a GPU).
    `seed` (e.g. `model_seed(config seed, ticker)`) seeds every layer explicitly, so the
    initial weights depend on it alone, whatever other threads draw from `random`;
    None leaves Keras' unseeded defaults.
    `head="quantile"` outputs the QUANTILES grid per output (`_quantile_head`), trained
    on the pinball loss.
    """
    import keras

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {list(MODELS)}")
    if len(units) < min_units(name):
        raise ValueError(f"model {name!r} needs at least {min_units(name)} entries in units")
    window, x, inputs = _inputs(
        lookback, n_features, n_tickers, ticker_embedding, bound_ticker_vector, seed
    )
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {list(HEADS)}")
    trunk = _body(x, name, list(units), dropout, l2, recurrent_dropout, use_cudnn, seed)
    out = _point(trunk, outputs, l2, seed)
    if head == "quantile":
        out = _quantile_head(trunk, out, outputs, window, seed)
    model = keras.Model(inputs if len(inputs) > 1 else window, out, name=name)
    if head == "quantile":
        _set_fixed_weights(model, outputs)
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate, clipvalue=clipvalue),
            loss=pinball_loss() if head == "quantile" else "mse",
        )
    return model


def _inputs(
    lookback: int,
    n_features: int,
    n_tickers: int,
    ticker_embedding: int,
    bound_ticker_vector,
    seed: int | None,
):
    """(the `window` input, what the trunk reads, the model's inputs): the window alone,
    or with a ticker's vector on every step: a `ticker` input's learned embedding (global
    mode) or one ticker's vector as a constant (`bind_ticker`)."""
    import keras

    window = keras.Input(shape=(lookback, n_features), name="window")
    inputs: list = [window]
    x = window
    if bound_ticker_vector is not None:
        vector = np.asarray(bound_ticker_vector, dtype="float32")
        constant = keras.layers.Dense(
            len(vector),
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(vector),
            trainable=False,
            name="ticker_constant",
        )(window)  # zero kernel: every step gets exactly the ticker's vector
        x = keras.layers.Concatenate(name="with_ticker")([window, constant])
    elif ticker_embedding > 0:
        if n_tickers < 1:
            raise ValueError("a ticker embedding needs n_tickers >= 1")
        ticker = keras.Input(shape=(), dtype="int32", name="ticker")
        inputs.append(ticker)
        vector = keras.layers.Embedding(
            n_tickers,
            ticker_embedding,
            embeddings_initializer=LayerSeeds(seed).initializer(
                "uniform", "ticker_embedding", "embeddings"
            ),
            name="ticker_embedding",
        )(ticker)
        steps = keras.layers.RepeatVector(lookback, name="ticker_steps")(vector)
        x = keras.layers.Concatenate(name="with_ticker")([window, steps])
    return window, x, inputs


def bind_ticker(model, index: int, **build_kwargs):
    """The single-input model of ticker `index` from a global model with an embedding.

    Predictions equal the global model's for that ticker: the trunk's weights are copied
    by layer name and the embedding row becomes a constant.
    """
    table = model.get_layer("ticker_embedding").get_weights()[0]
    kwargs = {k: v for k, v in build_kwargs.items() if k not in ("n_tickers", "ticker_embedding")}
    bound = build_model(bound_ticker_vector=table[index], compile=False, **kwargs)
    for layer in bound.layers:
        if layer.weights and layer.name != "ticker_constant":
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return bound


def unroll_on_cpu(model) -> None:
    """Unrolls every LSTM's time loop of a network about to train on the CPU.

    The same arithmetic as Keras' `while` loop (the same losses, weights within float
    rounding), without the loop's per-step control flow: on this 2-vCPU machine two
    one-thread processes training at once (the nightly's Dask workers) ran 1.30x the
    windows/s of the loop (bench/RESULTS.md, "production shape"). The price is the first
    trace in a process, ~8 s more than the loop's at 60 steps: worth it only for a
    process that fits network after network (train.py unrolls on one-thread workers).
    Not for a GPU: an unrolled layer cannot use cuDNN's fused kernel. Needs a fixed
    lookback, which every network here has.
    """
    for layer in lstm_layers(model):
        layer.unroll = True


@contextmanager
def rolled(model) -> Iterator[None]:
    """`model` with its LSTMs' time loops rolled for the block: what a saved model (or a
    cuDNN check) records is Keras' loop, whatever device trained it."""
    unrolled = [layer for layer in lstm_layers(model) if layer.unroll]
    for layer in unrolled:
        layer.unroll = False
    try:
        yield
    finally:
        for layer in unrolled:
            layer.unroll = True


def lstm_layers(model):
    """Every LSTM layer of `model`, found through public attributes: a model's layers, a
    nested model's, and a Bidirectional wrapper's forward and backward layers."""
    import keras

    todo = list(model.layers)
    while todo:
        layer = todo.pop(0)
        if isinstance(layer, keras.layers.Bidirectional):
            todo[:0] = [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.Model):
            todo[:0] = list(layer.layers)
        elif isinstance(layer, keras.layers.LSTM):
            yield layer


def cudnn_problems(model) -> list[str]:
    """Why each LSTM layer of `model` could not use the fused cuDNN kernel (empty = all can)."""
    problems = []
    for layer in lstm_layers(model):
        cell = layer.cell
        why = []
        if getattr(cell.activation, "__name__", "") != "tanh":
            why.append(f"activation {getattr(cell.activation, '__name__', cell.activation)}")
        if getattr(cell.recurrent_activation, "__name__", "") != "sigmoid":
            why.append("recurrent_activation is not sigmoid")
        if cell.recurrent_dropout:
            why.append(f"recurrent_dropout={cell.recurrent_dropout}")
        if layer.unroll:
            why.append("unroll=True")
        if not cell.use_bias:
            why.append("use_bias=False")
        if why:
            problems.append(f"{layer.name}: {', '.join(why)}")
    return problems


def lstm_flops_per_sample(model, lookback: int) -> int:
    """Multiply-adds x2 of every LSTM's matmuls for one forward pass of one window."""
    total = 0
    for layer in lstm_layers(model):
        units = layer.cell.units
        n_in = layer.cell.kernel.shape[0]
        total += 2 * 4 * units * (n_in + units) * lookback
    return total


# --- the quantile head -------------------------------------------------------------------


def _quantile_head(trunk, median, outputs: int, window, seed: int | None = None):
    """(batch, outputs, len(QUANTILES)) quantiles that never cross, by construction.

    Each output's median is the point forecast layer's; every other level is the median
    -+ a cumulative sum of non-negative steps (softplus), outward from the median, so a
    level is never below the one under it. CQR's per-band shifts (`CALIBRATION`, zero
    until calibrated) add to the steps and a ReLU keeps them non-negative, so calibration
    cannot make them cross either. The median copy and the cumulative sums are fixed
    (non-trainable) Dense layers: stock layers only, so the model loads in safe mode.

    The steps are the trunk's (softplus) times a positive scale read linearly off the
    window's last day (softplus of a Dense on its features, starting at 1): volatility
    inputs (|return|, range estimators, 20-day volatility) move it, and beyond the training
    range it grows linearly, where the LSTM's bounded state alone could not widen the band.
    """
    import keras

    steps = outputs * (len(QUANTILES) - 1)
    spread = keras.layers.Dense(
        steps,
        activation="softplus",
        kernel_initializer=LayerSeeds(seed).initializer(
            "glorot_uniform", "quantile_spread", "kernel"
        ),
        bias_initializer=keras.initializers.Constant(-3.0),  # steps start ~0.05 (scaled)
        dtype="float32",
        name="quantile_spread",
    )(trunk)
    lookback = int(window.shape[1])
    last = keras.layers.Cropping1D((lookback - 1, 0), name="quantile_last_day")(window)
    last = keras.layers.Flatten(name="quantile_last_flat")(last)
    scale = keras.layers.Dense(
        1,
        activation="softplus",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(float(np.log(np.e - 1.0))),  # 1 at start
        dtype="float32",
        name="quantile_scale",
    )(last)
    spread = keras.layers.Multiply(dtype="float32", name="quantile_scaled")([spread, scale])
    shifted = _fixed_dense(steps, CALIBRATION, bias=True)(spread)
    steps_out = keras.layers.ReLU(dtype="float32", name="quantile_steps")(shifted)
    offsets = _fixed_dense(outputs * len(QUANTILES), "quantile_offsets")(steps_out)
    centre = _fixed_dense(outputs * len(QUANTILES), "quantile_median")(median)
    flat = keras.layers.Add(dtype="float32", name="quantiles_flat")([centre, offsets])
    return keras.layers.Reshape((outputs, len(QUANTILES)), dtype="float32", name=QUANTILE_OUTPUT)(
        flat
    )


def _fixed_dense(units: int, name: str, bias: bool = False):
    import keras

    return keras.layers.Dense(
        units,
        use_bias=bias,
        kernel_initializer="zeros",
        trainable=False,
        dtype="float32",
        name=name,
    )


def step_layout(outputs: int) -> list[tuple[int, int, int]]:
    """Per step (in the spread layer's order): (output, band from the median 1.., side
    -1 below / +1 above). Each output has MEDIAN steps below and the rest above."""
    below = [(j, r + 1, -1) for j in range(outputs) for r in range(MEDIAN)]
    above = [(j, r + 1, 1) for j in range(outputs) for r in range(len(QUANTILES) - 1 - MEDIAN)]
    by_output = sorted(below + above, key=lambda s: (s[0], s[2], s[1]))
    return by_output


def quantile_matrices(outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """(median copy, step sums): kernels of `quantile_median` [outputs, outputs*Q] and
    `quantile_offsets` [steps, outputs*Q]; output j level i sits at j*Q + i."""
    n = len(QUANTILES)
    copy = np.zeros((outputs, outputs * n), dtype=np.float32)
    sums = np.zeros((outputs * (n - 1), outputs * n), dtype=np.float32)
    for j in range(outputs):
        copy[j, j * n : (j + 1) * n] = 1.0
    for k, (j, band, side) in enumerate(step_layout(outputs)):
        for i in range(n):
            distance = (i - MEDIAN) * side  # levels on this side at >= band steps out
            if distance >= band:
                sums[k, j * n + i] = float(side)
    return copy, sums


def _set_fixed_weights(model, outputs: int) -> None:
    copy, sums = quantile_matrices(outputs)
    steps = sums.shape[0]
    model.get_layer("quantile_median").set_weights([copy])
    model.get_layer("quantile_offsets").set_weights([sums])
    model.get_layer(CALIBRATION).set_weights(
        [np.eye(steps, dtype=np.float32), np.zeros(steps, dtype=np.float32)]
    )


def has_quantile_head(model) -> bool:
    return any(layer.name == QUANTILE_OUTPUT for layer in model.layers)


def split_heads(model):
    """(point model, quantile model or None): a quantile head's point forecast is its
    median, read from the forecast layer by a sub-model that shares its weights, so every
    consumer of point forecasts (evaluation, predict, the SavedModel) is unchanged."""
    if not has_quantile_head(model):
        return model, None
    import keras

    point = keras.Model(model.inputs, model.get_layer(FORECAST).output, name=f"{model.name}_point")
    return point, model


_PINBALL: list = []


def pinball_loss(quantiles=QUANTILES):
    """The pinball loss, mean over the grid and the outputs: a Keras Loss registered as
    `tickercast>PinballLoss`, so a checkpoint compiled with it reloads (in safe mode)."""
    if not _PINBALL:
        _PINBALL.append(_pinball_class())
    return _PINBALL[0](quantiles=list(quantiles))


def custom_objects() -> dict:
    """What `keras.models.load_model` needs for a compiled quantile head."""
    pinball_loss()
    return {"PinballLoss": _PINBALL[0]}


def _pinball_class():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="tickercast")
    class PinballLoss(keras.losses.Loss):
        """max(tau * e, (tau - 1) * e), e = y - q(tau), averaged over levels and outputs."""

        def __init__(self, quantiles=QUANTILES, name="pinball", reduction="sum_over_batch_size"):
            super().__init__(name=name, reduction=reduction)
            self.quantiles = [float(q) for q in quantiles]

        def call(self, y_true, y_pred):
            tau = ops.convert_to_tensor(np.array(self.quantiles, dtype="float32"))
            y = ops.cast(ops.reshape(y_true, (ops.shape(y_pred)[0], -1, 1)), y_pred.dtype)
            error = y - y_pred
            loss = ops.maximum(tau * error, (tau - 1.0) * error)
            return ops.mean(loss, axis=(-2, -1))

        def get_config(self):
            return {**super().get_config(), "quantiles": self.quantiles}

    return PinballLoss
