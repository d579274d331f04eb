"""The links from a version to the runs that made it: the ticker page's `run_links` with and
without recorded runs, and the MLflow UI address `tickercast.tracking.run_url` records
(no server needed: it is built from the tracking URI)."""

from __future__ import annotations

from tickercast.delivery.page import run_links
from tickercast.tracking import run_url

PREFECT = "http://127.0.0.1:4200/runs/flow-run/0b9e"
MLFLOW = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"


def test_both_runs_are_linked_prefect_first():
    html = run_links({"runs": {"prefect": PREFECT, "mlflow": MLFLOW, "mlflow_run_id": "abc123"}})
    assert html == f'<a href="{PREFECT}">Prefect flow run</a> · <a href="{MLFLOW}">MLflow run</a>'


def test_one_run_alone_is_linked_alone():
    assert run_links({"runs": {"mlflow": MLFLOW}}) == f'<a href="{MLFLOW}">MLflow run</a>'
    assert run_links({"runs": {"prefect": PREFECT}}) == f'<a href="{PREFECT}">Prefect flow run</a>'


def test_without_runs_the_page_says_none_was_recorded():
    none = '<span class="muted">no Prefect or MLflow run recorded</span>'
    assert run_links({}) == none
    assert run_links({"runs": None}) == none
    assert run_links({"runs": {"mlflow_run_id": "abc123"}}) == none  # an id, but no UI
    # what is not a web address is never made a link (a local store, a script URL)
    assert run_links({"runs": {"mlflow": "file:///tmp/mlruns", "prefect": "javascript:x"}}) == none


def test_a_link_is_escaped():
    html = run_links({"runs": {"mlflow": 'http://h/"><script>'}})
    assert "<script>" not in html and "&quot;&gt;&lt;script&gt;" in html


def test_the_mlflow_url_is_the_runs_page_in_the_ui():
    assert run_url("http://127.0.0.1:5000", "1", "abc123") == MLFLOW
    assert (
        run_url("https://mlflow.example/", "7", "r")
        == "https://mlflow.example/#/experiments/7/runs/r"
    )
    prefixed = run_url("https://host/mlflow/", "7", "r")
    assert prefixed == "https://host/mlflow/#/experiments/7/runs/r"


def test_the_mlflow_url_leaves_credentials_out_and_local_stores_have_none():
    assert (
        run_url("https://me:secret@host:8443", "2", "r")
        == "https://host:8443/#/experiments/2/runs/r"
    )
    assert run_url("sqlite:///mlflow.db", "2", "r") is None
    assert run_url("file:///tmp/mlruns", "2", "r") is None
    assert run_url("databricks", "2", "r") is None
