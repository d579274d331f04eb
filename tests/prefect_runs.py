"""Reading back what a flow run did (its task runs) and published (its artifacts) from the
test Prefect server."""

from __future__ import annotations


def flow_run_artifacts(state) -> list:
    """Every artifact of the flow run that ended in `state`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def artifacts_of(state) -> dict[str, object]:
    """The run's keyed artifacts by key."""
    return {a.key: a for a in flow_run_artifacts(state) if a.key}


def task_runs(state) -> list:
    """Every task run of the flow run that ended in `state` (repeats of a task included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
