"""Hyperparameter search: its config, space, search data, trials and the driver."""
