"""What travels through the log's write pipeline: requests, control items, batches, and the callers' waiters.

A waiter is resolved by the committer once its event is durable (or with the error that stopped it).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from events import Actor, Event, Prepared, Signed
from pki import Signer

__all__ = ["STOP", "AsyncWaiter", "Batch", "Ctl", "Req", "SignerThread", "Staged", "ThreadWaiter", "Waiter",
           "next_part", "resolve", "settle", "take"]

@dataclass(slots=True)
class AsyncWaiter:
    """An asyncio caller's future; the committer resolves all of one loop's waiters with one wake-up."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Event]

    def set_exception(self, exc: BaseException) -> None:
        items: list[tuple[asyncio.Future[Event], Event | BaseException]] = [(self.future, exc)]
        self.loop.call_soon_threadsafe(settle, items)


T = TypeVar("T")


class ThreadWaiter(Generic[T]):
    """A blocking caller's waiter: one lock the committer releases. Lighter than a ``concurrent.futures.Future``
    (no condition variable, no callbacks), which matters when hundreds of threads wait on the same batch."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._value: list[T] = []  # the result, once set
        self._error: BaseException | None = None

    def set_result(self, value: T) -> None:
        self._value.append(value)
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self._error = exc
        self._done.release()

    def result(self) -> T:
        self._done.acquire()
        if self._error is not None:
            raise self._error
        return self._value[0]


Waiter = Future[Event] | AsyncWaiter | ThreadWaiter[Event]


def settle(items: list[tuple[asyncio.Future[Event], Event | BaseException]]) -> None:
    for fut, value in items:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


def resolve(waiters: list[tuple[Waiter, Event]], controls: list[tuple[Future[Event | None], Event | None]],
            failing: BaseException | None) -> None:
    """Resolve a committed (or failed) transaction's waiters: each asyncio loop's with one wake-up of that loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Event], Event | BaseException]]] = {}
    for fut, event in waiters:
        if isinstance(fut, AsyncWaiter):
            by_loop.setdefault(fut.loop, []).append((fut.future, failing if failing is not None else event))
        elif failing is not None:
            fut.set_exception(failing)
        else:
            fut.set_result(event)
    for ctl, result in controls:
        if failing is not None:
            ctl.set_exception(failing)
        else:
            ctl.set_result(result)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed; nobody waits any more
            loop.call_soon_threadsafe(settle, items)


@dataclass(slots=True)
class Req:
    kind: str
    payload: Mapping[str, object]
    actor: Actor
    future: Waiter


@dataclass(slots=True)
class Ctl:
    op: str  # "seal" | "flush" | "rotate"
    future: Future[Event | None]
    reason: str = ""  # seal, checkpoint
    rotation: tuple[Signer, bytes, Actor] | None = None  # rotate: the new signer, its certificate, who asked


@dataclass(slots=True)
class Batch:
    signed: list[Signed] = field(default_factory=list)
    waiters: list[tuple[Waiter, Event]] = field(default_factory=list)
    controls: list[tuple[Future[Event | None], Event | None]] = field(default_factory=list)  # seal, flush, ...
    resync: threading.Event | None = None


STOP = object()

# a part prepared ahead, how many of it the first child signs, and whether the second signs the rest
Staged = tuple[list[tuple[Prepared, Waiter]], int, bool]


def take(q: queue.SimpleQueue[Req | Ctl | object], backlog: list[Req | Ctl | object], limit: int, *,
         block: bool) -> bool:
    """Move queued requests into ``backlog``, up to ``limit`` in it (waiting for one if ``block``); whether STOP
    was met (it is not moved, nor anything after it)."""
    try:
        item = q.get() if block else q.get_nowait()
        while item is not STOP:
            backlog.append(item)
            if len(backlog) >= limit:
                return False
            item = q.get_nowait()
    except queue.Empty:
        return False
    return True


def next_part(backlog: list[Req | Ctl | object], size: int, *, peek: bool = False) -> list[Req | Ctl | object]:
    """The first part of ``backlog`` (removed from it unless ``peek``): all of it up to ``size`` items, else an
    equal share of it in parts of at most ``size``."""
    parts = -(-len(backlog) // size)
    n = -(-len(backlog) // parts) if parts else 0
    part = backlog[:n]
    if not peek:
        del backlog[:n]
    return part


_SignJob = tuple[Callable[[bytes], bytes], list[bytes], ThreadWaiter[list[bytes]]]


class SignerThread:
    """A second signer for the sequencer: Ed25519 releases the GIL, so part of a batch is signed here while the
    sequencer signs the rest. Lighter than an executor: one queue in, one lock out per batch."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_SignJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first batch it signs (not at rest)

    def sign(self, sign: Callable[[bytes], bytes], digests: list[bytes]) -> ThreadWaiter[list[bytes]]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-signer", daemon=True)
            self._thread.start()
        waiter: ThreadWaiter[list[bytes]] = ThreadWaiter()
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
