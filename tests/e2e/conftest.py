"""The end-to-end fixtures; the helpers behind them live in ``machinekit``."""

from machinekit import images, machines, secrets

__all__ = ["images", "machines", "secrets"]
