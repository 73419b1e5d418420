"""The node's ``EventLog``: in memory until the node has an identity, then the LMDB log on EPHEMERAL.

Before install there is no certified key (the CA comes with the config) and, on a block disk, no EPHEMERAL
partition either. What happens until then (boot.started, initialize, maintenance) is held in memory under a
provisional key; ``promote`` opens the durable log with the certified key and appends those events to it,
re-signed, keeping their order, kinds, actors and payloads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from events import NODE, Actor, Clock, Event, MemoryEventLog
from pki import LOG_KEY_UNIT, Ed25519Signer, Signer, issue_certificate, make_ca
from storage import LmdbEventLog

__all__ = ["NodeLog"]


def _provisional(name: str) -> tuple[Ed25519Signer, bytes]:
    ca_key, ca = make_ca(f"{name}-provisional", days=2)
    signer = Ed25519Signer.generate()
    cert: x509.Certificate = issue_certificate(ca_key, ca, signer.private_key.public_key(), cn=name, unit=LOG_KEY_UNIT)
    return signer, cert.public_bytes(serialization.Encoding.DER)


class NodeLog:
    def __init__(self, *, boot_id: str, node: str, clock: Clock | None = None,
                 durable: LmdbEventLog | None = None) -> None:
        self.boot_id = boot_id
        self._clock = clock
        self._lock = threading.RLock()
        self._durable = durable
        self._path: Path | None = durable.path if durable is not None else None
        self._memory: MemoryEventLog | None = None
        self.on_durable: Callable[[float], None] | None = None  # told each append's time to durability
        if durable is None:
            signer, cert = _provisional(node)
            self._memory = MemoryEventLog(signer, cert, origin=f"graven/{node}", boot_id=boot_id, clock=clock)

    @property
    def durable(self) -> bool:
        return self._durable is not None

    @property
    def backend(self) -> LmdbEventLog | MemoryEventLog:
        backend = self._durable or self._memory
        assert backend is not None
        return backend

    def promote(self, path: Path, signer: Signer, cert_der: bytes, *, origin: str, checkpoint_every: int) -> None:
        """Open (or create) the durable log and move what was held in memory into it, in order."""
        with self._lock:
            if self._durable is not None:
                return
            log = LmdbEventLog(path, signer, boot_id=self.boot_id, origin=origin, cert_der=cert_der,
                               clock=self._clock, checkpoint_every=checkpoint_every)
            log.seal_tail()  # a log kept from before (EPHEMERAL survived) may end where a crash cut it
            assert self._memory is not None
            held = list(self._memory.read(1))  # seq 0 is the provisional genesis
            futures = [log.submit(e.kind, e.payload, e.actor) for e in held]
            for f in futures:
                f.result()
            self._durable, self._memory, self._path = log, None, path

    # -- the EventLog port -----------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Future[Event]:
        start = time.perf_counter()
        with self._lock:
            future = self.backend.submit(kind, payload, actor)
        observe = self.on_durable
        if observe is not None:
            future.add_done_callback(lambda _: observe(time.perf_counter() - start))
        return future

    def append(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Event:
        return self.submit(kind, payload, actor).result()

    def flush(self) -> None:
        self.backend.flush()

    def seal(self, reason: str) -> Event:
        with self._lock:
            return self.backend.seal(reason)

    def checkpoint(self, reason: str) -> Event:
        """An unsealed checkpoint covering the events so far (the witness publisher asks for one)."""
        with self._lock:
            return self.backend.checkpoint(reason)

    def seal_tail(self) -> Event | None:
        """Seal the tail a crashed previous boot left uncovered by a checkpoint (the durable log only)."""
        with self._lock:
            return self._durable.seal_tail() if self._durable is not None else None

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]:
        return self.backend.read(start, end)

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.backend.read_raw(start, end)

    def next_seq(self) -> int:
        return self.backend.next_seq()

    def disk_bytes(self) -> int:
        """The size of the durable log's files (0 while it is held in memory)."""
        path = self._path
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path is not None else 0

    def wait_for(self, seq: int, timeout: float | None = None) -> bool:
        return self.backend.wait_for(seq, timeout)

    def close(self) -> None:
        with self._lock:
            if self._durable is not None:
                self._durable.close()
