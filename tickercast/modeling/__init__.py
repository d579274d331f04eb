"""Turning prices into a fitted network: features, preprocessing, windows, models, training."""
