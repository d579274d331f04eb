"""MLflow mirror of Tickercast's runs and registry (the optional `mlflow` extra).

Tickercast's file registry (`models/<T>/registry.json` and the bundles) stays the source of
truth; MLflow gets a copy that users can browse and serve from:

- experiment `tickercast-retrain`: one run per exported version of a ticker (the config
  as params, every forecaster's test metrics, the bundle with its plots, the retrain
  report, the data range and hash as tags);
- registered model `tickercast-<T>`: one model version per bundle version, its source the
  run's `bundle/` artifacts, tagged `tickercast.version`; the alias `champion` is on the
  version that is Tickercast's champion (moved by promotions and rollbacks, removed when
  there is none);
- experiments `tickercast-backtest` and `tickercast-tune`: one run per backtest or search
  invocation, their tables as artifacts and summary metrics.

`sync_model` reconciles: it logs every version MLflow lacks and then sets the alias, so a
sync that failed (server down) is repaired by the next run or `tickercast models
sync-mlflow`. Every failure is raised as `TrackingError`; callers write the file registry
first and report the error without failing what already succeeded. MLflow is imported only
when a URI is given (`resolve_uri`), so without one nothing here touches it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tickercast.config import MIRROR_FIELDS

ENV_URI = "MLFLOW_TRACKING_URI"
RETRAIN_EXPERIMENT = "tickercast-retrain"
BACKTEST_EXPERIMENT = "tickercast-backtest"
TUNE_EXPERIMENT = "tickercast-tune"
MODEL_PREFIX = "tickercast-"
ALIAS = "champion"
TICKER_TAG = "tickercast.ticker"
VERSION_TAG = "tickercast.version"
KIND_TAG = "tickercast.kind"
RESYNC = "tickercast models sync-mlflow"
# A tracking server that is down fails in seconds, not MLflow's default minutes of
# retries; a later sync repairs what was missed. Users' own settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# MLflow's limits per log_batch call and per param value.
_BATCH_PARAMS, _BATCH_METRICS, _PARAM_CHARS = 100, 1000, 6000


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a write; Tickercast's own files are intact."""


def resolve_uri(uri: str | None) -> str | None:
    """The tracking URI to mirror to: the one given, else MLFLOW_TRACKING_URI, else None
    (no MLflow at all)."""
    return uri or os.environ.get(ENV_URI) or None


def require_client(uri: str | None) -> None:
    """Refuse, before any work, a URI without the MLflow client to use it (a server that is
    down is only found out, and tolerated, when the mirror is written)."""
    import importlib.util

    if uri is not None and importlib.util.find_spec("mlflow") is None:
        raise TrackingError(
            f"an MLflow URI was given ({uri}) but MLflow is not installed: "
            "pip install 'tickercast[mlflow]'"
        )


def registered_name(ticker: str) -> str:
    """The registered model that mirrors ticker `ticker`'s registry."""
    return MODEL_PREFIX + ticker


def metric_key(*parts: object) -> str:
    """An MLflow metric name (letters, digits, _ - . / and space): other characters, such
    as ^ and = of index and currency tickers, become _."""
    return re.sub(r"[^\w\-. /]", "_", ".".join(str(p) for p in parts))


@contextlib.contextmanager
def _reported(uri: str, what: str) -> Iterator[None]:
    """Any MLflow, HTTP or file error as one TrackingError naming the server and the step."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow at {uri}: {what} failed: {message}") from exc


def _client(uri: str) -> Any:
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    require_client(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _already_exists(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_ALREADY_EXISTS"


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:  # another process created it in between
        if not _already_exists(exc):
            raise
        return client.get_experiment_by_name(name).experiment_id


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_CHARS]


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among `values` (booleans, text, None and NaN left out)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _started_ms(started: str | None) -> int | None:
    import datetime as dt

    return int(dt.datetime.fromisoformat(started).timestamp() * 1000) if started else None


def _log_run(
    client: Any,
    experiment: str,
    run_name: str,
    *,
    tags: dict[str, Any],
    params: dict[str, Any],
    metrics: dict[str, float],
    series: dict[str, list[float]] | None = None,
    files: Iterable[tuple[Path, str | None]] = (),
    folders: Iterable[tuple[Path, str]] = (),
    texts: dict[str, str] | None = None,
    started: str | None = None,
    run_id: str | None = None,
) -> Any:
    """One finished run: tags, params, metrics (a series: one value per step), files and
    folders as artifacts; `started` (ISO time) dates it, e.g. when its version was made.
    `run_id`: an opened run to fill (`open_version_run`) instead of a new one. A run that
    fails half-way is marked FAILED, never left running."""
    from mlflow.entities import Param

    tags = {k: str(v) for k, v in tags.items() if v is not None}
    opened = run_id is not None
    if not opened:
        run_id = client.create_run(
            _experiment_id(client, experiment),
            start_time=_started_ms(started),
            run_name=run_name,
            tags=tags,
        ).info.run_id
    now = int(time.time() * 1000)
    try:
        if opened:  # an opened run: named and tagged now its version is known
            client.update_run(run_id, name=run_name)
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
        for batch in _chunks(
            [Param(k, _param_value(v)) for k, v in params.items() if k not in MIRROR_FIELDS],
            _BATCH_PARAMS,
        ):
            client.log_batch(run_id, params=batch)
        for batch in _chunks(_metric_points(metrics, series or {}, now), _BATCH_METRICS):
            client.log_batch(run_id, metrics=batch)
        for path, artifact_path in files:
            client.log_artifact(run_id, str(path), artifact_path)
        for folder, artifact_path in folders:
            client.log_artifacts(run_id, str(folder), artifact_path)
        for name, text in (texts or {}).items():
            client.log_text(run_id, text, name)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return client.get_run(run_id)


def _metric_points(metrics: dict[str, float], series: dict[str, list[float]], now: int) -> list:
    """MLflow metric points: each metric at step 0, each series one point per step (its
    missing and non-finite values skipped)."""
    from mlflow.entities import Metric

    points = [Metric(metric_key(k), v, now, 0) for k, v in metrics.items()]
    for key, values in series.items():
        points += [
            Metric(metric_key(key), float(v), now, step)
            for step, v in enumerate(values)
            if v is not None and math.isfinite(v)
        ]
    return points


# --------------------------------------------------------------------------- retrain


def version_metrics(metadata: dict) -> dict[str, float]:
    """A bundle's numbers as MLflow metrics: `<forecaster>.<metric>` on the test split,
    interval coverage, shrinkage and epochs, and walk-forward means when it ran."""
    out: dict[str, float] = {}
    for forecaster, values in (metadata.get("metrics") or {}).items():
        out.update({f"{forecaster}.{k}": v for k, v in _numbers(values).items()})
    for level, values in (metadata.get("intervals") or {}).items():
        coverage = values.get("coverage_test")
        if coverage is not None:
            out[f"coverage_{level}"] = coverage
    shrinkage = metadata.get("shrinkage") or {}
    if isinstance(shrinkage, dict) and shrinkage.get("alpha") is not None:
        out["shrinkage.alpha"] = shrinkage["alpha"]
    training = metadata.get("training") or {}
    for key in ("best_epoch", "epochs_run"):
        out[f"training.{key}"] = training.get(key)
    out.update(distribution_metrics(metadata))
    pooled = ((metadata.get("walk_forward") or {}).get("summary") or {}).get("distribution")
    for name, values in (pooled or {}).items():  # the model's band over all folds vs each
        out[f"walk_forward.distribution.{name}.crps"] = values.get("crps")
        out[f"walk_forward.distribution.{name}.dm_p"] = values.get("p")
    walk = (metadata.get("walk_forward") or {}).get("summary", {}).get("metrics", {})
    for forecaster, values in walk.items():
        for metric, stats in values.items():
            if isinstance(stats, dict) and stats.get("mean") is not None:
                out[f"walk_forward.{forecaster}.{metric}"] = stats["mean"]
    return _numbers(out)


DISTRIBUTION_KEYS = (
    "crps",
    "interval_80",
    "interval_95",
    "pinball",
    "coverage_80",
    "coverage_95",
    "kupiec_p_80",
    "kupiec_p_95",
)


def distribution_metrics(metadata: dict) -> dict[str, float]:
    """The distribution table of a version (`evaluation.distribution`) as
    `distribution.<forecaster>.<score>`, with `distribution.<baseline>.dm_p` (the DM
    p-value of the model's per-origin CRPS against that baseline)."""
    record = (metadata.get("evaluation") or {}).get("distribution") or {}
    out: dict[str, float] = {}
    for name, values in (record.get("metrics") or {}).items():
        out.update({f"distribution.{name}.{k}": values.get(k) for k in DISTRIBUTION_KEYS})
        p = ((values.get("dm") or {}).get("crps") or {}).get("p")
        if p is not None:
            out[f"distribution.{name}.dm_p"] = p
    return _numbers(out)


def _version_tags(ticker: str, version: int, bundle: Path, metadata: dict) -> dict[str, Any]:
    data = metadata.get("data") or {}
    return {
        TICKER_TAG: ticker,
        VERSION_TAG: version,
        KIND_TAG: "retrain",
        "tickercast.bundle": bundle,
        "tickercast.created_at": metadata.get("created_at"),
        "tickercast.verdict": metadata.get("verdict"),
        **{f"data.{k}": data.get(k) for k in ("source", "first_day", "last_day", "rows")},
        **{f"data.{k}": data.get(k) for k in ("train_end", "val_end", "sha256")},
    }


def _version_run(client: Any, ticker: str, version: int, bundle: Path, metadata: dict) -> Any:
    """The finished run of one bundle version: found when an earlier sync logged it (and
    perhaps failed to register it), else logged now."""
    from tickercast.delivery.report import retrain_report

    experiment = _experiment_id(client, RETRAIN_EXPERIMENT)
    found = client.search_runs(
        [experiment],
        f"tags.`{TICKER_TAG}` = '{ticker}' and tags.`{VERSION_TAG}` = '{version}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if found:
        return found[0]
    return _log_run(
        client,
        RETRAIN_EXPERIMENT,
        f"{ticker} v{version}",
        tags=_version_tags(ticker, version, bundle, metadata),
        params=metadata.get("config") or {},
        metrics=version_metrics(metadata),
        folders=[(bundle, "bundle")],
        texts={"report.md": retrain_report(ticker, bundle, metadata)},
        started=metadata.get("created_at"),
        run_id=_opened_run(client, ticker, version, metadata),
    )


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of an http(s) tracking server, without any
    credentials the URI carries (the link is shown on the page); None for a local store,
    which has no UI to link."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.netloc.rpartition("@")[2]
    base = f"{parts.scheme}://{host}{parts.path.rstrip('/')}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def open_version_run(uri: str, ticker: str, metadata: dict) -> dict[str, str]:
    """Before a version's bundle is written: its retrain run, opened (RUNNING, dated by the
    metadata's created_at) so that metadata.json can name it; the mirror (`sync_model`)
    fills and finishes it once the bundle exists. Returns metadata's "runs" entries:
    mlflow_run_id, mlflow_experiment_id and, for an http(s) server, mlflow (the run's page).
    A failure is a TrackingError (the version is then written without the link)."""
    client = _client(uri)
    with _reported(uri, f"opening {ticker}'s retrain run"):
        experiment = _experiment_id(client, RETRAIN_EXPERIMENT)
        run = client.create_run(
            experiment,
            start_time=_started_ms(metadata.get("created_at")),
            run_name=f"{ticker} (exporting)",
            tags={TICKER_TAG: ticker, KIND_TAG: "retrain"},
        )
    run_id = run.info.run_id
    url = run_url(uri, experiment, run_id)
    return {
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": experiment,
        **({"mlflow": url} if url else {}),
    }


def close_opened_run(uri: str, runs: dict) -> None:
    """Mark the run `open_version_run` opened as FAILED: its version was never written.
    Best effort (the export's own error is what matters)."""
    run_id = runs.get("mlflow_run_id")
    if run_id:
        with contextlib.suppress(Exception):
            _client(uri).set_terminated(run_id, "FAILED")


def _opened_run(client: Any, ticker: str, version: int, metadata: dict) -> str | None:
    """The run the version's metadata names (opened at export), when it is this version's
    and still unfinished (RUNNING, or FAILED by an earlier mirror that broke off); None:
    log a new run (no run named, or it was deleted or belongs elsewhere)."""
    from mlflow.exceptions import MlflowException

    run_id = (metadata.get("runs") or {}).get("mlflow_run_id")
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        return None
    if (
        run.data.tags.get(TICKER_TAG) != ticker
        or run.data.tags.get(VERSION_TAG, str(version)) != str(version)
        or run.info.lifecycle_stage != "active"
        or run.info.status == "FINISHED"
    ):
        return None
    return run_id


def _registered_model(client: Any, ticker: str) -> Any:
    from mlflow.exceptions import MlflowException

    name = registered_name(ticker)
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
    try:
        client.create_registered_model(
            name,
            tags={TICKER_TAG: ticker},
            description=f"Tickercast's model {ticker}: one version per bundle version; the "
            f"alias '{ALIAS}' follows Tickercast's champion (registry.json).",
        )
    except MlflowException as exc:
        if not _already_exists(exc):
            raise
    return client.get_registered_model(name)


def _mirrored_versions(client: Any, name: str) -> dict[int, str]:
    """Tickercast version -> MLflow model version, for the versions already registered."""
    out: dict[int, str] = {}
    for mv in client.search_model_versions(f"name = '{name}'"):
        tag = (mv.tags or {}).get(VERSION_TAG)
        if tag is not None and tag.isdigit():
            out[int(tag)] = mv.version
    return out


def sync_model(uri: str, data_dir: str | Path, ticker: str) -> dict:
    """Mirror ticker `ticker`'s file registry into MLflow: a run and a model version for
    every bundle version MLflow lacks (oldest first), then the champion alias on the
    champion's version (removed when there is none). Safe to repeat: what is already there
    is found by its tags, not logged twice. A version whose metadata.json cannot be read
    (a damaged bundle) is skipped and listed under "skipped"."""
    from tickercast.delivery.bundle import bundle_path, list_versions, read_metadata
    from tickercast.delivery.registry import read_registry

    champion = read_registry(data_dir, ticker)["champion"]
    versions = list_versions(data_dir, ticker)
    client = _client(uri)
    name = registered_name(ticker)
    logged: list[int] = []
    skipped: dict[int, str] = {}
    with _reported(uri, f"mirroring {ticker}"):
        _registered_model(client, ticker)
        mirrored = _mirrored_versions(client, name)
        for version in versions:
            if version in mirrored:
                continue
            bundle = bundle_path(data_dir, ticker, version)
            try:
                metadata = read_metadata(bundle)
            except (OSError, ValueError) as exc:
                skipped[version] = f"{type(exc).__name__}: {exc}"
                continue
            run = _version_run(client, ticker, version, bundle, metadata)
            mv = client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/bundle",
                run_id=run.info.run_id,
                tags={VERSION_TAG: str(version), "tickercast.bundle": str(bundle)},
                description=run.data.tags.get("tickercast.verdict"),
            )
            mirrored[version] = mv.version
            logged.append(version)
        aliases = dict(client.get_registered_model(name).aliases or {})
        if champion is None:
            if ALIAS in aliases:
                client.delete_registered_model_alias(name, ALIAS)
        elif champion not in mirrored:
            why = skipped.get(champion, "its bundle is missing")
            raise TrackingError(f"MLflow at {uri}: {ticker}'s champion v{champion}: {why}")
        elif aliases.get(ALIAS) != mirrored[champion]:
            client.set_registered_model_alias(name, ALIAS, mirrored[champion])
    return {
        "uri": uri,
        "model": name,
        "logged": logged,
        "skipped": skipped,
        "champion": champion,
        "alias": None if champion is None else mirrored[champion],
    }


def describe_sync(ticker: str, synced: dict) -> str:
    """One line for logs and the CLI: what the sync did."""
    logged = ", ".join(f"v{v}" for v in synced["logged"]) or "nothing new"
    alias = (
        f"'{ALIAS}' -> version {synced['alias']} (Tickercast v{synced['champion']})"
        if synced["champion"] is not None
        else f"no '{ALIAS}' (no champion)"
    )
    unread = "".join(
        f"; v{v} not mirrored (unreadable metadata)" for v in synced.get("skipped", {})
    )
    return f"{ticker}: MLflow {synced['model']}: logged {logged}; {alias}{unread}"


def retry_hint(ticker: str | None, data_dir: str | Path) -> str:
    """The command that repairs a failed sync."""
    return f"{RESYNC} {ticker or ''} --data-dir {data_dir}".replace("  ", " ")


# --------------------------------------------------------------------------- backtest, tune


def log_backtest(
    uri: str,
    folder: str | Path,
    config: dict,
    metrics: dict[str, list[dict]],
    distribution: dict[str, list[dict]] | None = None,
) -> dict:
    """One run for a `tickercast backtest` invocation: its config, every row of its metrics
    table as `<ticker>.<model>.<step>.<metric>` (step t+1 is written t_1), every row of its
    distribution table as `<ticker>.distribution.<median>.<band>.<score>` (`p`: the DM
    p-value of the median's band against that band), and its folder (metrics.parquet,
    forecasts.parquet, distribution.parquet, report.md) as artifacts."""
    folder = Path(folder)
    values: dict[str, float] = {}
    for ticker, rows in metrics.items():
        for row in rows:
            prefix = (ticker, row["model"], row["step"])
            values.update({metric_key(*prefix, k): v for k, v in _numbers(row).items() if k != "n"})
    for ticker, rows in (distribution or {}).items():
        for row in rows:
            prefix = (ticker, "distribution", row["median"], row["band"])
            values.update({metric_key(*prefix, k): v for k, v in _numbers(row).items()})
    client = _client(uri)
    with _reported(uri, "logging the backtest"):
        run = _log_run(
            client,
            BACKTEST_EXPERIMENT,
            folder.name,
            tags={
                KIND_TAG: "backtest",
                "tickercast.tickers": ",".join(metrics),
                "tickercast.folder": folder,
            },
            params=config,
            metrics=values,
            folders=[(folder, "backtest")],
        )
    return {"uri": uri, "run_id": run.info.run_id, "experiment": BACKTEST_EXPERIMENT}


def log_tune(uri: str, run_dir: str | Path, config: dict, rows: list[dict], report: str) -> dict:
    """One run for a `tickercast tune` invocation: its config, each trial's validation MSE
    as the series `val_mse` (step = trial order) and the best's as metrics, and the trial
    table, best.json and the report as artifacts."""
    run_dir = Path(run_dir)
    best = next((row for row in rows if row.get("best")), None)
    metrics = {
        "trials": len(rows),
        "completed": sum(row["status"] == "completed" for row in rows),
    }
    if best is not None:
        metrics.update({f"best.{k}": v for k, v in _numbers(best).items()})
    files = [(run_dir / name, "tune") for name in ("trials.json", "trials.csv", "best.json")]
    client = _client(uri)
    with _reported(uri, "logging the search"):
        run = _log_run(
            client,
            TUNE_EXPERIMENT,
            run_dir.name,
            tags={
                KIND_TAG: "tune",
                "tickercast.tickers": ",".join(config.get("tickers", [])),
                "tickercast.run_dir": run_dir,
                "tickercast.best_trial": best["trial"] if best else None,
            },
            params=config,
            metrics=_numbers(metrics),
            series={"val_mse": [row.get("val_mse") for row in rows]},
            files=[(path, folder) for path, folder in files if path.is_file()],
            texts={"tune/report.md": report},
        )
    return {"uri": uri, "run_id": run.info.run_id, "experiment": TUNE_EXPERIMENT}


# --------------------------------------------------------------------------- live record

LIVE_KEYS = ("skill", "mae", "naive_mae", "dm_p", "dm_p_worse", "coverage_80", "coverage_95")
LIVE_KEYS += ("kupiec_p_below_80", "kupiec_p_below_95", "crps")


def log_live(uri: str, data_dir: str | Path, ticker: str, record: dict) -> str:
    """The live record of a version (`tickercast.delivery.ledger.version_record`) on that
    version's retrain run, as `live.<figure>` metrics at step n (forecasts scored so far, so
    MLflow charts them as they accumulate) and the flag as tag `tickercast.live.flag`.
    Returns the run id; the run is logged first if no sync did it yet."""
    from mlflow.entities import Metric

    from tickercast.delivery.bundle import bundle_path

    version = int(record["version"])
    bundle = bundle_path(data_dir, ticker, version)
    client = _client(uri)
    with _reported(uri, f"logging the live record of {ticker} v{version}"):
        metadata = json.loads((bundle / "metadata.json").read_text())
        run_id = _version_run(client, ticker, version, bundle, metadata).info.run_id
        now, step = int(time.time() * 1000), int(record.get("n") or 0)
        values = _numbers({k: record.get(k) for k in LIVE_KEYS})
        points = [Metric(metric_key("live", k), v, now, step) for k, v in values.items()]
        if points:
            client.log_batch(run_id, metrics=points)
        client.set_tag(run_id, "tickercast.live.flag", record.get("flag") or "none")
    return run_id
