"""The ingest flow: bring each ticker's lake partition up to date, one task per ticker,
`max_workers` tickers at a time.

Run it by hand with `tickercast ingest --help` (or `python -m tickercast.flows.ingest --help`), or
on a schedule. The retrain flow runs the same `ingest_step` task for its tickers.

One bad ticker never stops the others: every ticker gets a task run, the run publishes
a table artifact (`ingest-report`: ticker, status, rows added, first and last day, rows
dropped, quirks, warnings) and returns the same rows. `fail_on` decides the final state:
Failed when every ticker failed (`all`, the default), when any did (`any`), or never.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger
from prefect.states import Failed

from tickercast.config import IngestConfig
from tickercast.market.locate import csv_tickers, fetch_window, sample_tickers, source_fingerprint
from tickercast.market.report import quirks_text, report_row, verdict
from tickercast.tasks.ingest import ingest_step
from tickercast.tasks.runners import make_task_runner, step_options, use_task_runner

REPORT_KEY = "ingest-report"


def resolve_tickers(config: IngestConfig) -> list[str]:
    """The configured tickers, or every CSV in csv_dir / every bundled sample ticker."""
    if config.tickers:
        return list(config.tickers)
    if config.source == "csv":
        return csv_tickers(config.csv_dir or ".")
    if config.source == "sample":
        return sample_tickers()
    raise ValueError(f"source {config.source!r} needs tickers")


def preflight(config: IngestConfig) -> list[str]:
    """Refuse a run that cannot start (no such csv_dir); returns the tickers it covers."""
    return resolve_tickers(config)


def _fingerprint(source: str, ticker: str, csv_dir: str | None) -> str | None:
    """The cache key's content hash, or None (not cached) when the input is not there:
    the task then fails for this ticker alone, naming what is missing."""
    try:
        return source_fingerprint(source, ticker, csv_dir)
    except (OSError, ValueError):
        return None


def _table(rows: list[dict]) -> list[dict]:
    """Report rows as the artifact shows them (quirks and warnings as text)."""
    return [
        {
            "ticker": r["ticker"],
            "status": r["status"],
            "rows_added": r["rows_added"],
            "first_day": r["first_day"] or "",
            "last_day": r["last_day"] or "",
            "rows_dropped": r["rows_dropped"],
            "quirks": quirks_text(r["quirks"]),
            "warnings": "; ".join(r["warnings"]),
            "mode": r["mode"] or "",
            "error": r["error"] or "",
        }
        for r in rows
    ]


@flow(name="ingest", log_prints=True, persist_result=False)
def ingest(config: IngestConfig = IngestConfig()) -> dict:
    """Ingest every ticker into the lake; returns {"tickers": report rows, "results": ...}."""
    tickers = preflight(config)
    data_dir = str(Path(config.data_dir).resolve())
    csv_dir = config.csv_path()
    step = ingest_step.with_options(**step_options(data_dir, config.refresh))
    start, end = fetch_window(config.source, config.start, config.end)
    futures = {}
    with use_task_runner(make_task_runner("threads", config.max_workers)):
        for ticker in tickers:
            futures[ticker] = step.submit(
                ticker,
                config.source,
                data_dir,
                csv_dir,
                start,
                end,
                _fingerprint(config.source, ticker, csv_dir),
                options=config.options(),
                period=config.period,
            )
        rows, results = [], {}
        for ticker, future in futures.items():  # report in the order asked for
            future.wait()
            state = future.state
            if state.is_completed():
                result = state.result()
                results[result["ticker"]] = result
                rows.append(report_row(ticker, result, cached=state.name == "Cached"))
            else:
                rows.append(report_row(ticker, error=state.result(raise_on_failure=False)))

    ok = sum(r["status"] in ("ok", "cached") for r in rows)
    create_table_artifact(
        _table(rows),
        key=REPORT_KEY,
        description=f"ingest from {config.source}: {ok} of {len(rows)} ticker(s) ingested",
    )
    logger = get_run_logger()
    for row in rows:
        if row["status"] == "failed":
            logger.error("%s: %s", row["ticker"], row["error"])
        elif row["status"] == "skipped":  # on_corrupt=skip: by choice, not a failure
            logger.warning("%s: %s", row["ticker"], row["error"])
    summary = {"tickers": rows, "results": results}
    why = verdict(rows, config.fail_on)
    if why is not None:
        return Failed(message=f"{why} (fail_on={config.fail_on})", data=summary)
    return summary


if __name__ == "__main__":  # `python -m flows.ingest`: the CLI's `ingest`, looked up by name
    import importlib  # (the entry-point layer sits above the flows: no import arrow up)
    import sys

    cli = importlib.import_module("tickercast.app.cli")
    raise SystemExit(cli.main(["ingest", *sys.argv[1:]]))
