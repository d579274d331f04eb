"""The forecasters' names: the keys of every metrics dict and the columns of every
predictions table, in one place for scoring, evaluation, plots and reports."""

from __future__ import annotations

MODEL, NAIVE, MOVING_AVERAGE = "model", "naive", "moving_average"
DRIFT, MOVING_AVERAGE_20, RIDGE = "drift", "moving_average_20", "ridge"
FORECASTERS = (MODEL, NAIVE, DRIFT, MOVING_AVERAGE, MOVING_AVERAGE_20, RIDGE)
