"""An in-memory ``EventLog``: the same chain, signatures and checkpoints as the LMDB log, kept in a list.

First-class for the core's tests (``tests/contract`` runs it through the same suite as LMDB).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future

from errors import InvalidEvent
from pki import Signer

from ._chain import ChainWriter, Clock, Signed
from ._record import NODE, Actor, Event

__all__ = ["MemoryEventLog"]


class MemoryEventLog:
    def __init__(
        self,
        signer: Signer,
        cert_der: bytes,
        *,
        origin: str = "graven/memory",
        boot_id: str = "memory",
        clock: Clock | None = None,
        checkpoint_every: int = 1024,
    ) -> None:
        self._chain = ChainWriter(signer, origin=origin, boot_id=boot_id, clock=clock,
                                  checkpoint_every=checkpoint_every)
        self._events: list[Event] = []
        self._raw: list[bytes] = []
        self._cond = threading.Condition()
        self._store([self._chain.genesis(cert_der)])

    @property
    def boot_id(self) -> str:
        return self._chain.boot_id

    @boot_id.setter
    def boot_id(self, value: str) -> None:
        self._chain.boot_id = value

    def _store(self, signed: list[Signed]) -> Event:
        with self._cond:
            for event, raw in signed:
                self._events.append(event)
                self._raw.append(raw)
            self._cond.notify_all()
        return signed[0][0]

    def submit(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Future[Event]:
        fut: Future[Event] = Future()
        with self._cond:
            try:
                signed = self._chain.append(kind, payload, actor)
            except InvalidEvent as exc:
                fut.set_exception(exc)
                return fut
            fut.set_result(self._store(signed))
        return fut

    def append(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Event:
        return self.submit(kind, payload, actor).result()

    def flush(self) -> None:
        return None

    def seal(self, reason: str) -> Event:
        with self._cond:
            return self._store([self._chain.checkpoint(sealed=True, reason=reason)])

    def checkpoint(self, reason: str) -> Event:
        with self._cond:
            return self._store([self._chain.checkpoint(sealed=False, reason=reason)])

    def rotate(self, signer: Signer, cert_der: bytes, actor: Actor = NODE) -> Event:
        with self._cond:
            return self._store([self._chain.rotate(signer, cert_der, actor)])

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]:
        with self._cond:
            items = self._events[start:end]
        return iter(items)

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        with self._cond:
            items = list(enumerate(self._raw[start:end], start))
        return iter(items)

    def next_seq(self) -> int:
        with self._cond:
            return len(self._events)

    def wait_for(self, seq: int, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._events) > seq, timeout)

    def close(self) -> None:
        return None
