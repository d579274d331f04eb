"""The few places that rely on a library's internals, each checked here so an upgrade that
changes them fails loudly, naming the library, instead of breaking a run quietly.

Where a public API does the job the project uses it (Prefect's caching goes through
`ResultStore.exists`/`read` only, `tests/test_caching.py`); these have no public
equivalent, and each is used in exactly one place.
"""

from __future__ import annotations

import inspect
from importlib import metadata

import pytest


def _need(condition: bool, library: str, what: str, where: str) -> None:
    if not condition:
        pytest.fail(
            f"{library} {metadata.version(library)} changed an internal Tickercast relies on: "
            f"{what} (used in {where}); constraints.txt pins the tested version"
        )


def test_yfinance_internals():
    from yfinance.data import YfData

    _need(
        hasattr(getattr(YfData, "cache_get", None), "cache_clear"),
        "yfinance",
        "YfData.cache_get is no longer an lru_cache (its response memo)",
        "tickercast/market/yahoo.py clear_response_memo",
    )
    from yfinance.scrapers.history import PriceHistory

    _need(
        "raise_errors" in inspect.signature(PriceHistory.history).parameters,
        "yfinance",
        "Ticker.history lost its raise_errors flag",
        "tickercast/market/yahoo.py fetch_history",
    )


def test_keras_tuner_oracle_internals():
    import keras_tuner as kt

    for oracle in (kt.oracles.BayesianOptimizationOracle, kt.oracles.HyperbandOracle):
        for name in ("_get_oracle_fname", "_get_trial_dir", "_save_trial", "_set_project_dir"):
            _need(
                callable(getattr(oracle, name, None)),
                "keras-tuner",
                f"{oracle.__name__}.{name} is gone",
                "tickercast/tuning/search.py _oracle_class",
            )
    bayes = kt.oracles.BayesianOptimizationOracle(
        objective=kt.Objective("val_mse", "min"), max_trials=1, seed=1
    )
    _need(
        hasattr(bayes, "_random_state") and hasattr(bayes, "_retry_queue"),
        "keras-tuner",
        "the oracle's _random_state / _retry_queue attributes are gone",
        "tickercast/tuning/search.py _oracle_class",
    )


def test_yahoos_http_session_works_after_tensorflow_is_loaded():
    """TensorFlow exports libcurl symbols that shadow curl_cffi's when loaded first; the
    package loads curl_cffi first (tickercast/__init__.py). A nightly process trains, then
    ingests again the next evening: its Yahoo session must still work then."""
    import subprocess
    import sys

    code = (
        "import tickercast, tensorflow\n"
        "from curl_cffi import requests\n"
        "try:\n"
        "    requests.Session(impersonate='chrome').get('http://127.0.0.1:9/', timeout=5)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    ).stdout
    # a refused loopback connection is the healthy answer; a shadowed libcurl says
    # "Impersonating chrome... is not supported" instead
    assert out.startswith("ConnectionError") and "Failed to connect" in out, out
