"""The search space: Keras Tuner hyperparameters for a TuneConfig, and a trial's values
turned back into the RetrainConfig fields they stand for (best.json)."""

from __future__ import annotations

from tickercast.tuning.config import Choice, SearchSpace, TuneConfig


def _multi_layer(models: list[str]) -> list[str]:
    return [m for m in models if m != "lstm"]


def search_space(space: SearchSpace):
    """Keras Tuner hyperparameters for a search's space.

    `layers` exists only for models that can stack (not lstm) and `units_i` only for the
    layers a trial has, so no value is drawn that the trained network would ignore.
    """
    import keras_tuner as kt

    hp = kt.HyperParameters()

    def choice(name: str, values: list):
        values = sorted(set(values))
        return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)

    def uniform(name: str, lo: float, hi: float, log: bool):
        if lo == hi:
            return hp.Fixed(name, float(lo))
        return hp.Float(name, float(lo), float(hi), sampling="log" if log else "linear")

    choice("model", list(space.models))
    choice("lookback", list(space.lookbacks))
    choice("batch_size", list(space.batch_sizes))
    uniform("learning_rate", *space.learning_rate_range, log=True)
    uniform("dropout", *space.dropout_range, log=False)
    if space.l2_range[1] == 0:
        hp.Fixed("l2", 0.0)
    else:
        uniform("l2", *space.l2_range, log=True)
    if "cnn_lstm" in space.models:
        with hp.conditional_scope("model", ["cnn_lstm"]):
            choice("filters", list(space.units_choices))
    choice("units_0", list(space.units_choices))
    lo, hi = space.layers_range
    multi = _multi_layer(space.models)
    if multi:
        with hp.conditional_scope("model", multi):
            if lo == hi:
                hp.Fixed("layers", lo)
            else:
                hp.Int("layers", lo, hi)
            for i in range(1, hi):
                with hp.conditional_scope("layers", list(range(i + 1, hi + 1))):
                    choice(f"units_{i}", list(space.units_choices))
    return hp


def settings_from_values(values: dict) -> Choice:
    """A trial's hyperparameter values as the retrain settings they stand for."""
    model = values["model"]
    layers = 1 if model == "lstm" else int(values.get("layers", 1))
    units = [int(values[f"units_{i}"]) for i in range(layers)]
    if model == "stacked_lstm" and layers == 1:
        model = "lstm"  # the same network; retrain's stacked_lstm needs two layers
    if model == "cnn_lstm":
        units = [int(values["filters"]), *units]
    return Choice(
        model=model,
        units=units,
        dropout=float(values["dropout"]),
        l2=float(values["l2"]),
        learning_rate=float(values["learning_rate"]),
        batch_size=int(values["batch_size"]),
        lookback=int(values["lookback"]),
    )


def best_config(config: TuneConfig, choice: Choice) -> dict:
    """best.json: the RetrainConfig (validated) of the chosen settings, by flat names (a
    `--config` file). Where runs are mirrored (a URI may carry credentials) is not written
    to a file meant for sharing; the final retrain gets it from the search's own config."""
    return config.retrain(choice).recorded()
