"""What an evaluation says: the plain verdict, the JSON summary metadata.json and the
promotion gate read, the report's tables, and the files of one evaluation."""

from __future__ import annotations

from pathlib import Path

from tickercast.evaluation.baseline_registry import legend
from tickercast.evaluation.formats import fmt, p_cell
from tickercast.evaluation.jsonsafe import clean
from tickercast.evaluation.metrics import skill
from tickercast.evaluation.names import MODEL, NAIVE
from tickercast.evaluation.plots import plot_forecast, plot_loss, plot_residuals
from tickercast.significance import format_p


def verdict(results: dict[str, dict[str, float]]) -> str:
    """Plain sentences: is the model better than naive *by a test* (Diebold-Mariano at 5%),
    and which baselines are significantly better than the model?"""
    model_rmse, naive_rmse = results[MODEL]["rmse"], results[NAIVE]["rmse"]
    s = fmt(skill(model_rmse, naive_rmse), "+.1%")
    test = results[NAIVE]
    p = format_p(test.get("dm_p"))
    state = test.get("dm_verdict") or "indistinguishable"
    if state == "better":
        text = f"The model beats the naive last-close forecast (RMSE skill {s}, DM p {p})."
    elif state == "worse":
        text = (
            f"The model is worse than the naive last-close forecast (RMSE skill {s}, "
            f"DM p {p}): do not trade on it."
        )
    else:
        text = (
            f"The model is indistinguishable from the naive last-close forecast (RMSE skill "
            f"{s}, DM p {p}): no evidence of skill."
        )
    better = [
        f"{name} (p {format_p(values.get('dm_p'))})"
        for name, values in results.items()
        if name not in (MODEL, NAIVE) and values.get("dm_verdict") == "worse"
    ]
    if better:
        text += f" Baselines significantly better than the model: {', '.join(better)}."
    return text


def report_rows(results: dict[str, dict[str, float]]) -> list[dict]:
    """One row per forecaster for a table artifact, rounded, None where undefined."""
    return [
        {
            "forecaster": name,
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()},
        }
        for name, values in results.items()
    ]


def markdown_table(
    results: dict[str, dict[str, float]], described: dict[str, str] | None = None
) -> list[str]:
    """Every forecaster's metrics as a markdown table, then what each baseline is
    (`described`: the descriptions stored with these metrics; default: the registry's)."""
    lines = [
        "| forecaster | RMSE | MAE | MAPE % | sMAPE % | MASE | direction % | skill vs naive "
        "| DM p (model vs it) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results.items():
        lines.append(
            f"| {name} | {fmt(v.get('rmse'), '.4f')} | {fmt(v.get('mae'), '.4f')} | "
            f"{fmt(v.get('mape'), '.2f')} | {fmt(v.get('smape'), '.2f')} | "
            f"{fmt(v.get('mase'), '.3f')} | {fmt(v.get('directional_accuracy'), '.1f')} | "
            f"{fmt(v.get('skill'), '+.1%')} | "
            + ("—" if name == MODEL else f"{p_cell(v.get('dm_p'))} ({v.get('dm_verdict')})")
            + " |"
        )
    baselines = legend([n for n in results if n != MODEL], described)
    if baselines:
        lines += ["", "Baselines:", "", *(f"- {line}" for line in baselines)]
    return lines


def distribution_table(record: dict | None) -> list[str]:
    """The distribution table of an evaluation (`evaluation.distribution`): per forecaster
    CRPS, interval scores, pinball loss, coverage with Kupiec's p, the DM test of the
    model's CRPS against it, then the verdicts in words."""
    if not record or not record.get("metrics"):
        return [f"Distribution: {(record or {}).get('note') or 'not evaluated'}."]
    lines = [
        "| forecaster | CRPS | interval 80% | interval 95% | pinball | coverage 80% (Kupiec p) "
        "| coverage 95% (Kupiec p) | DM p, CRPS (model vs it) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in record["metrics"].items():
        dm = (v.get("dm") or {}).get("crps") or {}
        lines.append(
            f"| {name} | {fmt(v.get('crps'), '.4f')} | {fmt(v.get('interval_80'), '.4f')} | "
            f"{fmt(v.get('interval_95'), '.4f')} | {fmt(v.get('pinball'), '.4f')} | "
            f"{fmt(v.get('coverage_80'), '.1%')} ({p_cell(v.get('kupiec_p_80'))}) | "
            f"{fmt(v.get('coverage_95'), '.1%')} ({p_cell(v.get('kupiec_p_95'))}) | "
            + ("—" if name == MODEL else f"{p_cell(dm.get('p'))} ({v.get('verdict')})")
            + " |"
        )
    band = band_words(record.get("model"))
    lines += ["", f"The model's band: {band}. " + "; ".join(record.get("verdicts") or []) + "."]
    described = record.get("baselines") or {}
    if described:
        lines += ["", "Distribution baselines (same median, same calibration):", ""]
        lines += [f"- `{n}`: {text}" for n, text in described.items()]
    for name, why in (record.get("failed") or {}).items():
        lines.append(f"- `{name}` not scored: {why}")
    return lines


def band_name(model: dict | None) -> str | None:
    """The band a version ships, named briefly (`evaluation.distribution.model`): its
    quantile head, or the calibrated band, saying when a GARCH fit fell back to EWMA."""
    from tickercast.evaluation.distribution import LABELS

    form = (model or {}).get("form")
    if form is None or form == "network":
        return None if form is None else "the network's quantile head"
    params = ((model or {}).get("calibration") or {}).get("params") or {}
    if params.get("band") and params["band"] != form:  # the fit could not be made
        return f"{LABELS['ewma']} (the {LABELS.get(form, form)} fit could not be made)"
    return LABELS.get(form, form)


def band_words(model: dict | None) -> str:
    """The shipped band in a sentence for the retrain report: its name, the fitted
    parameters of a variance recursion (or why it fell back) and its calibration."""
    name = band_name(model) or "not recorded"
    params = ((model or {}).get("calibration") or {}).get("params") or {}
    if params.get("note"):
        return f"{name}: {params['note']}"
    if not params:
        return name
    fitted = ", ".join(
        f"{k} {params[k]:.3g}"
        for k in ("alpha", "gamma", "beta", "nu")
        if isinstance(params.get(k), (int, float))
    )
    return (
        f"{name} around the model's forecast, fit on {params.get('fit_returns')} training "
        f"returns ({fitted}), run over the last {params.get('returns')} daily returns "
        "before each origin and calibrated split-conformally on the validation windows"
    )


def distribution_summary(metadata: dict) -> dict | None:
    """What `models show` prints of a version's distribution: its band's form, test CRPS
    and coverage, and the verdicts against the distribution baselines; None when the
    version was evaluated before distributions were."""
    record = (metadata.get("evaluation") or {}).get("distribution") or {}
    model = (record.get("metrics") or {}).get(MODEL)
    if not model:
        return None
    return {
        "form": (record.get("model") or {}).get("form"),
        "band": band_name(record.get("model")),
        **{k: model.get(k) for k in ("crps", "coverage_80", "coverage_95")},
        "verdicts": record.get("verdicts") or [],
    }


def evaluation_summary(ev: dict) -> dict:
    """The JSON-ready part of an evaluation (what metadata.json and the gate read)."""
    return clean(
        {
            "metrics": ev["metrics"],
            "verdict": verdict(ev["metrics"]),
            "intervals": ev["intervals"],
            "evaluation": {
                "window": ev["window"],
                "mase_scale": ev["mase_scale"],
                "baselines": ev["baselines"],
                "up_share": ev["up_share"],
                # the model's quantile grid against the distribution baselines (issue 21)
                "distribution": ev.get("distribution"),
            },
        }
    )


def write_evaluation(out_dir: Path, ev: dict, history: dict, ticker: str) -> dict[str, Path]:
    """The window table (`layout.PREDICTIONS_FILE`), metrics.json and the three plots of
    one evaluation."""
    from tickercast import layout
    from tickercast.atomic import write_json
    from tickercast.evaluation import window_table

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "predictions": out_dir / layout.PREDICTIONS_FILE,
        "metrics_json": out_dir / "metrics.json",
        "loss_png": out_dir / "loss.png",
        "forecast_png": out_dir / "forecast.png",
        "residuals_png": out_dir / "residuals.png",
    }
    window_table.write(paths["predictions"], ev["table"])
    write_json(paths["metrics_json"], evaluation_summary(ev))
    plot_loss(history, paths["loss_png"], f"{ticker}: training loss")
    plot_forecast(ev["table"], paths["forecast_png"], f"{ticker}: test-split forecast vs actual")
    plot_residuals(ev["table"], paths["residuals_png"], f"{ticker}: test residuals")
    return paths
