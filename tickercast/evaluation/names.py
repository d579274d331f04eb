"""The forecasters' names: the keys of every metrics dict and the columns of every
predictions table, in scoring order. The baselines' names are `tickercast.choices`'
(what each one is: `tickercast.evaluation.baseline_registry`)."""

from __future__ import annotations

from tickercast.choices import BASELINES, INPUTS_BASELINES

MODEL, NAIVE = "model", "naive"
FORECASTERS = (MODEL, *BASELINES, *INPUTS_BASELINES)
