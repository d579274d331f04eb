"""The Prefect tasks: thin `@task` wrappers, one module per pipeline stage, passing paths
and content hashes (never arrays) between steps."""

from tickercast import quiet

# Worker and deployment processes import the tasks before TensorFlow: quiet them too.
quiet.install()
