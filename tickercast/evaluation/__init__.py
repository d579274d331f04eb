"""Judging forecasts: metrics, baselines, conformal intervals, significance, plots, reports."""
