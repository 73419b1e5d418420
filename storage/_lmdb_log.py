"""The event log on LMDB: named database ``events``, key = seq as 8-byte big-endian, value = canonical bytes.

Writes go through a two-stage pipeline so signing overlaps with fsync:

    appenders ──queue──▶ sequencer thread ──batches──▶ committer thread ──▶ futures resolved
                         (seq, prev, sign;             (one txn, fsync)
                          part of a batch on a
                          signer thread, or a big
                          batch in two child processes)

Concurrent appenders share a transaction (group commit); a future resolves only after its transaction is
durable. If a commit fails (disk full), every batch built on it fails too and the chain is re-read from disk,
so nothing acknowledged is lost and nothing unacknowledged is half-kept.

Two shortcuts for a lone appender, where hand-offs between threads would cost more than the work: a blocking
``append`` that finds the pipeline idle (everything prepared is durable, nothing queued) does the whole append in
its own thread under the chain lock; and the sequencer writes a small batch itself when the committer is idle.
The chain lock (held by whoever prepares or completes events) keeps seqs and commits in order either way.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

import lmdb

from errors import (
    DiskFull,
    GravenError,
    InvalidEvent,
    LogLocked,
    LogReadOnly,
    StorageError,
    TamperedLog,
    UntrustedKey,
)
from events import GENESIS_PREV, NODE, Actor, ChainWriter, Clock, CompactRange, Event, Prepared, Signed
from pki import Signer

from ._lmdb_errors import lmdb_errors, out_of_space, translate
from ._lmdb_reader import DB_NAME, DEFAULT_MAP_SIZE, WRITER_ENVS, LogReader, grow_map, open_env, seq_key
from ._lmdb_tail import Tail, dummy_frontier, read_tail
from ._lmdb_waiters import (
    STOP,
    AsyncWaiter,
    Batch,
    Ctl,
    Req,
    SignerThread,
    Staged,
    ThreadWaiter,
    Waiter,
    next_part,
    resolve,
    take,
)
from ._sign_child import ChildSigner

__all__ = ["RECOVERED", "LmdbEventLog", "LogReader", "seq_key"]

SMALL_BATCH = 4  # events the sequencer writes itself when the committer is idle
CROWDED_S = 0.05  # no lone-appender path for this long after an appender queued behind one
CHILD_BATCH = 32  # events in a batch from which part is signed by the signing processes (_sign_child)
CHILD_REST = 16  # events left after the first child's share from which a second child signs them
PART = 64  # a bigger take from the queue is built in parts, each handed to the committer once built

RECOVERED = "recovered: the previous boot ended unsealed"


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
        self._env = open_env(self.path, map_size=map_size, readonly=False)
        with lmdb_errors(str(self.path)):
            self._db = self._env.open_db(DB_NAME, create=True)
        WRITER_ENVS[str(self.path.resolve())] = self._env
        self._reader = LogReader(self.path)
        self._cond = threading.Condition()
        self._durable_next = 0
        self._watchers = 0  # callers in wait_for
        self._failing: GravenError | None = None
        self._chain_lock = threading.Lock()  # held while events are prepared and completed, see the module's doc
        self._crowded_until = 0.0
        self._child = ChildSigner()  # started by the sequencer on the first big batch
        self._child2 = ChildSigner()  # signs the rest of a big batch: the sequencer then signs none of it
        self._sent = 0  # batches and markers handed to the committer (written by the sequencer only)
        self._done = 0  # and handled by it (written by the committer only)
        tail = self._load_tail()
        self._chain = ChainWriter(signer, origin=tail.origin or origin or f"graven/{signer.key_id}", boot_id=boot_id,
                                  clock=clock, checkpoint_every=checkpoint_every, next_seq=tail.next_seq,
                                  prev=tail.prev, tree=tail.tree, since_checkpoint=tail.since_checkpoint)
        self._durable_next = tail.next_seq
        # events a previous writer left after its last checkpoint (it crashed): ``seal_tail`` covers them
        self.unsealed_tail = tail.since_checkpoint if tail.next_seq > 0 else 0
        self._queue: queue.SimpleQueue[Req | Ctl | object] = queue.SimpleQueue()
        self._commits: queue.Queue[Batch | object] = queue.Queue(maxsize=4)
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

    def _load_tail(self) -> Tail:
        try:
            return read_tail(self._reader, {self._signer.key_id: self._signer.public_raw})
        except TamperedLog as exc:
            self.broken = exc
            return Tail(self._reader.next_seq(), GENESIS_PREV, CompactRange(self._reader.next_seq(),
                         dummy_frontier(self._reader.next_seq())), 0, "", None)

    # -- the EventLog port ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.broken is not None:
            raise LogReadOnly(f"log {self.path} is read-only: {self.broken.message}", seq=self.broken.seq,
                              reason=self.broken.reason)
        if not self._threads:
            raise LogReadOnly(f"log {self.path} is closed")

    def submit(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Future[Event]:
        self._check_writable()
        fut: Future[Event] = Future()
        self._queue.put(Req(kind, payload, actor, fut))
        return fut

    def append(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Event:
        self._check_writable()
        lock = self._chain_lock
        # tried only when the pipeline looks idle (checked again under the lock): in a crowd, an appender holding it
        # for nothing would make the sequencer wait for it
        if self._durable_next == self._chain.next_seq and self._queue.empty() and lock.acquire(blocking=False):
            try:
                if self._idle():
                    return self._append_here(kind, payload, actor)
            finally:
                lock.release()
        waiter: ThreadWaiter[Event] = ThreadWaiter()
        self._queue.put(Req(kind, payload, actor, waiter))
        return waiter.result()

    def append_async(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> asyncio.Future[Event]:
        """For asyncio callers: an asyncio future resolved, with its batch, in one wake-up of the loop."""
        self._check_writable()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Event] = loop.create_future()
        self._queue.put(Req(kind, payload, actor, AsyncWaiter(loop, fut)))
        return fut

    def _control(self, op: str, *, reason: str = "", rotation: tuple[Signer, bytes, Actor] | None = None
                 ) -> Event | None:
        self._check_writable()
        fut: Future[Event | None] = Future()
        self._queue.put(Ctl(op, fut, reason, rotation))
        return fut.result()

    def flush(self) -> None:
        self._control("flush")

    def seal(self, reason: str) -> Event:
        event = self._control("seal", reason=reason)
        assert event is not None
        return event

    def checkpoint(self, reason: str) -> Event:
        """An unsealed checkpoint now, covering every event before it (one the witness can cosign at once)."""
        event = self._control("checkpoint", reason=reason)
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
        event = self._control("rotate", rotation=(signer, cert_der, actor))
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
            self._watchers += 1
            try:
                return self._cond.wait_for(lambda: self._durable_next > seq, timeout)
            finally:
                self._watchers -= 1

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
            self._queue.put(STOP)
            for t in self._threads:
                t.join()
            self._threads = []
        lock: threading.Lock | None = getattr(self, "_chain_lock", None)
        if lock is not None:
            with lock:  # a lone appender writing in its own thread finishes first
                pass
        reader: LogReader | None = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        env: lmdb.Environment | None = getattr(self, "_env", None)
        if env is not None:
            key = str(self.path.resolve())
            if WRITER_ENVS.get(key) is env:  # a later writer on this path may have registered its own
                del WRITER_ENVS[key]
            env.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LmdbEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a lone appender ---------------------------------------------------------------------------------
    def _idle(self) -> bool:
        """Under the chain lock: everything prepared is durable, nothing fails and nothing is queued, and no other
        appender queued behind the last lone append lately (then group commits serve them better)."""
        return (self._failing is None and bool(self._threads) and self._chain.next_seq == self._durable_next
                and self._queue.empty() and time.monotonic() >= self._crowded_until)

    def _append_here(self, kind: str, payload: Mapping[str, object], actor: Actor) -> Event:
        """The whole append in the caller's thread, under the chain lock: no hand-off to the pipeline's threads."""
        chain = self._chain
        try:
            prepared = chain.prepare(kind, payload, actor)
        except InvalidEvent:
            raise
        except Exception as exc:  # a payload msgpack cannot encode
            raise InvalidEvent(f"cannot append {kind}: {exc}") from exc
        try:
            signed = [chain.complete(prepared, chain.signer.sign(prepared[2]))]
            if chain.checkpoint_due():
                signed.append(chain.checkpoint())
            self._write_now(signed)
        except BaseException:
            self._reload_chain()  # the events just completed are not on disk: continue from what is
            raise
        if not self._queue.empty():  # others waited for this write: leave the next ones to the pipeline
            self._crowded_until = time.monotonic() + CROWDED_S
        return signed[0][0]

    # -- the pipeline ------------------------------------------------------------------------------------
    def _sequence_loop(self) -> None:
        signer = SignerThread()
        backlog: list[Req | Ctl | object] = []  # taken from the queue, not built yet
        stop = False
        while backlog or not stop:
            if not backlog:
                stop = take(self._queue, backlog, self._max_batch, block=True)
                continue
            # In parts: the committer writes one while the next is signed, and the callers of the first resume
            # (and queue their next appends) meanwhile, rather than all appenders waiting for one big batch.
            part = next_part(backlog, PART)
            with self._chain_lock:
                if not self._stageable(part, 0):
                    self._hand_over(self._build(part, signer))
                    continue
                # Staged parts overlap: the child signs its share of the next part while this one is completed
                # here. The chain lock is held until no part is left prepared and not completed.
                staged: Staged | None = self._stage(part)
                while staged is not None:
                    batch = Batch()
                    staged, stop = self._complete_staged(staged, batch, signer, backlog, stop)
                    self._hand_over(batch)
        signer.stop()
        self._child.close()
        self._child2.close()
        self._commits.put(STOP)

    def _stageable(self, part: list[Req | Ctl | object], in_flight: int) -> bool:
        """Whether ``part`` can be prepared ahead, after ``in_flight`` events prepared and not completed: requests
        only, big enough for the child, and no checkpoint due inside it (one must follow its last event)."""
        c = self._chain
        return (len(part) >= CHILD_BATCH and not self._child.failed and self._failing is None
                and c.since_checkpoint + in_flight + len(part) < c.checkpoint_every
                and all(isinstance(item, Req) for item in part))

    def _stage(self, part: list[Req | Ctl | object]) -> Staged:
        """Under the chain lock: prepare a part of requests, the child's share handed to it once prepared."""
        pending: list[tuple[Prepared, Waiter]] = []
        early, sent = self._early_share(part), 0
        for item in part:
            if isinstance(item, Req) and self._prepare(item, pending) and len(pending) == early:
                sent = self._send_to_child(pending)
        # the rest to the second child now, not when this part's signing is collected: it then has this part
        # queued while the previous part is completed here, rather than sitting idle
        rest = [p[2] for p, _ in pending[sent:]]
        given = bool(sent) and len(rest) >= CHILD_REST and self._child2.give(self._chain.signer, rest) > 0
        return pending, sent, given

    def _prepare(self, item: Req, pending: list[tuple[Prepared, Waiter]]) -> bool:
        try:
            pending.append((self._chain.prepare(item.kind, item.payload, item.actor), item.future))
            return True
        except Exception as exc:  # a payload msgpack cannot encode
            item.future.set_exception(
                exc if isinstance(exc, InvalidEvent) else InvalidEvent(f"cannot append {item.kind}: {exc}"))
            return False

    def _complete_staged(self, staged: Staged, batch: Batch, signer: SignerThread,
                         backlog: list[Req | Ctl | object], stop: bool) -> tuple[Staged | None, bool]:
        """Sign and complete a staged part into ``batch``; between signing this process's share and collecting the
        child's, the next part is staged when it can be (its share then waits in the child's pipe). Returns the
        next part staged (or None) and whether STOP was met."""
        pending, sent, given = staged
        nxt: Staged | None = None

        def stage_next() -> None:
            nonlocal nxt, stop
            if not stop:
                stop = take(self._queue, backlog, self._max_batch, block=False)
            if backlog:
                part = next_part(backlog, PART, peek=True)
                if self._stageable(part, len(pending)):
                    del backlog[: len(part)]
                    nxt = self._stage(part)

        self._complete(pending, batch, signer, sent, between=stage_next, given=given)
        if not sent and nxt is None:
            stage_next()  # no child share to wait for: the next part is built the usual way if at all
        return nxt, stop

    def _build(self, items: list[Req | Ctl | object], signer: SignerThread) -> Batch:
        """Under the chain lock: the next events, signed and completed, with their callers' waiters.

        In a big batch the child's share is handed to it as soon as it is prepared: it signs while the rest is
        prepared here."""
        if self._failing is not None:
            self._resync()
        batch = Batch()
        pending: list[tuple[Prepared, Waiter]] = []
        early, sent = self._early_share(items), 0
        for item in items:
            if isinstance(item, Req):
                if not self._prepare(item, pending):
                    continue
                if len(pending) == early:
                    sent, early = self._send_to_child(pending), 0
                if self._chain.checkpoint_due():
                    self._complete(pending, batch, signer, sent)
                    pending, sent = [], 0
                    batch.signed.append(self._chain.checkpoint())
            elif isinstance(item, Ctl):
                self._complete(pending, batch, signer, sent)
                pending, sent = [], 0
                self._control_item(item, batch)
        self._complete(pending, batch, signer, sent)
        return batch

    def _hand_over(self, batch: Batch) -> None:
        """To the committer; or, when it is idle and the batch small (few appenders), written here: one hand-off
        between threads fewer, where a big batch is better left to overlap its fsync with signing the next one."""
        if len(batch.signed) <= SMALL_BATCH and self._sent == self._done and self._failing is None:
            self._finish(batch.signed, batch.waiters, batch.controls, None)
        else:
            self._sent += 1
            self._commits.put(batch)

    def _complete(self, pending: list[tuple[Prepared, Waiter]], batch: Batch, signer: SignerThread,
                  sent: int = 0, between: Callable[[], None] | None = None, given: bool = False) -> None:
        """Sign the prepared events, then chain them. The first ``sent`` are being signed by the child process;
        other big batches are shared with it here; smaller ones are signed half on the signer thread and half here
        (Ed25519 releases the GIL). ``between`` runs after signing here, before the child's signatures are
        collected (only when the child has a share)."""
        if not pending:
            return
        if not sent and len(pending) >= CHILD_BATCH:
            k = min(len(pending) - 1, max(1, int(len(pending) * self._child.share)))
            sent = self._send_to_child(pending[:k])
        if sent:
            sigs = self._sign_with_child(pending, sent, between, given)
        else:
            sign = self._chain.signer.sign
            half = len(pending) // 2 if len(pending) >= 4 else 0
            other = signer.sign(sign, [p[2] for p, _ in pending[:half]]) if half else None
            mine = [sign(p[2]) for p, _ in pending[half:]]
            sigs = (other.result() if other else []) + mine
        for (prepared, fut), sig in zip(pending, sigs, strict=True):
            signed = self._chain.complete(prepared, sig)
            batch.signed.append(signed)
            batch.waiters.append((fut, signed[0]))

    def _early_share(self, items: list[Req | Ctl | object]) -> int:
        return self._child.early(sum(1 for item in items if isinstance(item, Req)), CHILD_BATCH)

    def _send_to_child(self, pending: list[tuple[Prepared, Waiter]]) -> int:
        """Hand these events' hashes to the child; how many it took (0: it cannot sign them)."""
        return self._child.give(self._chain.signer, [p[2] for p, _ in pending])

    def _sign_with_child(self, pending: list[tuple[Prepared, Waiter]], sent: int,
                         between: Callable[[], None] | None = None, given: bool = False) -> list[bytes]:
        """Sign the events after the first ``sent`` here while the child signs those, then collect its signatures
        (made here too if it failed). ``given``: the second child has the rest already."""
        sign, rest = self._chain.signer.sign, [p[2] for p, _ in pending[sent:]]
        # the rest to the second child: then this thread signs nothing and never waits for the GIL between two
        # signatures (the appenders' and the committer's threads hold it often; half the time, with 256 threads)
        other = self._child2 if given or (
            len(rest) >= CHILD_REST and self._child2.give(self._chain.signer, rest)) else None
        mine = [] if other is not None else [sign(d) for d in rest]
        if between is not None:
            between()
        theirs, by_other = self._child.collect(other)
        if other is not None:
            mine = by_other if by_other is not None else [sign(d) for d in rest]
        return (theirs if theirs is not None else [sign(p[2]) for p, _ in pending[:sent]]) + mine

    def _control_item(self, item: Ctl, batch: Batch) -> None:
        try:
            if item.op in ("seal", "checkpoint"):
                signed = self._chain.checkpoint(sealed=item.op == "seal", reason=item.reason)
            elif item.op == "rotate" and item.rotation is not None:
                signer, cert_der, actor = item.rotation
                signed = self._chain.rotate(signer, cert_der, actor)
                self._signer = signer
            else:
                batch.controls.append((item.future, None))
                return
        except Exception as exc:
            item.future.set_exception(exc if isinstance(exc, GravenError) else InvalidEvent(f"{item.op}: {exc}"))
            return
        batch.signed.append(signed)
        batch.controls.append((item.future, signed[0]))

    def _resync(self) -> None:
        """A commit failed: wait until the committer has failed everything in flight, then re-read the tail."""
        done = threading.Event()
        self._sent += 1
        self._commits.put(Batch(resync=done))
        done.wait()
        self._reload_chain()
        self._failing = None

    def _reload_chain(self) -> None:
        """Continue the chain from what is on disk (events completed but not written are dropped)."""
        tail = read_tail(self._reader, {self._signer.key_id: self._signer.public_raw})
        c = self._chain
        self._chain = ChainWriter(self._signer, origin=c.origin, boot_id=c.boot_id, clock=c.clock,
                                  checkpoint_every=c.checkpoint_every, next_seq=tail.next_seq, prev=tail.prev,
                                  tree=tail.tree, since_checkpoint=tail.since_checkpoint)

    def _commit_loop(self) -> None:
        failing: GravenError | None = None
        held: Batch | object | None = None  # a marker met while merging, handled next
        while True:
            batch = held if held is not None else self._commits.get()
            held = None
            if batch is STOP:
                return
            assert isinstance(batch, Batch)
            if batch.resync is not None:
                failing = None
                self._done += 1
                batch.resync.set()
                continue
            # Group commit here too: whatever the sequencer finished while the last fsync ran goes in one
            # transaction (all of it is acknowledged, or none).
            signed, waiters, controls, merged = list(batch.signed), list(batch.waiters), list(batch.controls), 1
            while True:
                try:
                    more = self._commits.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, Batch) or more.resync is not None:
                    held = more
                    break
                signed += more.signed
                waiters += more.waiters
                controls += more.controls
                merged += 1
            failing = self._finish(signed, waiters, controls, failing)
            self._done += merged  # after _finish has set self._failing: the sequencer reads them in this order

    def _finish(self, signed: list[Signed], waiters: list[tuple[Waiter, Event]],
                controls: list[tuple[Future[Event | None], Event | None]],
                failing: GravenError | None) -> GravenError | None:
        """Write the events in one durable transaction (unless an earlier one failed), then resolve every waiter:
        each asyncio loop's waiters with one wake-up of that loop. Returns the failure in force."""
        if failing is None:
            try:
                self._write_now(signed)
            except GravenError as exc:
                failing = exc
                self._failing = exc
        resolve(waiters, controls, failing)
        return failing

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
                grow_map(self._env, self.path)
            except (lmdb.Error, OSError) as exc:
                err = translate(exc, str(self.path))
                if not isinstance(err, DiskFull) and out_of_space(str(self.path), exc, sum(len(r) for _, r in signed)):
                    err = DiskFull(f"{self.path}: no space left on device ({exc})", path=str(self.path))
                raise err from exc
        with self._cond:
            self._durable_next = signed[-1][0].seq + 1
            if self._watchers:
                self._cond.notify_all()
