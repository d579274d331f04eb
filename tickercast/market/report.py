"""Many tickers: `ingest_many`, the per-ticker report rows and the run's verdict."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tickercast.choices import FailOn
from tickercast.errors import CorruptSkippedError, PermanentSourceError, TransientSourceError
from tickercast.market.ingest import ingest_ticker


def report_row(
    ticker: str,
    result: dict | None = None,
    error: BaseException | str | None = None,
    cached: bool = False,
) -> dict:
    """One line of the run report (the Prefect table artifact's columns).

    `quirks` maps each kind of vendor quirk found this run to its row count (kinds in
    `tickercast.market.validate`); a cached ticker did nothing this run, so it has none.
    """
    if result is None:
        message = error if isinstance(error, str) else _describe(error)
        return {
            "ticker": ticker,
            # skipped by choice (on_corrupt=skip) is reported, not counted as a failure
            "status": "skipped" if isinstance(error, CorruptSkippedError) else "failed",
            "rows_added": 0,
            "rows": None,
            "first_day": None,
            "last_day": None,
            "rows_dropped": 0,
            "quirks": {},
            "warnings": [],
            "mode": None,
            "error": message,
        }
    return {
        "ticker": result["ticker"],
        "status": "cached" if cached else "ok",
        "rows_added": 0 if cached else result.get("rows_added", result["rows"]),
        "rows": result["rows"],
        "first_day": result["first_day"],
        "last_day": result["last_day"],
        # null rows, rows without a valid close, and rows dropped for quirks (on_quirk=drop)
        "rows_dropped": 0
        if cached
        else result["dropped_null_rows"] + result.get("dropped_quirk_rows", 0),
        "quirks": {} if cached else dict(result.get("quirks", {})),
        "warnings": [] if cached else list(result["warnings"]),
        "mode": "cached" if cached else result.get("mode"),
        "error": None,
    }


def quirks_text(quirks: dict[str, int]) -> str:
    """'open_zero 1987, close_above_high 3' (empty when none): the artifact's column."""
    return ", ".join(f"{kind} {count}" for kind, count in quirks.items())


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "failed"
    if isinstance(error, CorruptSkippedError):
        return str(error).splitlines()[0]
    kind = "permanent" if isinstance(error, PermanentSourceError) else type(error).__name__
    if isinstance(error, TransientSourceError):
        kind = "transient"
    return f"{kind}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


def verdict(rows: list[dict], fail_on: FailOn) -> str | None:
    """Why the run should end Failed under `fail_on`, or None when it should complete.

    `all`: only when every ticker failed; `any`: when at least one did; `never`: the
    report alone tells (the run completes).
    """
    failed = [r["ticker"] for r in rows if r["status"] == "failed"]
    if fail_on not in ("any", "all", "never"):
        raise ValueError(f"fail_on must be one of any, all, never; got {fail_on!r}")
    if not failed or fail_on == "never":
        return None
    if fail_on == "all" and len(failed) < len(rows):
        return None
    listed = ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
    return f"{len(failed)} of {len(rows)} ticker(s) failed: {listed}"


def ingest_many(
    tickers: Iterable[str],
    source: str,
    data_dir: str | Path,
    **kwargs: Any,
) -> tuple[list[dict], dict[str, dict]]:
    """`ingest_ticker` for each ticker; one failure never stops the others.

    Returns the report rows and the successful results by ticker (the flow does the same
    with one Prefect task per ticker).
    """
    rows, results = [], {}
    for ticker in tickers:
        try:
            result = ingest_ticker(ticker, source, data_dir, **kwargs)
        except Exception as exc:  # reported per ticker; the next one still runs
            rows.append(report_row(str(ticker), error=exc))
            continue
        results[result["ticker"]] = result
        rows.append(report_row(result["ticker"], result))
    return rows, results


def outcome_rows(outcomes: Iterable[Any]) -> list[dict]:
    """Report rows of per-ticker outcomes (`tickercast.fanout`), in their order: a
    finished ticker's value is (ingest result, whether it was cached)."""
    rows = []
    for o in outcomes:
        if o.ok:
            result, cached = o.value
            rows.append(report_row(o.ticker, result, cached=cached))
        else:
            rows.append(report_row(o.ticker, error=o.exception))
    return rows


def artifact_table(rows: list[dict]) -> list[dict]:
    """Report rows as the run's table artifact shows them (quirks and warnings as text)."""
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
