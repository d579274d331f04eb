"""The baseline registry: one name, one forecaster. Both forms of every baseline give the
same forecasts, each parameter has one default, every name has an entry and a line in the
README, and reports of older evaluations say what their names meant then."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from tickercast import choices
from tickercast.evaluation import baseline_registry as registry
from tickercast.evaluation.baseline_registry import (
    BASELINES,
    DEFAULTS,
    PointBaseline,
    forecast_rolling,
    forecast_windows,
)
from tickercast.folds import rolling_origins

ROOT = Path(__file__).resolve().parents[1]
POINT = [name for name, e in BASELINES.items() if isinstance(e, PointBaseline)]


def random_walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))


@pytest.mark.parametrize("window", ["expanding", "sliding"])
@pytest.mark.parametrize("name", POINT)
def test_the_per_window_form_equals_the_rolling_form(name, window):
    """Per origin, `window` on the training closes s..o alone (the specification) gives
    what `rolling` gives for every origin at once, at non-default parameters too."""
    close = random_walk(400, seed=3)
    entry = BASELINES[name]
    for horizon, params in ((4, {"ma_window": 15, "ridge_lags": 4, "ridge_alpha": 2.0}), (1, {})):
        o = rolling_origins(len(close), initial=60, step=3, horizon=horizon, window=window)
        per_window = np.stack(
            [
                entry.window(close[s : r + 1], horizon, **entry.settings(params))
                for r, s in zip(o.rows, o.starts, strict=True)
            ]
        )
        np.testing.assert_allclose(forecast_rolling(name, close, o, params), per_window, rtol=1e-10)


@pytest.mark.parametrize("name", POINT)
def test_the_retrain_evaluations_windows_are_expanding_origins(name):
    """`forecast_windows` (all closes up to each test window) is the rolling form at
    expanding origins, and (it is computed that way) the per-window form on closes 0..a at
    each anchor a, from the shortest history the baseline takes; a history shorter than
    the baseline needs gives NaN, not a guess."""
    close = random_walk(300, seed=5)
    anchors = np.arange(100, 295)
    o = rolling_origins(len(close), initial=101, step=1, horizon=5)
    got = forecast_windows(name, close, anchors, 5)
    np.testing.assert_allclose(got, forecast_rolling(name, close, o), rtol=1e-10)
    entry, params = BASELINES[name], {"ridge_lags": 3, "ridge_alpha": 0.5, "ma_window": 7}
    first = entry.shortest(5, params) - 1
    anchors = np.array([first, first + 1, first + 7, 150, 294])
    spec = np.stack([entry.window(close[: a + 1], 5, **entry.settings(params)) for a in anchors])
    np.testing.assert_allclose(forecast_windows(name, close, anchors, 5, params), spec, rtol=1e-10)
    short = forecast_windows(name, close, np.array([0, 1, 2]), 5, {"ridge_lags": 1})
    need = BASELINES[name].shortest(5, {"ridge_lags": 1})
    assert np.isnan(short[: max(need - 1, 0)]).all() and np.isfinite(short[need - 1 :]).all()


def test_one_default_per_parameter():
    """A parameter's default is the registry's; both forms of a baseline take the same."""
    for entry in BASELINES.values():
        forms = [entry.window, entry.rolling] if isinstance(entry, PointBaseline) else []
        for form in forms:
            defaults = {
                k: p.default
                for k, p in inspect.signature(form).parameters.items()
                if p.default is not inspect.Parameter.empty
            }
            assert defaults == {p: DEFAULTS[p] for p in entry.params}, (entry.name, form)
    # the backtest's section offers the same defaults (its fields are these parameters)
    from tickercast.sections import Rolling

    for name, default in DEFAULTS.items():
        assert Rolling.model_fields[name].default == default, name


def test_every_name_has_one_entry_and_every_entry_a_name():
    assert list(BASELINES) == [
        *choices.BASELINES,
        *choices.INPUTS_BASELINES,
        *choices.DISTRIBUTION_BASELINES,
    ]
    assert len(set(BASELINES)) == len(BASELINES)
    for entry in BASELINES.values():
        text = entry.describe()
        assert text and "\n" not in text and "{" not in text, entry.name
    points = [*choices.BASELINES, *choices.INPUTS_BASELINES]
    assert [e.name for e in registry.of_kind("point")] == points
    distributions = registry.of_kind("distribution")
    assert [e.name for e in distributions] == list(choices.DISTRIBUTION_BASELINES)
    assert all(isinstance(e, registry.DistributionBaseline) for e in distributions)
    with pytest.raises(ValueError, match="point baseline; distributions"):
        registry.distribution("naive")


def test_an_inputs_baseline_is_refused_where_only_closes_exist():
    with pytest.raises(ValueError, match="ridge_inputs.*retrain evaluation"):
        forecast_rolling("ridge_inputs", np.arange(1.0, 50.0), rolling_origins(49, 20, 1, 1))
    with pytest.raises(ValueError, match="unknown baseline 'arima'; valid: \\['naive'"):
        registry.get("arima")
    with pytest.raises(ValueError, match=r"'moving_average_20' \(it was .*now moving_average\)"):
        registry.get("moving_average_20")


def test_descriptions_carry_the_parameters_used():
    assert (
        BASELINES["moving_average"].describe({"ma_window": 50}) == "the mean of the last 50 closes"
    )
    text = registry.descriptions({"ridge_lags": 3}, ["ridge", "naive"], horizon=5)
    assert list(text) == ["ridge", "naive"] and "last 3 daily log returns" in text["ridge"]
    assert registry.descriptions(horizon=5)["moving_average_horizon"].startswith(
        "the mean of the last 5 closes"
    )


def test_an_old_evaluation_is_described_as_its_names_meant_then():
    """metadata.json written before the registry has no record of its baselines: its
    `moving_average` was the mean of the last horizon closes and `ridge` the ridge on the
    model's inputs; a new one records what each name was."""
    old = registry.recorded_descriptions({"window": {}})
    assert "now moving_average_horizon" in old["moving_average"]
    assert "now ridge_inputs" in old["ridge"] and "now moving_average" in old["moving_average_20"]
    new = registry.recorded_descriptions(
        {"baselines": {"moving_average": {"description": "the mean of the last 20 closes"}}}
    )
    assert new == {"moving_average": "the mean of the last 20 closes"}
    assert registry.legend(["naive", "moving_average", "model"], new) == [
        "`moving_average`: the mean of the last 20 closes"
    ]


def test_the_readme_says_what_each_baseline_is():
    """README's baseline table has one row per name, with the registry's description."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Baselines", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|", section, flags=re.M))
    assert list(rows) == list(BASELINES)
    for name, text in rows.items():
        assert text == BASELINES[name].describe().replace("|", "\\|"), name
