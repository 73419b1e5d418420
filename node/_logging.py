"""The agent's own log lines: to stderr for a person at the machine's console (``graven agent: ...``, as before),
and as JSON lines (time, level, boot id, logger, message) into the node's log ring, which ``gravenctl logs``
streams through the API."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from pathlib import Path

from storage import LogRing

__all__ = ["AGENT", "FileFollower", "RingHandler", "setup_agent_logging"]

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


class FileFollower:
    """Copies the lines a service writes to its own log file (etcd's zap JSON, say) into the ring as they come,
    from where the file ends when the follower starts (earlier lines went in during earlier boots)."""

    def __init__(self, path: Path, service: str, ring: LogRing, *, poll_s: float = 0.25) -> None:
        self.path, self.service, self.ring, self.poll_s = path, service, ring, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"log {service}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pos: int | None = None
        partial, inode = b"", 0
        while not self._stop.wait(0 if pos is None else self.poll_s):
            try:
                st = self.path.stat()
            except OSError:
                pos = pos or 0  # not there yet: every line it gets is new
                continue
            size = st.st_size
            if pos is None:
                pos, inode = size, st.st_ino
            if size < pos or st.st_ino != inode:  # replaced or truncated: start over
                pos, partial, inode = 0, b"", st.st_ino
            if size == pos:
                continue
            with self.path.open("rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            pos += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                if line.strip():
                    self.ring.append(self.service, _as_json_line(line))


def _as_json_line(line: bytes) -> bytes:
    """A service's line as the ring keeps them: its own JSON object (``ts`` also as ``time``), else wrapped."""
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return json.dumps({"msg": line.decode(errors="replace")}, separators=(",", ":")).encode()
    if "time" not in obj and "ts" in obj:
        obj["time"] = obj["ts"]
    return json.dumps(obj, separators=(",", ":")).encode()
