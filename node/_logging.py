"""The agent's own log lines: to stderr for a person at the machine's console (``graven agent: ...``, as before),
and as JSON lines (time, level, boot id, logger, message) into the node's log ring, which ``gravenctl logs``
streams through the API."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from storage import LogRing

__all__ = ["AGENT", "RingHandler", "setup_agent_logging"]

AGENT = logging.getLogger("graven.agent")


class RingHandler(logging.Handler):
    def __init__(self, ring: LogRing, service: str, boot_id: str) -> None:
        super().__init__()
        self.ring, self.service, self.boot_id = ring, service, boot_id

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"), "level": record.levelname.lower(), "boot_id": self.boot_id,
                    "logger": record.name, "msg": record.getMessage()}
            if record.exc_info:
                line["error"] = self.format(record).split("\n", 1)[-1]
            self.ring.append(self.service, json.dumps(line, separators=(",", ":")).encode())
        except Exception:  # a log line must never take the agent down (logging's own contract)
            self.handleError(record)


def setup_agent_logging(ring: LogRing, boot_id: str) -> RingHandler:
    """Route the agent's logger, and warnings of every other logger (asyncio, grpc's Python side), to both."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("graven agent: %(message)s"))
    AGENT.addHandler(console)
    AGENT.setLevel(logging.INFO)
    AGENT.propagate = False
    handler = RingHandler(ring, "agent", boot_id)
    AGENT.addHandler(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    return handler
