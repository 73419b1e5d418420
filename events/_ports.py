"""The event-log port: what the core needs from a log, whatever stores it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Protocol

from ._record import Actor, Event

__all__ = ["EventLog"]


class EventLog(Protocol):
    """An append-only, signed, hash-chained log.

    ``submit`` orders the event at once and returns a future that resolves when it is durable;
    ``append`` waits for that. ``seal`` appends a final checkpoint and waits for it.
    """

    def submit(self, kind: str, payload: Mapping[str, object], actor: Actor = ...) -> Future[Event]: ...

    def append(self, kind: str, payload: Mapping[str, object], actor: Actor = ...) -> Event: ...

    def flush(self) -> None: ...

    def seal(self, reason: str) -> Event: ...

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]: ...

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, stored bytes) of each event, as ``read`` but not decoded."""
        ...

    def next_seq(self) -> int: ...

    def wait_for(self, seq: int, timeout: float | None = None) -> bool: ...
