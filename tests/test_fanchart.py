"""The page's fan chart and summary pieces, without a service: bands, quantiles, age."""

from __future__ import annotations

import datetime as dt

from tickercast.choices import QUANTILES
from tickercast.delivery.fanchart import fan_chart, quantiles_of
from tickercast.delivery.page import data_age

DAYS = [f"2020-12-{d:02d}" for d in range(1, 12)]
CLOSES = [100.0 + d for d in range(11)]
ROW = {"horizon": 5, "forecast": 110.0, "lo_80": 105.0, "hi_80": 115.0, "lo_95": 101.0,
       "hi_95": 119.0, "target": "mean_close_log_return", "output": 1}  # fmt: skip


def test_bands_forecast_and_labels_are_drawn():
    svg = fan_chart(DAYS, CLOSES, [ROW], "AAPL")
    assert svg.startswith('<svg class="fan"') and "<script" not in svg and "http" not in svg
    for part in ('class="band-80"', 'class="band-95"', 'class="forecast"', "forecast 110.00"):
        assert part in svg
    assert "2020-12-18" in svg  # the horizon's last trading day (a weekend skipped)
    assert 'class="quantile"' not in svg
    assert fan_chart(DAYS, [], [ROW], "x") == "" and fan_chart(DAYS, CLOSES, [], "x") == ""


def test_the_quantile_grid_is_drawn_when_the_forecast_has_it():
    grid = {str(q): 100.0 + 20 * q for q in QUANTILES}
    assert list(quantiles_of({"quantiles": grid})) == list(QUANTILES)
    assert quantiles_of({"q_0.05": 101.0, "q_0.95": 119.0}) == {0.05: 101.0, 0.95: 119.0}
    svg = fan_chart(DAYS, CLOSES, [{**ROW, "quantiles": grid}], "AAPL")
    assert svg.count('class="quantile"') == len(QUANTILES)


def test_several_outputs_draw_a_fan_day_by_day():
    rows = [{**ROW, "output": j + 1, "target": "closes_log_return"} for j in range(5)]
    svg = fan_chart(DAYS, CLOSES, rows, "AAPL")
    assert svg.count('class="band-80"') == 5 and svg.count('class="forecast"') == 5


def test_data_age_marks_a_week_old_forecast_stale():
    today = dt.date(2020, 12, 14)  # a Monday
    assert data_age("2020-12-11", today) == (3, False)  # over a weekend: fresh
    assert data_age("2020-12-04", today) == (10, True)
    assert data_age("not a day", today) == (None, False)


def test_predicts_quantile_fields_are_read_and_written_flat():
    from tickercast.delivery.downloads import to_csv

    values = [100.0 + 20 * q for q in QUANTILES]
    row = {**ROW, "quantile_levels": list(QUANTILES), "quantiles": values}
    assert quantiles_of(row) == dict(zip(QUANTILES, values, strict=True))
    header, line = to_csv([row]).splitlines()
    assert "q_0.025" in header.split(",") and "quantiles" not in header.split(",")
    assert line.split(",")[header.split(",").index("q_0.5")] == "110.0"
