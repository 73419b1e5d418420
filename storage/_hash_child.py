"""A hashing process for replays of the stored log: the chain check's SHA-256 on the second core.

``replay_raw`` decodes, checks and folds every event, and hashes it for the chain: the hash is a third of its time,
most of it hashlib's per-call cost, and it needs nothing the fold makes. So a replay of a long range from the log
asks this process for the digests: it opens the same LMDB file read-only itself (its own environment, nothing is
inherited and nothing is copied between the processes), walks the same entries in the same order, hashes each with
the same cut as ``replay_raw`` and sends the digests back in chunks of ``CHUNK`` events (32 bytes each). The caller
still decodes and checks every event itself; it only takes the digest instead of computing it.

Work is shared by chunks, so that neither side waits: the caller hashes the first chunk itself (the process needs
a moment to wake up), and whenever it reaches a chunk the process has not sent yet it either hashes that chunk
itself (the process has not started it: the process is told to skip it) or, when the process is on it, claims the
next one and waits for this one (at most ``WAIT_S``: a process that lost its core to another is not waited for).
A process that dies, stalls or is busy with another replay costs nothing but the hashing: the caller computes
every digest it lacks, with the same checks and the same errors. On a loaded machine the second core is not free:
the caller then hashes more chunks itself and the replay is about as fast as hashing everything in the caller.

The process's memory: ~4 MiB anonymous, ~36 MiB VmRSS after a 50,000-event replay, most of it the LMDB file's
pages it read (shared with the caller's map, in the page cache either way; Pss ~17 MiB).

The process starts with the first long replay (a node at rest never starts it), serves one replay at a time,
and exits after ``IDLE_S`` without a request (its memory is not kept at rest) or when its pipe closes.
"""

from __future__ import annotations

import functools
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

from events import HASH_CUT

__all__ = ["CHUNK", "IDLE_S", "MIN_EVENTS", "HashChild", "hasher"]

CHUNK = 512  # events per chunk of digests
MIN_EVENTS = 4096  # a shorter replay hashes in the caller (measured break-even: bench/NOTES-log.md)
IDLE_S = 20.0  # the process exits after this long without a request
WAIT_S = 0.002  # the longest the caller waits for a chunk the process is on (it hashes one in ~0.7 ms)
TIMEOUT_S = 2.0  # a process that does not end a replay within this long after being told is given up

_REQ = struct.Struct("<QQQQII")  # dev, ino, count, first chunk, chunk size, path length; start key, path
_REC = struct.Struct("<IIII")  # kind, chunk, n, m; then m indexes (u32) and n digests (DIGESTS only)
START, DIGESTS, END = 1, 2, 3

_CODE = r"""
import gc, hashlib, os, select, struct, sys
from itertools import islice
import lmdb

gc.disable()
REQ, REC = struct.Struct("<QQQQII"), struct.Struct("<IIII")
IDLE = float(sys.argv[1])
START, DIGESTS, END = 1, 2, 3  # the records' kinds, as below
PREFIX, SIG64, TIME64 = @CUT@  # events._record's: the cut replay_raw hashes
envs = {}

def readn(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf

def send(data):
    out = memoryview(data)
    while out:
        out = out[os.write(1, out):]

def env_for(path, dev, ino):
    st = os.stat(os.path.join(path, "data.mdb"))
    if (st.st_dev, st.st_ino) != (dev, ino):
        return None  # not the file the caller reads
    known = envs.get(path)
    if known is not None and known[2] == (dev, ino):
        return known
    for old in envs.values():  # one log open at a time: a deleted one's file goes with it
        old[0].close()
    envs.clear()
    try:
        env = lmdb.open(path, readonly=True, max_dbs=2, lock=True, subdir=True)
    except lmdb.Error:
        env = lmdb.open(path, readonly=True, max_dbs=2, lock=False, subdir=True)
    envs[path] = known = (env, env.open_db(b"events", create=False), (dev, ino))
    st = os.stat(os.path.join(path, "data.mdb"))
    return known if (st.st_dev, st.st_ino) == (dev, ino) else None

def control(skip):
    # claims ("K" + chunk) and cancel ("C") sent while a replay runs; True when cancelled
    while select.select([0], [], [], 0)[0]:
        tag = readn(1)
        if tag == b"C":
            return True
        skip.add(int.from_bytes(readn(4), "little"))
    return False

def serve(dev, ino, count, first, CHUNK, start, path):
    known = env_for(path, dev, ino)
    if known is None:
        return
    env, db, _ = known
    sha = hashlib.sha256(PREFIX).copy
    skip = set()
    with env.begin(db=db) as txn:
        cur = txn.cursor()
        if not cur.set_range(start):
            return
        values = cur.iternext(keys=False, values=True)
        chunks = (count + CHUNK - 1) // CHUNK
        for _ in islice(values, first * CHUNK):
            pass
        for j in range(first, chunks):
            if control(skip):
                return
            if j in skip:
                for _ in islice(values, CHUNK):
                    pass
                continue
            send(REC.pack(START, j, 0, 0))
            out, odd = [], []
            i = 0
            for raw in islice(values, min(CHUNK, count - j * CHUNK)):
                n = len(raw)
                if n > 87 and raw[0] == 0x8A and raw[n - 87:n - 81] == SIG64 and raw[n - 17:n - 8] == TIME64:
                    h = sha()
                    h.update(raw[1:n - 87])
                    h.update(raw[n - 17:])
                    out.append(h.digest())
                else:
                    out.append(bytes(32))
                    odd.append(i)
                i += 1
            if not out:
                return
            head = REC.pack(DIGESTS, j, len(out), len(odd))
            send(b"".join([head, *[k.to_bytes(4, "little") for k in odd], *out]))

while True:
    if not select.select([0], [], [], IDLE)[0]:
        sys.exit(0)
    tag = readn(1)
    if tag == b"K":  # a claim or a cancel sent while this process was ending the replay
        readn(4)
    if tag != b"R":
        continue
    dev, ino, count, first, chunk, plen = REQ.unpack(readn(REQ.size))
    start = readn(8)
    path = os.fsdecode(readn(plen))
    try:
        serve(dev, ino, count, first, max(1, chunk), start, path)
    except (lmdb.Error, OSError):
        pass  # the caller hashes what it did not get
    send(REC.pack(END, 0, 0, 0))
""".replace("@CUT@", repr(HASH_CUT))


@dataclass(slots=True)
class Shares:
    """Chunks of one replay: hashed by the process, and seconds the caller waited for it."""

    theirs: int = 0
    waited: float = 0.0


class HashChild:
    """The hashing process of this process's replays; ``session`` is one replay's use of it."""

    def __init__(self, *, chunk: int = CHUNK, idle_s: float = IDLE_S) -> None:
        self.chunk, self.idle_s = chunk, idle_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one replay at a time; another hashes in its own thread meanwhile
        self.started = 0  # processes started (tests and the benchmark read it)
        self.last = Shares()  # how the last replay's chunks were shared

    @contextmanager
    def session(self, path: Path, ident: tuple[int, int], start_key: bytes,
                count: int) -> Iterator[Iterator[bytes | None] | None]:
        """The digests of the ``count`` entries from ``start_key`` of the log at ``path`` (the entries the caller
        walks, in order), one item per entry, None for each the caller must hash itself, then None for ever.
        ``ident`` is (st_dev, st_ino) of the ``data.mdb`` the caller reads: the process reads no other file.
        Gives None when the process is busy with another replay or cannot start (hash every event here)."""
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            try:
                proc = self._start()
                raw_path = os.fsencode(path)
                _write_all(proc, b"R" + _REQ.pack(*ident, count, 1, self.chunk, len(raw_path)) + start_key + raw_path)
            except (OSError, ValueError):
                self._kill()
                yield None
                return
            assert proc.stdout is not None
            reader = _Records(proc.stdout.fileno())
            chunks = self._chunks(proc, reader, count)
            try:
                yield chain.from_iterable(chunks)
            finally:
                chunks.close()
                self._finish(proc, reader)
        finally:
            self._lock.release()

    def _chunks(self, proc: subprocess.Popen[bytes], reader: _Records,
                count: int) -> Generator[list[bytes | None], None, None]:
        step = self.chunk
        n_chunks = (count + step - 1) // step
        self.last = shares = Shares()
        try:
            yield [None] * min(step, count)  # the first chunk is the caller's: the process is still waking up
            claimed: set[int] = set()
            for j in range(1, n_chunks):
                size = min(step, count - j * step)
                got = None
                if j not in claimed:
                    got = reader.take(j)
                    if got is None and not reader.ended:
                        if reader.started < j:  # not begun: this chunk is the caller's
                            claimed.add(j)
                            _write_all(proc, b"K" + j.to_bytes(4, "little"))
                        else:  # the process is on it: the caller takes the next one, and waits for this one
                            if j + 1 < n_chunks:
                                claimed.add(j + 1)
                                _write_all(proc, b"K" + (j + 1).to_bytes(4, "little"))
                            t = time.perf_counter()
                            got = reader.wait(j, WAIT_S)  # else the process lost its core: hash it here
                            shares.waited += time.perf_counter() - t
                if got is not None and len(got) == size:
                    shares.theirs += 1
                    yield got
                else:
                    yield [None] * size
        except (OSError, ValueError, TimeoutError):
            self._kill()
        yield from repeat([None] * step)

    def _finish(self, proc: subprocess.Popen[bytes], reader: _Records) -> None:
        """Stop the process's work on this replay and read what it sent up to its end of the replay."""
        if self._proc is not proc or reader.ended:
            return
        try:
            _write_all(proc, b"C")
            reader.drain()
        except (OSError, ValueError, TimeoutError):
            self._kill()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        self._kill()  # one that exited idle: reap it
        self._proc = proc = subprocess.Popen([sys.executable, "-I", "-c", _CODE, repr(self.idle_s)],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, bufsize=0, close_fds=True)
        self.started += 1
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        return proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        proc.wait()

    @property
    def pid(self) -> int | None:
        """The running process's pid (None: none runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None


class _Records:
    """The process's records, read as they come without blocking (``wait`` blocks, with a time-out)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.started = 0  # the last chunk the process began
        self.ended = False  # it sent its end of the replay (or died)
        self.chunks: dict[int, list[bytes | None]] = {}

    def take(self, j: int) -> list[bytes | None] | None:
        self._poll()
        return self.chunks.pop(j, None)

    def wait(self, j: int, limit: float) -> list[bytes | None] | None:
        """Chunk ``j`` once it comes; None if it does not within ``limit`` s, or the process ended first."""
        deadline = time.monotonic() + limit
        while j not in self.chunks and not self.ended:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            self._poll()
        return self.chunks.pop(j, None)

    def drain(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.ended:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hashing process did not end its replay within {TIMEOUT_S} s")
            self.wait(-1, TIMEOUT_S)
            self.chunks.clear()

    def _poll(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)  # a pipe holds 64 KiB: no bigger buffer to allocate
            except BlockingIOError:
                break
            if not data:
                self.ended = True  # the process died: the caller hashes the rest
                break
            self.buf += data
        self._parse()

    def _parse(self) -> None:
        buf, pos, size = self.buf, 0, _REC.size
        while len(buf) - pos >= size:
            kind, j, n, m = _REC.unpack_from(buf, pos)
            body = 4 * m + 32 * n
            if len(buf) - pos - size < body:
                break
            pos += size
            if kind == START:
                self.started = j
            elif kind == DIGESTS:
                digests: list[bytes | None] = list(_split(n).unpack_from(buf, pos + 4 * m))
                for k in struct.unpack_from(f"<{m}I", buf, pos):
                    if k < n:
                        digests[k] = None
                self.chunks[j] = digests
            else:
                self.ended = True
            pos += body
        del buf[:pos]


@functools.cache
def _split(n: int) -> struct.Struct:
    return struct.Struct("32s" * n)


def _write_all(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    out = memoryview(data)
    while out:
        out = out[os.write(proc.stdin.fileno(), out) :]


_HASHER = HashChild()


def hasher() -> HashChild:
    """The process-wide hashing process (one per process: it serves one replay at a time)."""
    return _HASHER
