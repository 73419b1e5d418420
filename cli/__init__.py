"""The operator's command line, ``gravenctl`` (``cli.main``): one module per command group over the client."""
