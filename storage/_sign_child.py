"""A signing process beside the writer, so that signing uses both cores without waiting for the GIL.

Ed25519 in ``cryptography`` releases the GIL while it signs, but a signing thread needs the GIL back between two
signatures; while the sequencer, the committer and the callers' threads run Python, it waits for it, and two
signing threads reach well under twice one core. A child process has no such wait: the sequencer sends it part of a
big batch's hashes, signs the rest itself, and reads the child's signatures back. Ed25519 is deterministic, so the
signatures are the ones the sequencer would have made; the bytes on disk do not change. The log runs two: the
first takes its share of a big batch as soon as it is prepared, the second the rest, so that the sequencer signs
none of it (signing in the writer's process waits for the GIL between two signatures).

The child is started on the first big batch (a node at rest never starts it), holds the log key only in memory,
and exits when its pipe closes (the log closed, or the writer died). A failure (it died, a short read) stops
its use for this log's life: the batch is signed in the writer's process instead, nothing is lost.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import functools
import os
import select
import subprocess
import sys
import threading
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._libc import libc_keeping_gil

__all__ = ["TIMEOUT_S", "ChildSigner", "raw_private_key"]

TIMEOUT_S = 5.0  # a child that takes longer to take or return a batch is given up (the batch is signed here)

_CODE = r"""
import os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def readn(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return bytes(buf)

key_raw = key = None
while True:
    head = readn(36)
    if head[:32] != key_raw:
        key_raw, key = head[:32], Ed25519PrivateKey.from_private_bytes(head[:32])
    n = int.from_bytes(head[32:], "big")
    data = readn(32 * n)
    sign = key.sign
    out = memoryview(n.to_bytes(4, "big") + b"".join([sign(data[i:i + 32]) for i in range(0, 32 * n, 32)]))
    while out:
        out = out[os.write(1, out):]
"""


def raw_private_key(signer: object) -> bytes | None:
    """The raw Ed25519 private key of an in-memory signer (the signing process needs it); None for others."""
    key = getattr(signer, "private_key", None)
    if not isinstance(key, Ed25519PrivateKey):
        return None
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


class ChildSigner:
    """``send`` the hashes, sign others meanwhile, then ``receive`` the signatures. Requests are answered in the
    order sent: a second may be sent before the first is received (the child then has the next one ready), as
    long as the requests in flight fit in the pipes (a few hundred hashes; the log sends at most two parts)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: collections.deque[int] = collections.deque()  # hashes per request sent, not yet received
        self.share = 0.6  # of a big batch, adjusted so that the child and the sequencer finish together
        self._key: tuple[object, bytes | None] = (None, None)  # the last signer given, and its raw key
        self.failed = False
        self._lock = threading.Lock()

    def early(self, n: int, least: int) -> int:
        """How many of a batch of ``n`` events to give the child as soon as they are prepared (0: none, when the
        batch is under ``least`` or the child failed)."""
        return max(1, int(n * self.share)) if n >= least and not self.failed else 0

    def give(self, signer: object, digests: list[bytes]) -> int:
        """``send`` with the key of ``signer`` (an in-memory Ed25519 signer); how many the child took."""
        if self._key[0] is not signer:
            self._key = (signer, raw_private_key(signer))
        key_raw = self._key[1]
        return len(digests) if key_raw is not None and self.send(key_raw, digests) else 0

    def collect(self, other: ChildSigner | None = None) -> tuple[list[bytes] | None, list[bytes] | None]:
        """``receive``, and from ``other`` too (the rest of the batch, when given), then adjust ``share`` so that
        the caller waits for neither: alone, the caller signed the rest meanwhile (waited for this child: less
        next time, else more); with ``other``, whichever of the two was waited for gets less next time."""
        t = time.perf_counter()
        theirs = self.receive()
        mid = time.perf_counter()
        rest = other.receive() if other is not None else None
        waited, waited_other = mid - t > 50e-6, time.perf_counter() - mid > 50e-6
        step = (-0.02 if waited else 0.02) if other is None else 0.02 * (waited_other - waited)
        if theirs is not None:
            self.share = min(0.9, max(0.3 if other is None else 0.1, self.share + step))
        return theirs, rest

    def send(self, key_raw: bytes, digests: list[bytes]) -> bool:
        """Hand ``digests`` (32 bytes each) to the child; False when it cannot take them (sign them here)."""
        if self.failed or len(key_raw) != 32 or any(len(d) != 32 for d in digests):
            return False
        try:
            proc = self._start()
            assert proc.stdin is not None
            _write_all(proc.stdin.fileno(), key_raw + len(digests).to_bytes(4, "big") + b"".join(digests))
            self._pending.append(len(digests))
            return True
        except (OSError, ValueError, TimeoutError):
            self._fail()
            return False

    def receive(self) -> list[bytes] | None:
        """The signatures for the oldest ``send`` not received yet, in order; None when the child failed (sign
        them here)."""
        if not self._pending:
            return None
        n = self._pending.popleft()
        proc = self._proc
        if proc is None or proc.stdout is None or self.failed:
            return None
        try:
            data = _read_exactly(proc.stdout.fileno(), 4 + 64 * n)
        except (OSError, TimeoutError):
            data = b""
        if len(data) != 4 + 64 * n or int.from_bytes(data[:4], "big") != n:
            self._fail()
            return None
        return [data[i : i + 64] for i in range(4, 4 + 64 * n, 64)]

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _start(self) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._proc is None:
                self._proc = subprocess.Popen([sys.executable, "-I", "-c", _CODE], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
                                              close_fds=True)
                assert self._proc.stdin is not None
                assert self._proc.stdout is not None
                os.set_blocking(self._proc.stdin.fileno(), False)  # a stuck child times out, see _write_all
                os.set_blocking(self._proc.stdout.fileno(), False)
            return self._proc

    def _fail(self) -> None:
        self.failed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # given up: no grace period for a child that may be stuck
        self.close()


class _HeldIO:
    """``write(2)`` and ``read(2)`` keeping the GIL (``libc_keeping_gil``): on a non-blocking pipe they never wait,
    and in a crowd of appender threads getting the GIL back after ``os.write``/``os.read`` means waiting behind them
    (the sequencer, the pipeline's serial stage, calls these). Each returns what it wrote/read, or -1 (errno: the
    pipe is full/empty, or gone)."""

    def __init__(self) -> None:
        libc = libc_keeping_gil()
        self.write = libc.write
        self.write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        self.write.restype = ctypes.c_ssize_t
        self.read = libc.read
        self.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
        self.read.restype = ctypes.c_ssize_t


_held_io = functools.cache(_HeldIO)


def _write_all(fd: int, data: bytes) -> None:
    """Write to the non-blocking ``fd``, waiting (``select``) only when the pipe is full: each system call gives up
    the GIL, and in a crowd getting it back means waiting behind the woken appenders' threads; so the first write
    keeps the GIL (``_HeldIO``), and what it could not write goes the usual way."""
    deadline = time.monotonic() + TIMEOUT_S
    out = memoryview(data)[max(0, _held_io().write(fd, data, len(data))) :]
    while out:
        try:
            out = out[os.write(fd, out) :]
            continue
        except BlockingIOError:
            pass
        if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
            raise TimeoutError(f"the signing process took no data for {TIMEOUT_S} s")


def _read_exactly(fd: int, n: int) -> bytes:
    """``n`` bytes from the non-blocking ``fd``, or fewer if the child closed its end; TimeoutError if it sends
    nothing for too long. Every read keeps the GIL (``_HeldIO``); only ``select`` gives it up, to wait when nothing
    is there (so a wait for the child costs one hand-back of the GIL, not two)."""
    deadline = time.monotonic() + TIMEOUT_S
    read = _held_io().read
    chunk = ctypes.create_string_buffer(n)
    buf = bytearray()
    while len(buf) < n:
        got = read(fd, chunk, n - len(buf))
        if got > 0:
            buf += ctypes.string_at(chunk, got)
            continue
        if got == 0:  # the child closed its end
            break
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err))
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError(f"the signing process returned nothing for {TIMEOUT_S} s")
    return bytes(buf)
