"""A search's reports: the trial table (trials.json, trials.csv, the table artifact's
rows) and the markdown summary."""

from __future__ import annotations

from pathlib import Path

from tickercast.atomic import atomic_path, write_json
from tickercast.tuning.config import OBJECTIVE


def flat_row(row: dict, digits: int | None = None) -> dict:
    """A trial row for a CSV or table artifact (units joined, optionally rounded)."""
    out = {k: v for k, v in row.items() if k != "values"}
    out["units"] = "-".join(str(u) for u in row["units"])
    if digits is not None:
        out = {k: float(f"{v:.{digits}g}") if isinstance(v, float) else v for k, v in out.items()}
    return out


def write_trials(run_dir: Path, rows: list[dict]) -> dict[str, Path]:
    """trials.json (every field) and trials.csv (one line per trial)."""
    import pandas as pd

    paths = {"json": run_dir / "trials.json", "csv": run_dir / "trials.csv"}
    write_json(paths["json"], rows)
    columns = [
        "trial",
        "status",
        "best",
        "model",
        "units",
        "dropout",
        "l2",
        "learning_rate",
        "batch_size",
        "lookback",
        "epochs",
        "epochs_run",
        "best_epoch",
        OBJECTIVE,
        "val_loss",
        "seconds",
        "continues",
        "message",
    ]
    frame = pd.DataFrame([flat_row(r) for r in rows], columns=columns)
    with atomic_path(paths["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    return paths


def summary_lines(
    run: str,
    run_dir: Path,
    rows: list[dict],
    best: dict | None,
    ran: list[str],
    stop_reason: str | None,
) -> list[str]:
    """The markdown report of a search (also what the flow logs)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        f"# Tune {run}",
        "",
        f"- folder: `{run_dir}`",
        f"- trials: {len(rows)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
        f"{len(ran)} run now" + (f"; stopped: {stop_reason}" if stop_reason else ""),
        "- selection: validation MSE (scaled target) on the validation split; the test split "
        "is read only by the final retrain of the chosen configuration",
    ]
    if best:
        s = best
        lines += [
            f"- best: trial {best['trial']}, val MSE {best[OBJECTIVE]:.6g}: {s['model']} units "
            f"{s['units']}, lookback {s['lookback']}, batch {s['batch_size']}, learning rate "
            f"{s['learning_rate']:.3g}, dropout {s['dropout']:.3g}, l2 {s['l2']:.3g}",
            f"- best.json: `{run_dir / 'best.json'}` (tickercast retrain --config ...)",
        ]
    return lines
