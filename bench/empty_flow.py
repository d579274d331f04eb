"""The floor of any Prefect flow run from the command line: a flow with no tasks.

`bench/orchestration.py` runs this as its own process against the same server as the
unchanged retrain rerun, so the rerun's cost can be read against what Prefect itself
costs (Python start-up, importing Prefect, creating and finishing a flow run).
"""

from prefect import flow


@flow(name="empty", persist_result=False)
def empty() -> int:
    """Nothing: the orchestration floor."""
    return 0


if __name__ == "__main__":
    empty()
