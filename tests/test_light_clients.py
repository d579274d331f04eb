"""Task runs on this machine build their Prefect API clients without certifi's CA bundle
when the API is plain http (tasks/runners.py `light_api_clients`)."""

from __future__ import annotations

import ssl

import pytest
from prefect import flow, task

from tickercast.tasks.runners import (
    light_api_clients,
    make_task_runner,
    one_certificate_bundle,
    plain_http,
    use_task_runner,
)


def test_only_a_plain_http_api_is_light():
    assert plain_http("http://127.0.0.1:4200/api")
    assert plain_http("HTTP://127.0.0.1:4200/api")
    assert not plain_http("https://api.prefect.cloud/api/accounts/a/workspaces/b")
    assert not plain_http(None)


def test_the_bundle_is_one_certificate_a_tls_context_loads():
    path = one_certificate_bundle()
    assert path is not None
    assert path.read_text().count("BEGIN CERTIFICATE") == 1
    assert len(ssl.create_default_context(cafile=str(path)).get_ca_certs()) == 1
    assert one_certificate_bundle() == path  # the same file, written once


@task
def cert_file_seen() -> str | None:
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    return PREFECT_API_SSL_CERT_FILE.value()


@flow
def seen_on(kind: str) -> str | None:
    with use_task_runner(make_task_runner(kind, 2)):
        return cert_file_seen.submit().result()


@flow
def seen_with_remote_workers() -> str | None:
    with light_api_clients(local=False):
        return cert_file_seen.submit().result()


def test_task_runs_on_threads_load_one_certificate(prefect_server):
    assert seen_on("threads") == str(one_certificate_bundle())


def test_workers_on_other_machines_keep_the_setting(prefect_server):
    # they could not read this machine's file
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    assert seen_with_remote_workers() == PREFECT_API_SSL_CERT_FILE.value()


@pytest.mark.slow  # a local cluster of two worker processes, ~15 s
def test_local_dask_workers_load_one_certificate_and_report(prefect_server):
    # the task run reported its states through a client built with that bundle
    assert seen_on("dask") == str(one_certificate_bundle())
