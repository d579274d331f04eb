"""The Prefect tasks: thin `@task` wrappers, one module per pipeline stage, passing paths
and content hashes (never arrays) between steps."""
