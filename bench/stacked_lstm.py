"""Prototype (bench only): K tickers' stacked LSTMs trained as one graph, with the input
projection hoisted out of the time loop. Used by bench/universe_levers.py.

The network is Keras' stacked_lstm (LSTM(u1, sequences) -> LSTM(u2) -> Dense(outputs);
gates i, f, c, o; sigmoid/tanh; unit forget bias; Glorot kernels, orthogonal recurrent
kernels), written in TensorFlow ops so that:
- `hoist=True` computes x_t @ W + b for every step as one matmul before the loop, leaving
  only h_{t-1} @ U inside it (Keras' CPU LSTM multiplies both inside the loop);
- every weight carries a leading ticker axis K: K independent per-ticker networks share
  each op (batched matmuls), so per step the loop runs the same number of ops as one
  network while each op does K times the work. The loss is the sum of the K per-ticker
  mean losses, so each ticker's gradient is its own; Adam and value clipping act per
  element, so ticker k's weights follow exactly the path of a fit of ticker k alone.
"""

from __future__ import annotations

import numpy as np


def _glorot(rng: np.random.Generator, k: int, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (k, fan_in, fan_out)).astype(np.float32)


def _orthogonal(rng: np.random.Generator, k: int, units: int) -> np.ndarray:
    out = []
    for _ in range(k):
        q, r = np.linalg.qr(rng.normal(size=(4 * units, units)))
        out.append((q * np.sign(np.diag(r))).T)
    return np.asarray(out, dtype=np.float32)


class StackedLSTM:
    """K stacked LSTM networks (one per ticker) as one set of batched weights."""

    def __init__(self, k: int, n_features: int, units: list[int], outputs: int, seed: int = 0):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        self.k, self.units = k, list(units)
        self.layers = []
        n_in = n_features
        for u in self.units:
            bias = np.zeros((k, 4 * u), np.float32)
            bias[:, u : 2 * u] = 1.0  # unit forget bias, as Keras
            self.layers.append(
                [
                    tf.Variable(_glorot(rng, k, n_in, 4 * u)),
                    tf.Variable(_orthogonal(rng, k, u)),
                    tf.Variable(bias),
                ]
            )
            n_in = u
        self.dense = [
            tf.Variable(_glorot(rng, k, n_in, outputs)),
            tf.Variable(np.zeros((k, outputs), np.float32)),
        ]

    @property
    def variables(self) -> list:
        return [v for layer in self.layers for v in layer] + self.dense

    def set_from_keras(self, index: int, model) -> None:
        """Copy a Keras stacked_lstm's weights into ticker slot `index`."""
        names = [*(f"lstm_{i}" for i in range(len(self.units))), "forecast"]
        for variables, name in zip([*self.layers, self.dense], names, strict=True):
            for var, value in zip(variables, model.get_layer(name).get_weights(), strict=True):
                var[index].assign(value)

    def __call__(self, x, hoist: bool = True):
        """x: [K, batch, time, features] -> [K, batch, outputs]."""
        import tensorflow as tf

        seq = tf.transpose(x, [2, 0, 1, 3])  # time-major: [T, K, B, F]
        for i, (w, u, b) in enumerate(self.layers):
            last = i == len(self.layers) - 1
            seq = _lstm(seq, w, u, b, hoist, sequences=not last)
        return tf.matmul(seq, self.dense[0]) + self.dense[1][:, None, :]


def _lstm(seq, w, u, b, hoist: bool, sequences: bool):
    """One LSTM layer over time-major `seq` [T, K, B, F]; all steps' h, or the last h."""
    import tensorflow as tf

    units = u.shape[1]
    k, batch = tf.shape(seq)[1], tf.shape(seq)[2]
    zeros = tf.zeros([k, batch, units])
    # hoisted: one [T*K*B, F] x [F, 4u] product per ticker for all steps at once
    xs = tf.einsum("tkbf,kfg->tkbg", seq, w) + b[None, :, None, :] if hoist else seq

    def step(carry, x_t):
        h, c = carry
        z = tf.matmul(h, u) + (x_t if hoist else tf.matmul(x_t, w) + b[:, None, :])
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    hs, _ = tf.scan(step, xs, initializer=(zeros, zeros))
    return hs if sequences else hs[-1]  # time-major for the next layer


def make_train_step(
    model: StackedLSTM, learning_rate: float, clipvalue: float, hoist: bool, jit: bool = False
):
    """One Adam step (Keras' Adam: clipvalue, epsilon 1e-7, bias-corrected rate) on K
    tickers' batches [K, B, T, F] / [K, B, outputs]; returns the per-ticker mean losses."""
    import tensorflow as tf

    params = model.variables
    moments = [(tf.Variable(tf.zeros_like(p)), tf.Variable(tf.zeros_like(p))) for p in params]
    count = tf.Variable(0.0)
    beta1, beta2, eps = 0.9, 0.999, 1e-7

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            per_ticker = tf.reduce_mean(tf.square(model(x, hoist=hoist) - y), axis=[1, 2])
            loss = tf.reduce_sum(per_ticker)  # ticker k's gradient is its own mean's
        grads = tape.gradient(loss, params)
        count.assign_add(1.0)
        rate = learning_rate * tf.sqrt(1 - beta2**count) / (1 - beta1**count)
        for p, g, (m, v) in zip(params, grads, moments, strict=True):
            g = tf.clip_by_value(g, -clipvalue, clipvalue)
            m.assign(beta1 * m + (1 - beta1) * g)
            v.assign(beta2 * v + (1 - beta2) * tf.square(g))
            p.assign_sub(rate * m / (tf.sqrt(v) + eps))
        return per_ticker

    return step


# ------------------------------------------------- other LSTM kernels, on Keras' own layers
#
# Keras' CPU LSTM runs each time step as its own small ops (its input and recurrent
# products, bias, gates). Two other ways to run the very same layer (the same weights, the
# same outputs and gradients within float rounding, checked by `kernel_checks`), set on a
# built Keras model's LSTM layers for one measurement; the pipeline never uses them:
# - "fused": TensorFlow's fused LSTM kernel `BlockLSTMV2` (one op for all steps of a layer,
#   Keras' gate order i, f, c, o). TensorFlow 2.21 registers the V1 op's gradient for it
#   (tensorflow/python/ops/rnn_grad.py: `block_lstm_grad`, gate order i, c, f, o), which is
#   wrong for V2: the gradient here calls `BlockLSTMGradV2` itself.
# - "hoisted": unrolled, time-major, the input projection x_t @ W + b of every step as one
#   product before the steps (Keras multiplies x_t @ W inside each step).
KERNELS = ("fused", "hoisted")


def _fused_lstm(x, cs_prev, h_prev, w, b):
    """(cs, h) [time, batch, units] of BlockLSTMV2 over time-major `x`, with the V2
    gradient."""
    import tensorflow as tf

    steps = tf.shape(x, out_type=tf.int64)[0]
    no_peephole = tf.zeros(tf.shape(b)[:1] // 4, x.dtype)
    peepholes = {"wci": no_peephole, "wcf": no_peephole, "wco": no_peephole}

    @tf.custom_gradient
    def run(x, cs_prev, h_prev, w, b):
        inputs = {"x": x, "cs_prev": cs_prev, "h_prev": h_prev, "w": w, "b": b, **peepholes}
        i, cs, f, o, ci, co, h = tf.raw_ops.BlockLSTMV2(
            seq_len_max=steps, **inputs, cell_clip=0.0, use_peephole=False
        )

        def grad(cs_grad, h_grad):
            cs_grad = tf.zeros_like(cs) if cs_grad is None else cs_grad
            h_grad = tf.zeros_like(h) if h_grad is None else h_grad
            x_g, cs_g, h_g, w_g, _, _, _, b_g = tf.raw_ops.BlockLSTMGradV2(
                seq_len_max=steps,
                **inputs,
                i=i,
                cs=cs,
                f=f,
                o=o,
                ci=ci,
                co=co,
                h=h,
                cs_grad=cs_grad,
                h_grad=h_grad,
                use_peephole=False,
            )
            return x_g, cs_g, h_g, w_g, b_g

        return (cs, h), grad

    return run(x, cs_prev, h_prev, w, b)


def _fused_inner_loop(layer, sequences, initial_state, mask, training=False):
    import tensorflow as tf

    cell = layer.cell
    h0, c0 = initial_state
    w = tf.concat([cell.kernel, cell.recurrent_kernel], axis=0)
    b = tf.convert_to_tensor(cell.bias)
    cs, h = _fused_lstm(tf.transpose(sequences, [1, 0, 2]), c0, h0, w, b)
    outputs = tf.transpose(h, [1, 0, 2]) if layer.return_sequences else h[-1]
    return h[-1], outputs, [h[-1], cs[-1]]


def _hoisted_inner_loop(layer, sequences, initial_state, mask, training=False):
    import tensorflow as tf

    cell = layer.cell
    steps, features = sequences.shape[1], sequences.shape[2]
    h, c = initial_state
    time_major = tf.reshape(tf.transpose(sequences, [1, 0, 2]), [-1, features])
    z_all = tf.matmul(time_major, cell.kernel) + cell.bias
    outs = []
    for z_t in tf.unstack(tf.reshape(z_all, [steps, -1, 4 * cell.units]), num=steps):
        i, f, g, o = tf.split(z_t + tf.matmul(h, cell.recurrent_kernel), 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outs.append(h)
    outputs = tf.stack(outs, axis=1) if layer.return_sequences else h
    return h, outputs, [h, c]


def use_kernel(model, kernel: str) -> None:
    """Run every LSTM layer of a built Keras stacked_lstm (tanh/sigmoid, bias, no dropout,
    no mask) with `kernel` (one of KERNELS) from its next trace on."""
    import types

    from tickercast.modeling.models import lstm_layers

    loop = {"fused": _fused_inner_loop, "hoisted": _hoisted_inner_loop}[kernel]
    for layer in lstm_layers(model):
        layer.inner_loop = types.MethodType(loop, layer)


def kernel_checks(model, x, y) -> dict:
    """Each kernel against Keras' own on `model` (fresh traces, same weights): the max abs
    difference of the loss's value and of its gradient over all weights."""
    import tensorflow as tf

    def loss_and_grads(kernel: str | None):
        from tickercast.modeling.models import lstm_layers

        for layer in lstm_layers(model):
            layer.__dict__.pop("inner_loop", None)  # Keras' own
        if kernel:
            use_kernel(model, kernel)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        return float(loss), tape.gradient(loss, model.trainable_variables)

    keras_loss, keras_grads = loss_and_grads(None)
    out = {}
    for kernel in KERNELS:
        loss, grads = loss_and_grads(kernel)
        out[kernel] = {
            "loss_abs_diff": abs(loss - keras_loss),
            "grad_max_abs_diff": max(
                float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads, keras_grads, strict=True)
            ),
        }
    loss_and_grads(None)
    return out
