"""Backtests on one engine: retrain's walk-forward folds and the rolling-origin backtest.

Vocabulary. Rows are one ticker's featurised trading days (after `start`/`end` and the
features' warm-up). An *origin* o is the last day a forecaster may know: it is fitted on
its training window, rows [s, o] (s = 0 for an expanding window, o - initial + 1 for a
sliding one), and forecasts the target of row o (days o+1..o+horizon). A *fold* is one
fit of a network: it sees rows [train_start, test_start) (train | validation) and
forecasts every origin in [test_start - 1, test_end - horizon - 1]:

    fold k: rows [train_start, test_end) = train | validation | test block

- `walkforward.walk_forward` (retrain's `--walk-forward-folds K`): K folds whose test
  blocks are consecutive and as long as the pipeline's own test split, so the last fold's
  block *is* the retrain's test split; every anchor of a block is an origin.
- `rolling.rolling_backtest` (`tickercast backtest`): origins initial-1, initial-1+step,
  ...; a network is refit every `refit_every` origins (one fold per refit, forecasting the
  origins up to the next refit); the baselines are refit at every origin, vectorised over
  all origins at once (each one's rolling form in `tickercast.evaluation.baseline_registry`,
  tested against its per-window form, the executable specification).

Both prepare a fold the same way (`prepare.prepare_fold`: the fold's prices are
re-preprocessed, so scalers and every fitted transform are refit on its training rows
alone; `prepare.fit_fold` hands the fitting function only rows dated before the fold's
first forecast day, any target reaching past it blanked) and both score with
`tickercast.evaluation.metrics`. tests/test_walkforward.py and tests/test_backtest.py
prove that nothing dated at or after an origin's first forecast day reaches what is
fitted for it.

Modules: `tickercast.folds` (which rows each fit sees), `prepare` (a fold's preprocessing
and fit), `walkforward` and `rolling` (the two engines), `tables` (text and markdown
reports) and `files` (what a backtest writes). The engines import neither `tables` nor the CLI, so a
report's layout is not part of a cached backtest's key.
"""
