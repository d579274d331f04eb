"""The service's HTML pages: every champion at a glance, and one page per model's history.

Server-rendered with f-strings and `html.escape` (no template engine, no script, no
stylesheet or font from elsewhere): the service runs on machines without internet, and
Prefect's UI cannot show a bundle's local images. Every value that comes from a file
is escaped; the only URLs are the service's own (`plot_url`, `ticker_url`).

Images are the bundle's own PNGs, read through `plot_bytes`: only the names in `PLOTS`,
only when the bundle's manifest lists the file, and only when its checksum still matches.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tickercast.delivery.bundle import BundleError, checked_file, read_manifest, read_metadata
from tickercast.delivery.fanchart import fan_chart
from tickercast.delivery.words import band_words, target_words, verdict_words
from tickercast.delivery.words import naive_test as words_naive_test
from tickercast.evaluation.formats import fmt
from tickercast.evaluation.names import FORECASTERS, MODEL, NAIVE
from tickercast.evaluation.report import band_name
from tickercast.significance import format_p, verdict_of, verdict_text

# The bundle images a page shows, in this order, with their captions; `folds` exists only
# in bundles trained with a walk-forward backtest.
PLOTS: dict[str, str] = {
    "forecast": "Test split: forecast vs actual",
    "loss": "Training loss",
    "residuals": "Test residuals",
    "folds": "Walk-forward RMSE per fold",
}
METRIC_COLUMNS = (
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("mase", "MASE"),
    ("skill", "skill vs naive"),
    ("directional_accuracy", "direction hit %"),
)
ACTIONS = {
    "promote": "promoted by the gate",
    "reject": "rejected by the gate",
    "manual_promote": "promoted by hand",
    "rollback": "rollback",
}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header,main{max-width:1180px;margin:0 auto;padding:12px 20px}
header{border-bottom:1px solid #d8dce3}
h1{margin:8px 0 2px;font-size:24px}h2{margin:0 0 6px;font-size:20px}
h3{margin:16px 0 4px;font-size:15px}
a{color:#1f5fbf}
.muted{color:#5b6575}
.card,.overview{background:#fff;border:1px solid #d8dce3;border-radius:8px;margin:16px 0;
padding:14px 18px}
.card.problem{border-color:#d38b00}
.tag{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;background:#e9edf3;
margin-left:6px;vertical-align:middle}
.verdict{font-weight:600;padding:4px 10px;border-radius:6px;display:inline-block}
.better{background:#e3f5e6;color:#17612a}.worse{background:#fbe4e4;color:#8a1c1c}
.indistinguishable{background:#eef0f3;color:#39414e}
.warn{background:#fff4dc;border-left:4px solid #d38b00;padding:6px 10px}
table{border-collapse:collapse;margin:4px 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e7ec;padding:3px 10px;text-align:left;vertical-align:top}
.num{text-align:right;white-space:nowrap}
tr.champion td{background:#f1f8f2;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin-top:10px}
figure{margin:0;max-width:100%}
.plots figure{flex:0 1 calc(50% - 6px);min-width:300px}
figure img{width:100%;height:auto;border:1px solid #e4e7ec;border-radius:4px}
figcaption{font-size:12px;color:#5b6575}
.scroll{max-width:100%;overflow-x:auto}
.fan{width:100%;height:auto;max-width:760px;display:block}
.fan .tick{font-size:13px;fill:#39414e}
.stale{background:#fff4dc;color:#8a4b00;font-weight:600}
details{margin:6px 0}summary{cursor:pointer;color:#1f5fbf}
.lead{font-size:16px;margin:6px 0}
table.summary td,table.summary th{padding:6px 10px}
@media (max-width:640px){
.plots figure{flex-basis:100%;min-width:0}
header,main{padding:8px 10px}.card,.overview{padding:10px 10px}
table.summary thead{display:none}
table.summary,table.summary tbody,table.summary tr,table.summary td{display:block;width:auto}
table.summary tr{border-bottom:2px solid #d8dce3;padding:4px 0}
table.summary td{border:0;padding:2px 4px;text-align:left;white-space:normal}
table.summary td::before{content:attr(data-label) ": ";color:#5b6575;font-weight:400}
figure{flex-basis:100%}
}
"""


class Raw(str):
    """Markup built here (already escaped): a table cell that must not be escaped again."""


def esc(value: object) -> str:
    return value if isinstance(value, Raw) else html.escape("" if value is None else str(value))


def ticker_url(name: str) -> str:
    return f"/tickers/{quote(name, safe='')}"


def plot_url(name: str, plot: str, version: int) -> str:
    """The service's URL of one version's plot (a page names the version it shows, so a
    promotion between the page and its images cannot mix two versions)."""
    return f"/models/{quote(name, safe='')}/plots/{quote(plot, safe='')}.png?version={int(version)}"


# --------------------------------------------------------------------------- numbers


def price(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def percent(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else fmt(value, "+.1%" if signed else ".1%")


def _called(name: str, key: str, value: float | None) -> float | None:
    """No direction hit rate for naive: it makes no up/down call ('–', not '0.0')."""
    return None if key == "directional_accuracy" and name == NAIVE else value


def metric_cell(key: str, value: float | None) -> str:
    if key == "skill":
        return percent(value, signed=True)
    if key == "directional_accuracy":
        return "–" if value is None else f"{value:.1f}"
    return number(value)


# --------------------------------------------------------------------------- bundle files


def listed_plots(bundle_dir: Path) -> list[str]:
    """The names in `PLOTS` whose PNG the bundle's manifest lists, in page order."""
    files = read_manifest(bundle_dir)
    return [name for name in PLOTS if f"{name}.png" in files]


def plot_bytes(bundle_dir: Path, name: str) -> tuple[bytes, str]:
    """The bundle's PNG `name` and its sha256 (checked against the manifest): a
    FileNotFoundError unless `name` is one of `PLOTS` and the manifest lists it (so no
    other file and no path can be asked for), BundleError when the file no longer matches
    its checksum (the bundle was changed after export)."""
    if name not in PLOTS:
        raise FileNotFoundError(f"no plot named {name!r}; plots: {', '.join(PLOTS)}")
    data, digest = checked_file(bundle_dir, f"{name}.png")
    return data, digest


# --------------------------------------------------------------------------- pieces


def table(headers: Iterable[str], rows: Iterable[Iterable[object]], classes=()) -> str:
    """An HTML table; `classes` gives a class per row (e.g. the champion's). `Raw` cells
    are text (left-aligned), the others numbers (right-aligned, escaped here); a column
    is aligned like its first row's cell."""
    classes, rows = list(classes), [list(r) for r in rows]
    kinds = ["text" if isinstance(c, Raw) else "num" for c in (rows[0] if rows else [])]
    head = "".join(
        f'<th class="{kinds[i] if i < len(kinds) else "text"}">{esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{esc(classes[i])}"' if i < len(classes) and classes[i] else ""
        cells = "".join(
            f'<td class="{"text" if isinstance(c, Raw) else "num"}">{esc(c)}</td>' for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def when(stamp: object) -> str:
    """An ISO time as '2024-01-02 15:04 UTC' (as stored when it is not one)."""
    try:
        moment = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return "–" if stamp is None else str(stamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def naive_test(metrics: Mapping) -> dict:
    """The Diebold-Mariano test of the model against naive that evaluation recorded."""
    return words_naive_test({"metrics": metrics})


def verdict_badge(test: Mapping, name: str = NAIVE) -> str:
    """'beats naive (DM p = 0.012)' coloured by the verdict, never by a difference's sign."""
    state = test.get("verdict") or verdict_of(test.get("p_value"), test.get("mean_diff"))
    return f'<span class="verdict {esc(state)}">{esc(verdict_text(name, test))}</span>'


def forecast_table(rows: list[dict]) -> str:
    """The latest forecast, one row per output, with the conformal bands."""
    out = []
    for row in rows:
        out.append(
            [
                Raw(esc(row.get("as_of"))),
                f"+{row.get('horizon')} days" if len(rows) == 1 else f"output {row['output']}",
                price(row.get("last_close")),
                price(row.get("forecast")),
                f"{price(row.get('lo_80'))} – {price(row.get('hi_80'))}",
                f"{price(row.get('lo_95'))} – {price(row.get('hi_95'))}",
            ]
        )
    headers = ("as of", "horizon", "last close", "forecast", "80% band", "95% band")
    return table(headers, out)


def test_split(metadata: Mapping) -> str:
    """Every forecaster's test metrics and its DM test against the model, interval coverage."""
    metrics = metadata.get("metrics") or {}
    window = (metadata.get("evaluation") or {}).get("window") or {}
    parts = []
    if window:
        parts.append(
            f'<p class="muted">{esc(window.get("windows"))} test windows, targets '
            f"{esc(window.get('first_target'))} to {esc(window.get('last_target'))}</p>"
        )
    names = [n for n in FORECASTERS if n in metrics] + [n for n in metrics if n not in FORECASTERS]
    rows = []
    for name in names:
        m = metrics[name]
        vs = ""
        if name != MODEL:
            state = m.get("dm_verdict") or "–"
            said = {"better": "model better", "worse": "model worse"}.get(state, state)
            vs = f"{said} (p {format_p(m.get('dm_p'))})"
        rows.append(
            [Raw(esc(name))]
            + [metric_cell(k, _called(name, k, m.get(k))) for k, _ in METRIC_COLUMNS]
            + [Raw(esc(vs))]
        )
    headers = ["forecaster", *(label for _, label in METRIC_COLUMNS), "DM test, model vs it"]
    parts.append(table(headers, rows, ["champion" if n == MODEL else "" for n in names]))
    cover = [
        f"{percent(c.get('nominal'))} band covered {percent(c.get('coverage_test'))}"
        for _, c in sorted((metadata.get("intervals") or {}).items())
    ]
    if cover:
        text = "; ".join(cover)
        parts.append(f'<p class="muted">Conformal intervals on the test windows: {esc(text)}.</p>')
    return "".join(parts)


def walk_forward(metadata: Mapping) -> str:
    """The walk-forward backtest's pooled verdict, mean ± std per forecaster, and its folds."""
    wf = metadata.get("walk_forward")
    if not wf:
        return (
            '<p class="muted">No walk-forward backtest in this bundle '
            "(retrain with <code>--walk-forward-folds K</code>).</p>"
        )
    summary = wf.get("summary") or {}
    metrics = summary.get("metrics") or {}
    pooled = (summary.get("significance") or {}).get(NAIVE) or {}
    parts = [
        f"<p>{esc(wf.get('n_folds'))} expanding folds (training epochs per fold: "
        f"{esc(wf.get('epochs_per_fold'))}); pooled over every fold's test windows the model "
        f"{verdict_badge(pooled)}</p>"
    ]

    def mean_std(name: str, key: str) -> str:
        cell = (metrics.get(name) or {}).get(key) or {}
        if cell.get("mean") is None:
            return "–"
        return f"{metric_cell(key, cell['mean'])} ± {metric_cell(key, cell.get('std'))}"

    names = [n for n in FORECASTERS if n in metrics]
    rows = [[Raw(esc(n))] + [mean_std(n, k) for k, _ in METRIC_COLUMNS[:4]] for n in names]
    headers = ["forecaster", *(f"{label} (mean ± std)" for _, label in METRIC_COLUMNS[:4])]
    parts.append(table(headers, rows, ["champion" if n == MODEL else "" for n in names]))
    folds = []
    for fold in wf.get("folds") or []:
        m = fold.get("metrics") or {}
        folds.append(
            [
                Raw(f"fold {esc(fold.get('fold'))}"),
                Raw(f"{esc(fold.get('test_first_target'))} to {esc(fold.get('test_last_target'))}"),
                fold.get("test_windows"),
                number((m.get(MODEL) or {}).get("rmse")),
                number((m.get(NAIVE) or {}).get("rmse")),
                percent((m.get(MODEL) or {}).get("skill"), signed=True),
            ]
        )
    if folds:
        headers = ("fold", "test targets", "windows", "model RMSE", "naive RMSE", "skill")
        parts.append(table(headers, folds))
    return "".join(parts)


def figures(name: str, version: int, plots: list[str]) -> str:
    items = [
        f'<figure><a href="{esc(plot_url(name, plot, version))}">'
        f'<img src="{esc(plot_url(name, plot, version))}" '
        f'alt="{esc(name)} v{version}: {esc(PLOTS[plot])}" loading="eager"></a>'
        f"<figcaption>{esc(PLOTS[plot])} (click for full size)</figcaption></figure>"
        for plot in plots
    ]
    return f'<div class="plots">{"".join(items)}</div>' if items else ""


def document(title: str, body: str) -> str:
    """A whole page: inline CSS, no script, nothing loaded from another origin."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- the index


@dataclass
class ChampionView:
    """What the index shows about one model name; `bundle` is None when none is served."""

    name: str
    champion: int | None  # the registry's champion
    bundle: object | None = None  # the served Bundle (the champion, or the one kept)
    forecast: list[dict] = field(default_factory=list)
    forecast_error: str | None = None
    error: str | None = None  # why the registry's champion is not the one served
    history: tuple[list[str], list[float]] | None = None  # recent (days, closes) for the fan
    live: str = ""  # the live record's HTML fragment (tickercast.delivery.live_page)


def champion_card(view: ChampionView) -> str:
    """One champion's card: the verdict and forecast in words, the fan chart, the
    statistics behind the verdict one click away, then the detail tables and plots."""
    name = view.name
    link = f'<a href="{esc(ticker_url(name))}">{esc(name)}</a>'
    if view.bundle is None:
        why = view.error or "no champion"
        return (
            f'<section class="card problem" id="{esc(name)}"><h2>{link}</h2>'
            f'<p class="warn">{esc(why)}</p></section>'
        )
    return "".join(
        [*_card_head(view, link), _fan_figure(view), _statistics(view), *_card_details(view)]
        + ["</section>"]
    )


def _card_head(view: ChampionView, link: str) -> list[str]:
    """The card's title (version, model), any problem, the verdict and the forecast."""
    b = view.bundle
    meta = b.metadata
    config = meta.get("config") or {}
    parts = [
        f'<section class="card{" problem" if view.error else ""}" id="{esc(view.name)}">',
        f'<h2>{link}<span class="tag">v{b.version}</span>'
        f'<span class="tag">{esc(config.get("model", "model"))}</span></h2>',
    ]
    if view.error:
        parts.append(f'<p class="warn">{esc(view.error)}</p>')
    state, words = verdict_words(meta)
    parts.append(f'<p class="lead"><span class="verdict {esc(state)}">{esc(words)}</span></p>')
    if view.forecast:
        row = view.forecast[0]
        parts.append(
            f'<p class="lead">{esc(target_words(row))} after {esc(row.get("as_of"))}: '
            f"<strong>{price(row.get('forecast'))}</strong> ({esc(band_words(row) or 'no band')})"
            "</p>"
        )
    return parts


def _fan_figure(view: ChampionView) -> str:
    """The fan chart: recent closes and the coming horizon's forecast with its bands,
    captioned with the band the version ships."""
    if view.history is None or not view.forecast:
        return ""
    days, closes = view.history
    title = f"{view.name}: closes and the next {view.bundle.spec.horizon} trading days' forecast"
    distribution = (view.bundle.metadata.get("evaluation") or {}).get("distribution") or {}
    band = band_name(distribution.get("model")) or "the volatility band"
    return (
        f'<figure class="fanfig">{fan_chart(days, closes, view.forecast, title)}'
        f"<figcaption>{esc(title)}: the thick line is the forecast, the dark band 80%, "
        f"the light band 95% ({esc(band)}, calibrated on the validation windows)"
        "</figcaption></figure>"
    )


def _statistics(view: ChampionView) -> str:
    """The statistics behind the verdict, folded: DM against naive, the shrinkage, and
    what the model reads and was trained on."""
    meta, spec = view.bundle.metadata, view.bundle.spec
    data = meta.get("data") or {}
    shrink = meta.get("shrinkage") or {}
    alpha = (
        f"; shrinkage toward the last close: alpha {number(shrink.get('alpha'))}"
        if shrink.get("alpha") is not None
        else ""
    )
    badge = verdict_badge(naive_test(meta.get("metrics") or {}))
    return (
        "<details><summary>Statistics behind the verdict</summary>"
        f"<p>Against naive on the test split: {badge}{esc(alpha)}</p>"
        f'<p class="muted">target {esc(spec.target)}, horizon {spec.horizon} days, lookback '
        f"{spec.lookback}, features {esc(', '.join(spec.features))}; trained on "
        f"{esc(data.get('first_day'))} to {esc(data.get('last_day'))} "
        f"({esc(data.get('source'))}), exported {esc(when(meta.get('created_at')))}</p>"
        "</details>"
    )


def _card_details(view: ChampionView) -> list[str]:
    """The detail tables below the answer: the latest forecast, the live record, the test
    split, the walk-forward backtest and the version's plots."""
    name, b = view.name, view.bundle
    parts = ["<h3>Latest forecast</h3>"]
    if view.forecast:
        parts.append(forecast_table(view.forecast))
    else:
        parts.append(f'<p class="warn">no forecast: {esc(view.forecast_error)}</p>')
    if view.live:
        parts.append("<h3>Live record</h3>" + view.live)
        parts.append(
            f'<p class="muted">Scored forecasts (the ledger): <a href="/ledger/'
            f'{esc(quote(name, safe=""))}">JSON</a></p>'
        )
    parts.append("<h3>Test split</h3>" + test_split(b.metadata))
    parts.append("<h3>Walk-forward backtest</h3>" + walk_forward(b.metadata))
    try:
        plots = listed_plots(b.path)
    except BundleError as exc:
        plots = []
        parts.append(f'<p class="warn">{esc(exc)}</p>')
    parts.append(figures(name, b.version, plots))
    return parts


STALE_DAYS = 5  # calendar days: a weekend and a holiday are not stale, a week is


def data_age(as_of: object, today: dt.date | None = None) -> tuple[int | None, bool]:
    """(days since the forecast's last data day, stale?)."""
    try:
        day = dt.date.fromisoformat(str(as_of)[:10])
    except ValueError:
        return None, False
    days = ((today or dt.datetime.now(dt.UTC).date()) - day).days
    return days, days > STALE_DAYS


def age_text(days: int | None) -> str:
    if days is None:
        return "–"
    if days >= 730:
        return f"{days // 365} years"
    if days >= 60:
        return f"{days // 30} months"
    return f"{days} day" + ("" if days == 1 else "s")


def summary_table(views: list[ChampionView]) -> str:
    """One row per champion: the answer at a glance, each row linking to its card. On a
    phone the rows become stacked blocks (CSS), so nothing spills sideways."""
    rows = []
    for view in views:
        link = f'<a href="#{esc(view.name)}">{esc(view.name)}</a>'
        if view.bundle is None or not view.forecast:
            why = view.error or view.forecast_error or "no champion"
            version = f"v{view.bundle.version}" if view.bundle is not None else "–"
            rows.append(
                f'<tr><td data-label="ticker">{link}</td><td data-label="version">{version}</td>'
                f'<td data-label="status" colspan="5" class="warn">{esc(why)}</td></tr>'
            )
            continue
        row = view.forecast[0]
        days, stale = data_age(row.get("as_of"))
        state, words = verdict_words(view.bundle.metadata)
        age_cls = ' class="stale"' if stale else ""
        rows.append(
            f'<tr><td data-label="ticker">{link}</td>'
            f'<td data-label="version">v{view.bundle.version}</td>'
            f'<td data-label="data as of">{esc(row.get("as_of"))}</td>'
            f'<td data-label="data age"{age_cls}>{esc(age_text(days))}'
            f"{' (stale)' if stale else ''}</td>"
            f'<td data-label="last close" class="num">{price(row.get("last_close"))}</td>'
            f'<td data-label="forecast"><strong>{price(row.get("forecast"))}</strong> '
            f'<span class="muted">{esc(target_words(row))}</span><br>'
            f"{esc(band_words(row))}</td>"
            f'<td data-label="verdict"><span class="verdict {esc(state)}">{esc(words)}</span></td>'
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "ticker",
            "version",
            "data as of",
            "data age",
            "last close",
            "forecast",
            "verdict",
        )
    )
    return (
        '<section class="overview" id="summary"><h2>Every champion</h2>'
        f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table>"
        '<p class="muted">Download the latest forecasts: <a href="/downloads/forecasts.csv">'
        'CSV</a> · <a href="/downloads/forecasts.json">JSON</a></p></section>'
    )


def index_page(views: list[ChampionView], data_dir: str | Path) -> str:
    """`/`: a summary row per champion, then each champion's card."""
    served = sum(1 for v in views if v.bundle is not None)
    cards = "".join(champion_card(v) for v in views) or (
        f'<p class="warn">No models under {esc(data_dir)}: run <code>tickercast retrain</code> '
        "first.</p>"
    )
    body = (
        "<header><h1>Tickercast champions</h1>"
        f'<p class="muted">{served} of {len(views)} models served from {esc(data_dir)} · '
        f"{esc(_now())} · verdicts are Diebold-Mariano tests at 5% · "
        '<a href="/docs">API</a></p></header>'
        f"<main>{summary_table(views) if views else ''}{cards}</main>"
    )
    return document("Tickercast champions", body)


# --------------------------------------------------------------------------- one model


def version_events(history: list[dict]) -> dict[int, list[str]]:
    """Per version, what happened to it, in order: 'promoted by the gate 2024-01-02', ..."""
    events: dict[int, list[str]] = {}
    for event in history:
        day = str(event.get("at", ""))[:10]
        version = event.get("version")
        if event.get("action") == "rollback":
            before = event.get("champion_before")
            if before is not None:
                events.setdefault(int(before), []).append(f"rolled back to v{version} {day}")
            events.setdefault(int(version), []).append(f"champion again (rollback) {day}")
        elif version is not None:
            label = ACTIONS.get(event.get("action"), str(event.get("action")))
            events.setdefault(int(version), []).append(f"{label} {day}")
    return events


def plot_links(name: str, version: int, version_dir: Path) -> str:
    try:
        plots = listed_plots(version_dir)
    except BundleError:
        return "–"
    return " ".join(f'<a href="{esc(plot_url(name, p, version))}">{esc(p)}</a>' for p in plots)


def _metadata(version_dir: Path) -> dict:
    try:
        return read_metadata(version_dir)
    except (OSError, ValueError):
        return {}


def _naive_verdict(version_dir: Path) -> dict:
    meta = _metadata(version_dir)
    return naive_test(meta.get("metrics") or {}) if meta else {}


DATA_FIELDS = ("source", "first_day", "last_day", "rows", "dropped_null_rows", "sha256")
DIFF_METRICS = (("rmse", "RMSE"), ("mae", "MAE"), ("skill", "skill vs naive"))


def changes(new: Mapping, old: Mapping, keys: Iterable[str] | None = None) -> list[list]:
    """[key, old, new] for every key whose value differs (paths and times left out)."""
    keys = keys or sorted(set(new) | set(old))
    out = []
    for key in keys:
        if key in ("data_dir", "created_at") or new.get(key) == old.get(key):
            continue
        out.append([Raw(esc(key)), Raw(esc(_short(old.get(key)))), Raw(esc(_short(new.get(key))))])
    return out


def _short(value: object) -> str:
    text = "–" if value is None else str(value)
    return text[:12] + "…" if len(text) == 64 and text.isalnum() else text  # a sha256


def run_links(meta: Mapping) -> str:
    """Links to the version's Prefect flow run and MLflow run, when its metadata records
    them (`runs`: {"prefect": url, "mlflow": url}); otherwise says so."""
    runs = meta.get("runs") or {}
    found = [
        f'<a href="{esc(url)}">{esc(name)} run</a>'
        for name, url in (("Prefect flow", runs.get("prefect")), ("MLflow", runs.get("mlflow")))
        if isinstance(url, str) and url.startswith(("http://", "https://", "/"))
    ]
    return " · ".join(found) or '<span class="muted">no Prefect or MLflow run recorded</span>'


def compare_versions(name: str, versions: list[int], versions_dir: Path, champion) -> str:
    """Per version (newest first): its test-split plot, what changed since the version
    before it (metrics, config, data), its downloads and its runs."""
    metas = {v: _metadata(versions_dir / str(v)) for v in versions}
    parts = []
    for i, v in enumerate(versions):
        meta, before = metas[v], metas.get(versions[i + 1]) if i + 1 < len(versions) else None
        body = [
            f"<p>{run_links(meta)} · test predictions: "
            f'<a href="/downloads/{quote(name, safe="")}/v{v}/test.csv">CSV</a> · '
            f'<a href="/downloads/{quote(name, safe="")}/v{v}/test.json">JSON</a></p>'
        ]
        try:
            plots = [p for p in listed_plots(versions_dir / str(v)) if p == "forecast"]
        except BundleError:
            plots = []
        body.append(figures(name, v, plots))
        if before is not None:
            prev = versions[i + 1]
            new_m, old_m = (
                (meta.get("metrics") or {}).get(MODEL) or {},
                (before.get("metrics") or {}).get(MODEL) or {},
            )
            rows = []
            for key, label in DIFF_METRICS:
                a, b = old_m.get(key), new_m.get(key)
                delta = None if a is None or b is None else b - a
                rows.append(
                    [
                        Raw(label),
                        metric_cell(key, a),
                        metric_cell(key, b),
                        percent(delta, signed=True)
                        if key == "skill"
                        else ("–" if delta is None else f"{delta:+.4g}"),
                    ]
                )
            body.append(
                f"<h3>Test metrics, v{prev} → v{v}</h3>"
                + table(("metric", f"v{prev}", f"v{v}", "change"), rows)
            )
            config = changes(meta.get("config") or {}, before.get("config") or {})
            data = changes(meta.get("data") or {}, before.get("data") or {}, DATA_FIELDS)
            for title, diff in (("Config changes", config), ("Data changes", data)):
                body.append(
                    f"<h3>{title} since v{prev}</h3>"
                    + (
                        table(("setting", f"v{prev}", f"v{v}"), diff)
                        if diff
                        else '<p class="muted">none</p>'
                    )
                )
        opened = " open" if v == champion else ""
        parts.append(
            f"<details{opened}><summary>v{v}{' (champion)' if v == champion else ''}"
            f"</summary>{''.join(body)}</details>"
        )
    return '<section class="card"><h2>Compare versions</h2>' + "".join(parts) + "</section>"


def ticker_page(
    name: str, shown: dict, versions_dir: Path, served: int | None, error: str | None
) -> str:
    """`/tickers/{name}`: every version (when, data, metrics, verdict, what happened to it)
    and the registry's history. `shown` is `registry.show()`; `served` the version the
    service answers with (it differs from the champion when that one was refused)."""
    champion = shown.get("champion")
    lineage = " → ".join(f"v{v}" for v in shown.get("lineage") or []) or "none"
    body = [
        f'<header><h1>{esc(name)}</h1><p class="muted"><a href="/">all champions</a> · '
        f"champion {esc(_v(champion))} · served {esc(_v(served))} · lineage {esc(lineage)}</p>"
        "</header><main>"
    ]
    if error:
        body.append(f'<p class="warn">{esc(error)}</p>')
    body.append(_versions_table(name, shown, versions_dir, served))
    numbers = [v["version"] for v in reversed(shown.get("versions") or [])]
    body.append(compare_versions(name, numbers, versions_dir, champion))
    body.append(_registry_history(shown.get("history") or []) + "</main>")
    return document(f"{name}: versions", "".join(body))


def _versions_table(name: str, shown: dict, versions_dir: Path, served: int | None) -> str:
    """One row per version, newest first: when, data, test metrics, verdict, registry
    events, the files' state and the version's plots; the champion's row marked."""
    champion = shown.get("champion")
    events = version_events(shown.get("history") or [])
    rows, classes = [], []
    for v in reversed(shown.get("versions") or []):
        number_ = v["version"]
        marks = [
            m for m, on in (("champion", number_ == champion), ("served", number_ == served)) if on
        ]
        state = "intact" if v.get("intact") else f"damaged: {v.get('problem', '')}"
        test = _naive_verdict(versions_dir / str(number_))
        rows.append(
            [
                Raw(f"v{number_}" + "".join(f'<span class="tag">{m}</span>' for m in marks)),
                Raw(esc(when(v.get("created_at")))),
                Raw(esc(v.get("last_day"))),
                number(v.get("rmse")),
                number(v.get("naive_rmse")),
                percent(v.get("skill"), signed=True),
                Raw(verdict_badge(test)) if test else Raw("–"),
                Raw("<br>".join(esc(e) for e in events.get(number_, [])) or "never promoted"),
                Raw(esc(state)),
                Raw(plot_links(name, number_, versions_dir / str(number_))),
            ]
        )
        classes.append("champion" if number_ == champion else "")
    headers = (
        "version", "exported", "trained to", "test RMSE", "naive RMSE", "skill",
        "vs naive", "registry events", "files", "plots",
    )  # fmt: skip
    return f'<section class="card"><h2>Versions</h2>{table(headers, rows, classes)}</section>'


def _registry_history(history: list[dict]) -> str:
    """The registry's events, newest first: what moved the champion, and why."""
    rows = [
        [
            Raw(esc(when(e.get("at")))),
            Raw(esc(ACTIONS.get(e.get("action"), e.get("action")))),
            f"v{e.get('version')}",
            f"{_v(e.get('champion_before'))} → {_v(e.get('champion_after'))}",
            Raw(esc(e.get("reason"))),
        ]
        for e in reversed(history)
    ]
    return (
        '<section class="card"><h2>Registry history</h2>'
        + (
            table(("when", "action", "version", "champion", "reason"), rows)
            if rows
            else '<p class="muted">nothing promoted yet</p>'
        )
        + "</section>"
    )


def error_page(status: int, message: str) -> str:
    """What a page route answers instead of itself: the status and why, as a page."""
    body = (
        f'<header><h1>{status}</h1><p class="muted"><a href="/">all champions</a></p></header>'
        f'<main><p class="warn">{esc(message)}</p></main>'
    )
    return document(f"{status}: {message}", body)


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"
