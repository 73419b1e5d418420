"""Tasks: small named async functions of a ``Context``, one module per area, each declared with ``@task``."""
