"""The LSTM family. Layers keep Keras' defaults (tanh/sigmoid, no recurrent dropout,
no unroll) so they stay eligible for the cuDNN kernel on a GPU."""

from __future__ import annotations


def build_model(
    name: str,
    lookback: int,
    n_features: int,
    units: list[int],
    learning_rate: float = 1e-3,
    clipvalue: float = 1.0,
    outputs: int = 1,
):
    """Default (the tutorial): LSTM(64, seq) -> LSTM(32) -> Dense(1), Adam(clipvalue=1)."""
    import keras

    inputs = keras.Input(shape=(lookback, n_features), name="window")
    x = inputs
    if name == "stacked_lstm":
        for i, size in enumerate(units):
            x = keras.layers.LSTM(size, return_sequences=i < len(units) - 1, name=f"lstm_{i}")(x)
    elif name == "lstm":
        x = keras.layers.LSTM(units[0], name="lstm_0")(x)
    else:
        raise ValueError(f"unknown model {name!r}; valid: ['lstm', 'stacked_lstm']")
    out = keras.layers.Dense(outputs, name="forecast")(x)
    model = keras.Model(inputs, out, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, clipvalue=clipvalue),
        loss="mse",
    )
    return model
