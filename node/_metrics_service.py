"""The metrics endpoint as the agent runs it: served while the API is served and the config enables it, on the
port the config names, moved or stopped when an applied config says so. A port that cannot be bound is a
``service.failed`` event, and the node goes on without metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import config
from api import issue_server_certificate
from errors import GravenError
from events import Kind
from pki import load_certificate, load_private_key

from ._identity import node_name
from ._logging import AGENT

if TYPE_CHECKING:
    from ._metrics import MetricsEndpoint, NodeMetrics

__all__ = ["MetricsService"]

CERT_TTL = dt.timedelta(days=365)  # prometheus_client loads its certificate once, when the endpoint starts


class MetricsService:
    def __init__(self, make: Callable[[], NodeMetrics], emit: Callable[[str, dict[str, object]], None]) -> None:
        self._make, self._emit = make, emit
        self.metrics: NodeMetrics | None = None  # made when the config first enables them
        self.endpoint: MetricsEndpoint | None = None

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_call(method, code, seconds)

    async def sync(self, cfg: config.MachineConfig | None, *, host: str, sans: Sequence[str],
                   quiet: bool = False) -> None:
        """Bring the endpoint to what ``cfg`` asks (None: no endpoint); ``quiet``: the log is sealed, record
        nothing."""
        want = cfg.machine.metrics if cfg is not None else None
        address = f"{host}:{want.port}" if want is not None and want.enabled else None
        current = self.endpoint
        if current is not None and current.address == address:
            return
        if current is not None:
            self.endpoint = None
            await asyncio.to_thread(current.close)
            if not quiet:
                self._emit(Kind.SERVICE_STOPPED, {"service": "metrics", "address": current.address})
        if address is None or cfg is None or want is None:
            return
        from ._metrics import MetricsEndpoint

        if self.metrics is None:
            self.metrics = self._make()
        ca_key = load_private_key(cfg.machine.ca.key_pem() or b"")
        ca_cert = load_certificate(cfg.machine.ca.crt_pem())
        cert_pem, key_pem = issue_server_certificate(ca_key, ca_cert, cn=node_name(cfg), sans=list(sans),
                                                     ttl=CERT_TTL)
        try:
            self.endpoint = await asyncio.to_thread(
                MetricsEndpoint, self.metrics.registry, host, want.port, ca_pem=cfg.machine.ca.crt_pem(),
                cert_pem=cert_pem, key_pem=key_pem)
        except GravenError as exc:
            AGENT.warning(f"metrics: {exc.message}")
            self._emit(Kind.SERVICE_FAILED, {"service": "metrics", "address": address, "reason": exc.message})
            return
        self._emit(Kind.SERVICE_STARTED, {"service": "metrics", "address": address})
