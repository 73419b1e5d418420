"""The peer in the log benchmark: the ``eventsourcing`` library on SQLite, doing the same shape of work, unsigned.

One aggregate receives task-stopped events with the payload the Graven rows append; saves are durable (SQLite in
WAL mode with ``synchronous=FULL``: every commit is fsynced, which the set-up checks and prints). Three figures:

  single    one event per ``Application.save`` (one durable transaction per event)
  batched   256 events per save (one transaction for 256: the peer's group commit)
  replay    ``repository.get`` of the aggregate, every event decoded and applied (no snapshots)

Installed with the ``bench`` extra (``pip install -e '.[bench]'``); without it the column reads "n/a".
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PEER", "Peer", "available", "peer_setup", "with_peer"]

PEER = "eventsourcing"


def available() -> bool:
    return importlib.util.find_spec("eventsourcing") is not None


@functools.cache
def _node_class() -> Any:
    from eventsourcing.domain import Aggregate, event

    class Node(Aggregate):
        count = 0

        @event("TaskStopped")
        def task_stopped(self, sequence: str, phase: str, task: str, duration_ns: int, outcome: str) -> None:
            self.count += 1

    return Node


class Peer:
    """One SQLite database in a fresh directory under ``root``; close() removes it."""

    def __init__(self, root: Path) -> None:
        from eventsourcing.application import Application

        self.version = importlib.metadata.version("eventsourcing")
        self.dir = Path(tempfile.mkdtemp(dir=root, prefix="peer-"))
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(self.dir / "es.db")}
        self.app: Any = Application(env=env)
        with self.app.recorder.datastore.transaction(commit=False) as cur:
            cur.execute("PRAGMA synchronous")
            sync = cur.fetchone()[0]
            cur.execute("PRAGMA journal_mode")
            mode = cur.fetchone()[0]
        if int(sync) < 2:
            raise RuntimeError(f"SQLite synchronous={sync}: the peer's commits would not be durable")
        self.settings = f"SQLite {mode}, synchronous={'FULL' if int(sync) == 2 else 'EXTRA'}"

    def close(self) -> None:
        self.app.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def appends(self, payload: dict[str, Any], n: int, per_save: int) -> float:
        """Events/s, ``per_save`` events per durable transaction, into a new aggregate."""
        node = _node_class()()
        self.app.save(node)
        t = time.perf_counter()
        done = 0
        while done < n:
            for _ in range(per_save):
                node.task_stopped(**payload)
            self.app.save(node)
            done += per_save
        return done / (time.perf_counter() - t)

    def replay(self, payload: dict[str, Any], n: int) -> float:
        """Events/s reconstructing an aggregate of ``n`` events from the database."""
        node = _node_class()()
        for i in range(n):
            node.task_stopped(**payload)
            if i % 4096 == 4095:
                self.app.save(node)
        self.app.save(node)
        t = time.perf_counter()
        again = self.app.repository.get(node.id)
        took = time.perf_counter() - t
        assert again.count == n
        return n / took


def with_peer(root: Path, fn: Any) -> float | None:
    """``fn(peer)`` on a fresh database, or None without the bench extra."""
    if not available():
        return None
    peer = Peer(root)
    try:
        result: float = fn(peer)
        return result
    finally:
        peer.close()



def peer_setup(root: Path) -> str:
    """What the peer column runs on, checked on a real database; or why it is empty."""
    if not available():
        return f"{PEER} not installed: its column is empty (pip install -e '.[bench]')"
    peer = Peer(root)
    try:
        return f"{PEER} {peer.version} on {peer.settings} (every commit fsynced), events not signed"
    finally:
        peer.close()
