"""What travels through the log's write pipeline: requests, control items, batches, and the callers' waiters.

A waiter is resolved by the committer once its event is durable (or with the error that stopped it).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from events import Actor, Event, Signed

__all__ = ["STOP", "AsyncWaiter", "Batch", "Ctl", "Req", "SignerThread", "ThreadWaiter", "Waiter", "settle"]

@dataclass(slots=True)
class AsyncWaiter:
    """An asyncio caller's future; the committer resolves all of one loop's waiters with one wake-up."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Event]

    def set_exception(self, exc: BaseException) -> None:
        self.loop.call_soon_threadsafe(settle, [(self.future, exc)])


class ThreadWaiter:
    """A blocking caller's waiter: one lock the committer releases. Lighter than a ``concurrent.futures.Future``
    (no condition variable, no callbacks), which matters when hundreds of threads wait on the same batch."""

    __slots__ = ("_done", "_value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._value: Any = None

    def set_result(self, value: Any) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self.set_result(exc)

    def result(self) -> Any:
        self._done.acquire()
        if isinstance(self._value, BaseException):
            raise self._value
        return self._value


Waiter = Future[Any] | AsyncWaiter | ThreadWaiter


def settle(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in items:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


@dataclass(slots=True)
class Req:
    kind: str
    payload: Mapping[str, Any]
    actor: Actor
    future: Waiter


@dataclass(slots=True)
class Ctl:
    op: str  # "seal" | "flush" | "rotate"
    future: Future[Event | None]
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    signed: list[Signed] = field(default_factory=list)
    waiters: list[tuple[Waiter, Event | None]] = field(default_factory=list)
    resync: threading.Event | None = None


STOP = object()


class SignerThread:
    """A second signer for the sequencer: Ed25519 releases the GIL, so part of a batch is signed here while the
    sequencer signs the rest. Lighter than an executor: one queue in, one lock out per batch."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[bytes], bytes], list[bytes], ThreadWaiter] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None  # started by the first batch it signs (not at rest)

    def sign(self, sign: Callable[[bytes], bytes], digests: list[bytes]) -> ThreadWaiter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-signer", daemon=True)
            self._thread.start()
        waiter = ThreadWaiter()
        self._jobs.put((sign, digests, waiter))
        return waiter

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            sign, digests, waiter = job
            try:
                waiter.set_result([sign(d) for d in digests])
            except BaseException as exc:
                waiter.set_exception(exc)
