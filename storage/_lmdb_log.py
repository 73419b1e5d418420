"""The event log on LMDB: named database ``events``, key = seq as 8-byte big-endian, value = canonical bytes.

Writes go through a two-stage pipeline so signing overlaps with fsync:

    appenders ──queue──▶ sequencer thread ──batches──▶ committer thread ──▶ futures resolved
                         (seq, prev, sign)             (one txn, fsync)

Concurrent appenders share a transaction (group commit); a future resolves only after its transaction is
durable. If a commit fails (disk full), every batch built on it fails too and the chain is re-read from disk,
so nothing acknowledged is lost and nothing unacknowledged is half-kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from events import (
    NODE,
    Actor,
    ChainWriter,
    Clock,
    CompactRange,
    Event,
    Kind,
    Signed,
    Signer,
    decode_event,
    leaf_hash,
    parse_note,
)
from events._pki import cert_public_raw, key_id_for, load_certificate, verify_signature
from events._record import GENESIS_PREV, UnsignedEvent, trusted_event_hash
from events.errors import (
    DiskFull,
    GravenError,
    InvalidEvent,
    LogLocked,
    LogReadOnly,
    StorageError,
    TamperedLog,
    UntrustedKey,
    VerificationError,
)

from ._lmdb_errors import lmdb_errors, translate

__all__ = ["RECOVERED", "LmdbEventLog", "LogReader", "seq_key"]

_KEY = struct.Struct(">Q")
DB_NAME = b"events"
RECOVERED = "recovered: the previous boot ended unsealed"
DEFAULT_MAP_SIZE = 1 << 30


def seq_key(seq: int) -> bytes:
    return _KEY.pack(seq)


def _open_env(path: Path, *, readonly: bool, map_size: int = DEFAULT_MAP_SIZE) -> lmdb.Environment:
    with lmdb_errors(str(path)):
        if readonly:
            try:
                return lmdb.open(str(path), readonly=True, max_dbs=2, lock=True, subdir=True)
            except lmdb.Error:
                # A copied log on read-only media has no usable lock file; nobody writes it.
                return lmdb.open(str(path), readonly=True, max_dbs=2, lock=False, subdir=True)
        return lmdb.open(str(path), map_size=map_size, max_dbs=2, subdir=True, sync=True, metasync=True)


# LMDB allows one environment per path per process: readers in the writer's process share its environment.
_WRITER_ENVS: dict[str, lmdb.Environment] = {}


class LogReader:
    """Read-only access to a log directory; any number may run beside the writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "data.mdb").exists():
            raise StorageError(f"{self.path}: no event log here (data.mdb missing)", path=str(self.path))
        shared = _WRITER_ENVS.get(str(self.path.resolve()))
        self._owns_env = shared is None
        self._env = shared if shared is not None else _open_env(self.path, readonly=True)
        with lmdb_errors(str(self.path)):
            try:
                self._db = self._env.open_db(DB_NAME, create=False)
            except lmdb.NotFoundError as exc:
                raise StorageError(f"{self.path}: LMDB has no 'events' database", path=str(self.path)) from exc

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq from the key, stored bytes) in key order, from ``start`` up to but not including ``end``."""
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db, buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(seq_key(start)):
                return
            for key, value in cur:
                seq = _KEY.unpack(key)[0] if len(key) == 8 else -1
                if end is not None and seq >= end:
                    break
                yield seq, bytes(value)

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]:
        for seq, raw in self.read_raw(start, end):
            yield decode_event(raw, seq=seq)

    def next_seq(self) -> int:
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db) as txn:
            cur = txn.cursor()
            return _KEY.unpack(cur.key())[0] + 1 if cur.last() else 0

    def wait_for(self, seq: int, timeout: float | None = None, poll: float = 0.05) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.next_seq() <= seq:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def close(self) -> None:
        if self._owns_env:
            self._env.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _AsyncWaiter:
    """An asyncio caller's future; the committer resolves all of one loop's waiters with one wake-up."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Event]

    def set_exception(self, exc: BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, [(self.future, exc)])


class _ThreadWaiter:
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


_Waiter = Future[Any] | _AsyncWaiter | _ThreadWaiter


def _settle(items: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in items:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


@dataclass
class _Req:
    kind: str
    payload: Mapping[str, Any]
    actor: Actor
    future: _Waiter


@dataclass
class _Ctl:
    op: str  # "seal" | "flush" | "rotate"
    future: Future[Event | None]
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Batch:
    signed: list[Signed] = field(default_factory=list)
    waiters: list[tuple[_Waiter, Event | None]] = field(default_factory=list)
    resync: threading.Event | None = None


_STOP = object()


@dataclass
class _Tail:
    """What opening a log learns from its tail: enough to continue the chain."""

    next_seq: int
    prev: bytes
    tree: CompactRange
    since_checkpoint: int
    origin: str
    key_id: str | None


def read_tail(reader: LogReader, known_keys: Mapping[str, bytes]) -> _Tail:
    """Verify the events since the last checkpoint and rebuild the chain head and Merkle frontier.

    Raises ``TamperedLog`` naming the first bad seq.
    """
    n = reader.next_seq()
    if n == 0:
        return _Tail(0, GENESIS_PREV, CompactRange(), 0, "", None)
    keys = dict(known_keys)
    start, tree, prev, origin = 0, CompactRange(), GENESIS_PREV, ""
    with reader._env.begin(db=reader._db) as txn:
        cur = txn.cursor()
        cur.last()
        for key, value in cur.iterprev():
            seq = _KEY.unpack(key)[0]
            try:
                event = decode_event(bytes(value), seq=seq)
            except InvalidEvent as exc:
                raise TamperedLog(f"seq {seq}: {exc.message}", seq=seq, reason="undecodable") from exc
            if event.kind == Kind.CHECKPOINT:
                try:
                    frontier, size = event.payload["frontier"], event.payload["size"]
                    if not (isinstance(size, int) and isinstance(frontier, list)
                            and all(isinstance(h, bytes) for h in frontier)):
                        raise TypeError("size or frontier has the wrong type")
                    tree = CompactRange(size, frontier)
                    origin = parse_note(str(event.payload.get("note", "")))[0].origin
                except (KeyError, TypeError, ValueError, VerificationError) as exc:
                    raise TamperedLog(f"seq {seq}: malformed checkpoint", seq=seq, reason="checkpoint") from exc
                if tree.size != seq or tree.root() != event.payload.get("root"):
                    raise TamperedLog(f"seq {seq}: checkpoint frontier does not match its root", seq=seq,
                                      reason="checkpoint")
                start, prev = seq, event.prev
                break
    current: str | None = None  # the log key in force: only it may sign, until it rotates
    since = 0
    expected = start
    for seq, raw in reader.read_raw(start):
        if seq != expected:
            raise TamperedLog(f"seq {expected}: missing (log jumps to {seq})", seq=expected, reason="gap")
        try:
            event = decode_event(raw, seq=seq)
        except InvalidEvent as exc:
            raise TamperedLog(f"seq {seq}: {exc.message}", seq=seq, reason="undecodable") from exc
        if event.seq != seq:
            raise TamperedLog(f"seq {seq}: stored event carries seq {event.seq}", seq=seq, reason="reordered")
        if event.prev != prev:
            raise TamperedLog(f"seq {seq}: prev hash does not match the event before it", seq=seq, reason="chain")
        certified = _cert_key(event) if event.kind in (Kind.GENESIS, Kind.KEY_ROTATED) else None
        if event.kind == Kind.GENESIS and certified is not None:
            keys[key_id_for(certified)] = certified
            current = key_id_for(certified)
        if current is None:  # the tail starts at a checkpoint: whoever signed it held the key then
            current = event.key_id
            if current not in keys:
                found = _find_certified_key(reader, start, current)
                if found is not None:
                    keys[current] = found
        if event.key_id != current:
            raise TamperedLog(f"seq {seq}: signed by {event.key_id}, not by the log key {current}", seq=seq,
                              reason="untrusted-key")
        pub_key = keys.get(event.key_id)
        digest = trusted_event_hash(raw, event)  # decode_event checked raw is canonical
        if pub_key is None or not verify_signature(pub_key, event.sig, digest):
            raise TamperedLog(f"seq {seq}: signature does not verify", seq=seq, reason="signature")
        if event.kind == Kind.GENESIS:
            origin = str(event.payload.get("origin", ""))
        elif event.kind == Kind.KEY_ROTATED and certified is not None:
            keys[key_id_for(certified)] = certified
            current = key_id_for(certified)
        tree.append(leaf_hash(raw))
        since = 0 if event.kind == Kind.CHECKPOINT else since + 1
        prev = digest
        expected += 1
    return _Tail(expected, prev, tree, since, origin, current)


def _cert_key(event: Event) -> bytes:
    """The public key a genesis or rotation event certifies (the CA check is the auditor's: no CA here)."""
    try:
        return cert_public_raw(load_certificate(event.payload["cert"]))
    except (KeyError, TypeError, ValueError, UntrustedKey) as exc:
        raise TamperedLog(f"seq {event.seq}: bad certificate", seq=event.seq, reason="untrusted-key") from exc


def _find_certified_key(reader: LogReader, before: int, key_id: str) -> bytes | None:
    """Walk back from ``before`` to the genesis or rotation event that certified ``key_id``."""
    with reader._env.begin(db=reader._db) as txn:
        cur = txn.cursor()
        if not cur.set_key(seq_key(before)):
            return None
        for key, value in cur.iterprev():
            raw = bytes(value)
            if b"log.genesis" not in raw and b"key.rotated" not in raw:  # cheap filter before decoding
                continue
            try:
                event = decode_event(raw, seq=_KEY.unpack(key)[0])
            except InvalidEvent:
                continue
            if event.kind in (Kind.GENESIS, Kind.KEY_ROTATED):
                with contextlib.suppress(TamperedLog):
                    pub = _cert_key(event)
                    if key_id_for(pub) == key_id:
                        return pub
    return None


class LmdbEventLog:
    """The node's durable ``EventLog``. One writer process per log directory (a file lock enforces it)."""

    def __init__(
        self,
        path: str | Path,
        signer: Signer,
        *,
        boot_id: str,
        origin: str | None = None,
        cert_der: bytes | None = None,
        clock: Clock | None = None,
        checkpoint_every: int = 1024,
        map_size: int = DEFAULT_MAP_SIZE,
        max_batch: int = 4096,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._lock_fd = self._take_writer_lock()
        try:
            self._open(signer, boot_id=boot_id, origin=origin, cert_der=cert_der, clock=clock,
                       checkpoint_every=checkpoint_every, map_size=map_size, max_batch=max_batch)
        except BaseException:
            self.close()  # a failed open leaves no lock and no environment behind
            raise

    def _open(self, signer: Signer, *, boot_id: str, origin: str | None, cert_der: bytes | None, clock: Clock | None,
              checkpoint_every: int, map_size: int, max_batch: int) -> None:
        self._signer = signer
        self._max_batch = max_batch
        self.broken: TamperedLog | None = None
        self._env = _open_env(self.path, map_size=map_size, readonly=False)
        with lmdb_errors(str(self.path)):
            self._db = self._env.open_db(DB_NAME, create=True)
        _WRITER_ENVS[str(self.path.resolve())] = self._env
        self._reader = LogReader(self.path)
        self._cond = threading.Condition()
        self._durable_next = 0
        self._failing: GravenError | None = None
        tail = self._load_tail()
        self._chain = ChainWriter(signer, origin=tail.origin or origin or f"graven/{signer.key_id}", boot_id=boot_id,
                                  clock=clock, checkpoint_every=checkpoint_every, next_seq=tail.next_seq,
                                  prev=tail.prev, tree=tail.tree, since_checkpoint=tail.since_checkpoint)
        self._durable_next = tail.next_seq
        # events a previous writer left after its last checkpoint (it crashed): ``seal_tail`` covers them
        self.unsealed_tail = tail.since_checkpoint if tail.next_seq > 0 else 0
        self._queue: queue.SimpleQueue[_Req | _Ctl | object] = queue.SimpleQueue()
        self._commits: queue.Queue[_Batch | object] = queue.Queue(maxsize=4)
        if self.broken is not None:
            return
        if tail.next_seq == 0:
            if cert_der is None:
                raise StorageError(f"{self.path}: new log needs the node's log certificate for its genesis event")
            self._write_now([self._chain.genesis(cert_der)])
        elif tail.key_id is not None and tail.key_id != signer.key_id:
            raise UntrustedKey(f"log {self.path} is signed by key {tail.key_id}; this node's key is {signer.key_id}",
                               path=str(self.path))
        self._threads = [threading.Thread(target=self._sequence_loop, name="log-sequencer", daemon=True),
                         threading.Thread(target=self._commit_loop, name="log-committer", daemon=True)]
        for t in self._threads:
            t.start()

    # -- opening ---------------------------------------------------------------------------------
    def _take_writer_lock(self) -> int:
        fd = os.open(self.path / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LogLocked(f"log {self.path} is already open for writing by process {holder}",
                            path=str(self.path), pid=holder) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _load_tail(self) -> _Tail:
        try:
            return read_tail(self._reader, {self._signer.key_id: self._signer.public_raw})
        except TamperedLog as exc:
            self.broken = exc
            return _Tail(self._reader.next_seq(), GENESIS_PREV, CompactRange(self._reader.next_seq(),
                         _dummy_frontier(self._reader.next_seq())), 0, "", None)

    # -- the EventLog port ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.broken is not None:
            raise LogReadOnly(f"log {self.path} is read-only: {self.broken.message}", seq=self.broken.seq,
                              reason=self.broken.reason)
        if not self._threads:
            raise LogReadOnly(f"log {self.path} is closed")

    def submit(self, kind: str, payload: Mapping[str, Any], actor: Actor = NODE) -> Future[Event]:
        self._check_writable()
        fut: Future[Event] = Future()
        self._queue.put(_Req(kind, payload, actor, fut))
        return fut

    def append(self, kind: str, payload: Mapping[str, Any], actor: Actor = NODE) -> Event:
        self._check_writable()
        waiter = _ThreadWaiter()
        self._queue.put(_Req(kind, payload, actor, waiter))
        event: Event = waiter.result()
        return event

    def append_async(self, kind: str, payload: Mapping[str, Any], actor: Actor = NODE) -> asyncio.Future[Event]:
        """For asyncio callers: an asyncio future resolved, with its batch, in one wake-up of the loop."""
        self._check_writable()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        self._queue.put(_Req(kind, payload, actor, _AsyncWaiter(loop, fut)))
        return fut

    def _control(self, op: str, **args: Any) -> Event | None:
        self._check_writable()
        fut: Future[Event | None] = Future()
        self._queue.put(_Ctl(op, fut, args))
        return fut.result()

    def flush(self) -> None:
        self._control("flush")

    def seal(self, reason: str) -> Event:
        event = self._control("seal", reason=reason)
        assert event is not None
        return event

    def seal_tail(self, reason: str = RECOVERED) -> Event | None:
        """Seal the events the previous writer left uncovered by a checkpoint; None when it left none."""
        if not self.unsealed_tail:
            return None
        event = self.seal(reason)
        self.unsealed_tail = 0
        return event

    def rotate(self, signer: Signer, cert_der: bytes, actor: Actor = NODE) -> Event:
        event = self._control("rotate", signer=signer, cert_der=cert_der, actor=actor)
        assert event is not None
        return event

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]:
        return self._reader.read(start, end)

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self._reader.read_raw(start, end)

    def next_seq(self) -> int:
        """The seq the next durable event will have (events still in flight are not counted)."""
        with self._cond:
            return self._durable_next

    def wait_for(self, seq: int, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._durable_next > seq, timeout)

    @property
    def boot_id(self) -> str:
        return self._chain.boot_id

    @property
    def origin(self) -> str:
        return self._chain.origin

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._threads:
            self._queue.put(_STOP)
            for t in self._threads:
                t.join()
            self._threads = []
        reader: LogReader | None = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        env: lmdb.Environment | None = getattr(self, "_env", None)
        if env is not None:
            key = str(self.path.resolve())
            if _WRITER_ENVS.get(key) is env:  # a later writer on this path may have registered its own
                del _WRITER_ENVS[key]
            env.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LmdbEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline ------------------------------------------------------------------------------------
    def _sequence_loop(self) -> None:
        signer_pool = ThreadPoolExecutor(1, thread_name_prefix="log-signer")
        stop = False
        while not stop:
            items = [self._queue.get()]
            while len(items) < self._max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in items:
                stop = True
                items = items[: items.index(_STOP)]
            if self._failing is not None:
                self._resync()
            batch = _Batch()
            pending: list[tuple[UnsignedEvent, bytes, _Waiter]] = []
            for item in items:
                if isinstance(item, _Req):
                    try:
                        body, digest = self._chain.prepare(item.kind, item.payload, item.actor)
                    except Exception as exc:  # a payload msgpack cannot encode
                        item.future.set_exception(
                            exc if isinstance(exc, InvalidEvent) else InvalidEvent(f"cannot append {item.kind}: {exc}"))
                        continue
                    pending.append((body, digest, item.future))
                    if self._chain.checkpoint_due():
                        self._complete(pending, batch, signer_pool)
                        pending = []
                        batch.signed.append(self._chain.checkpoint())
                elif isinstance(item, _Ctl):
                    self._complete(pending, batch, signer_pool)
                    pending = []
                    self._control_item(item, batch)
            self._complete(pending, batch, signer_pool)
            if batch.waiters:
                self._commits.put(batch)
        signer_pool.shutdown()
        self._commits.put(_STOP)

    def _complete(self, pending: list[tuple[UnsignedEvent, bytes, _Waiter]], batch: _Batch,
                  pool: ThreadPoolExecutor) -> None:
        """Sign the prepared events, half on the pool and half here (Ed25519 releases the GIL), then chain them."""
        if not pending:
            return
        sign = self._chain.signer.sign
        half = len(pending) // 2 if len(pending) >= 32 else 0
        other = pool.submit(lambda: [sign(d) for _, d, _ in pending[:half]]) if half else None
        mine = [sign(d) for _, d, _ in pending[half:]]
        sigs = (other.result() if other else []) + mine
        for (body, digest, fut), sig in zip(pending, sigs, strict=True):
            signed = self._chain.complete(body, digest, sig)
            batch.signed.append(signed)
            batch.waiters.append((fut, signed[0]))

    def _control_item(self, item: _Ctl, batch: _Batch) -> None:
        try:
            if item.op == "seal":
                signed = self._chain.checkpoint(sealed=True, reason=str(item.args["reason"]))
            elif item.op == "rotate":
                signed = self._chain.rotate(item.args["signer"], item.args["cert_der"], item.args["actor"])
                self._signer = item.args["signer"]
            else:
                batch.waiters.append((item.future, None))
                return
        except Exception as exc:
            item.future.set_exception(exc if isinstance(exc, GravenError) else InvalidEvent(f"{item.op}: {exc}"))
            return
        batch.signed.append(signed)
        batch.waiters.append((item.future, signed[0]))

    def _resync(self) -> None:
        """A commit failed: wait until the committer has failed everything in flight, then re-read the tail."""
        done = threading.Event()
        self._commits.put(_Batch(resync=done))
        done.wait()
        tail = read_tail(self._reader, {self._signer.key_id: self._signer.public_raw})
        c = self._chain
        self._chain = ChainWriter(self._signer, origin=c.origin, boot_id=c.boot_id, clock=c.clock,
                                  checkpoint_every=c.checkpoint_every, next_seq=tail.next_seq, prev=tail.prev,
                                  tree=tail.tree, since_checkpoint=tail.since_checkpoint)
        self._failing = None

    def _commit_loop(self) -> None:
        failing: GravenError | None = None
        held: _Batch | object | None = None  # a marker met while merging, handled next
        while True:
            batch = held if held is not None else self._commits.get()
            held = None
            if batch is _STOP:
                return
            assert isinstance(batch, _Batch)
            if batch.resync is not None:
                failing = None
                batch.resync.set()
                continue
            # Group commit here too: whatever the sequencer finished while the last fsync ran goes in one
            # transaction (all of it is acknowledged, or none).
            signed, waiters = list(batch.signed), list(batch.waiters)
            while True:
                try:
                    more = self._commits.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Batch) or more.resync is not None:
                    held = more
                    break
                signed += more.signed
                waiters += more.waiters
            if failing is None:
                try:
                    self._write_now(signed)
                except GravenError as exc:
                    failing = exc
                    self._failing = exc
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for fut, event in waiters:
                if isinstance(fut, _AsyncWaiter):
                    by_loop.setdefault(fut.loop, []).append((fut.future, failing if failing is not None else event))
                elif failing is not None:
                    fut.set_exception(failing)
                else:
                    fut.set_result(event)
            for loop, items in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed; nobody waits any more
                    loop.call_soon_threadsafe(_settle, items)

    def _write_now(self, signed: list[Signed]) -> None:
        if not signed:
            return
        while True:
            try:
                with self._env.begin(write=True, db=self._db) as txn:
                    for event, raw in signed:
                        if not txn.put(seq_key(event.seq), raw, append=True, overwrite=False):
                            raise StorageError(f"{self.path}: seq {event.seq} is already stored")
                break
            except lmdb.MapFullError:
                self._grow()
            except (lmdb.Error, OSError) as exc:
                err = translate(exc, str(self.path))
                if not isinstance(err, DiskFull) and _out_of_space(self.path, exc, signed):
                    err = DiskFull(f"{self.path}: no space left on device ({exc})", path=str(self.path))
                raise err from exc
        with self._cond:
            self._durable_next = signed[-1][0].seq + 1
            self._cond.notify_all()

    def _grow(self) -> None:
        size = self._env.info()["map_size"] * 2
        for _ in range(100):
            try:
                self._env.set_mapsize(size)
                return
            except lmdb.Error:
                time.sleep(0.01)  # a reader in this process holds a transaction; it is short
        raise StorageError(f"{self.path}: could not grow the map to {size} bytes")


def _out_of_space(path: Path, exc: BaseException, signed: list[Signed]) -> bool:
    """LMDB turns a short write into EIO: on a filesystem without room for the batch, that is a full disk."""
    if not ("Input/output error" in str(exc) or getattr(exc, "errno", None) == errno.EIO):
        return False
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    needed = 2 * sum(len(raw) for _, raw in signed) + (1 << 20)
    return st.f_bavail * st.f_frsize < needed


def _dummy_frontier(size: int) -> list[bytes]:
    return [b"\x00" * 32] * bin(size).count("1")
