"""A scheduled flow's retries, kept only where a later try may fare better.

A deployment retries a failed run as a whole after a delay (the nightly: twice, 15
minutes apart) for outages that pass. A failure that would recur (a delisted ticker, a
bad file, a refused export, a bug) only makes each retry wait to fail the same way: in a
universe of hundreds of tickers one such ticker made every night wait 30 minutes to end
Failed. `retried_if_transient` runs a flow's body and, unless some failure is transient
(tickercast.errors.transient: a source outage, a lost Dask worker), ends the run's
retries, so Prefect's own retry rule lets it end Failed on this try.

A module of its own (not the deployment's file): Prefect loads a deployment's file under
its bare name, which a Dask scheduler cannot import, and a flow's context travels with
every task it submits; what the flow's function calls must live in the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.states import State

from tickercast.errors import transient
from tickercast.fanout import failures_in, one_line


def retried_if_transient(body: Callable[[], Any]) -> Any:
    """`body()`'s result (a value or a Failed state) or its error, with this flow run's
    retries ended when none of its failures is transient."""
    try:
        result = body()
    except Exception as error:
        if not transient(error):
            no_more_tries(f"the run failed with {one_line(error)}")
        raise
    if isinstance(result, State) and result.is_failed():
        failed = failures_in(result.data if isinstance(result.data, dict) else {})
        if not any(transient(line) for line in failed.values()):
            no_more_tries(f"{len(failed)} ticker(s) failed, none of them transiently")
    return result


def no_more_tries(why: str) -> None:
    """End this flow run's retries: its retry count is set to the tries it has made, so
    Prefect's retry rule lets its failure stand. Logged (print) with `why`."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(context.flow_run.id)
        retries = run.empirical_policy.retries
        if retries is not None and run.run_count > retries:
            return  # its last try already: nothing to end
        policy = run.empirical_policy.model_copy(update={"retries": max(0, run.run_count - 1)})
        client.update_flow_run(run.id, empirical_policy=policy)
    print(f"not retried: {why}; a later try would fail the same way")
