"""The boot environment and the META store that keeps it, torn-write safe.

META is 1 MiB of raw bytes (a file on the sandbox, the ``META`` partition on a block disk) holding two
copies of the boot environment, at offset 0 and at 512 KiB. Each copy is::

    magic "GRVMETA\\0" (8) | seq u64 BE | length u32 BE | msgpack BootEnv (length) | SHA-256 of all before (32)

A write goes to the copy that is invalid or older, then fsyncs; a read takes the valid copy with the
highest sequence number. A write torn at any byte therefore leaves the other copy, the last good
environment, intact. Both copies blank means a fresh disk (no environment); any other state with no valid
copy is a ``StorageError``.

The codec (``encode_copy``, ``decode_copy``, ``choose_copy``, ``target_copy``) is pure; ``MetaStore`` does
the file I/O.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from boot import BootEnv
from errors import StorageError

from ._sys import os_errors

__all__ = [
    "META_COPY_OFFSETS",
    "META_SIZE",
    "CopyRead",
    "CopyStatus",
    "MetaStore",
    "choose_copy",
    "decode_copy",
    "encode_copy",
    "target_copy",
]

META_SIZE = 1 << 20
META_COPY_OFFSETS = (0, META_SIZE // 2)
_COPY_AREA = META_SIZE // 2
_MAX_PAYLOAD = 64 * 1024
_MAGIC = b"GRVMETA\x00"
_HEAD = struct.Struct(">8sQI")
_BLOCK = 4096


_encoder = msgspec.msgpack.Encoder(order="sorted")
_decoder = msgspec.msgpack.Decoder(BootEnv)


class CopyStatus(enum.StrEnum):
    OK = "ok"
    BLANK = "blank"  # never written: all zeros
    CORRUPT = "corrupt"


class CopyRead(NamedTuple):
    status: CopyStatus
    env: BootEnv | None = None
    reason: str = ""


def encode_copy(env: BootEnv) -> bytes:
    """One META copy holding ``env``, zero-padded to a multiple of 4 KiB."""
    if env.seq < 0:
        raise ValueError("boot environment seq must not be negative")
    body = _encoder.encode(env)
    if len(body) > _MAX_PAYLOAD:
        raise StorageError(f"boot environment of {len(body)} bytes exceeds {_MAX_PAYLOAD}")
    head = _HEAD.pack(_MAGIC, env.seq, len(body))
    record = head + body + hashlib.sha256(head + body).digest()
    padded = -(-len(record) // _BLOCK) * _BLOCK
    return record.ljust(padded, b"\x00")


def decode_copy(data: bytes) -> CopyRead:
    """Classify one copy's bytes (they may be short, as after a truncation) as ok, blank or corrupt."""
    if not data.strip(b"\x00"):
        return CopyRead(CopyStatus.BLANK)
    if len(data) < _HEAD.size + 32:
        return CopyRead(CopyStatus.CORRUPT, reason=f"truncated: only {len(data)} bytes")
    magic, seq, length = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        return CopyRead(CopyStatus.CORRUPT, reason=f"bad magic {magic!r}")
    if length > _MAX_PAYLOAD:
        return CopyRead(CopyStatus.CORRUPT, reason=f"length {length} exceeds {_MAX_PAYLOAD}")
    end = _HEAD.size + length
    if len(data) < end + 32:
        return CopyRead(CopyStatus.CORRUPT, reason=f"truncated: {len(data)} of {end + 32} bytes")
    if hashlib.sha256(data[:end]).digest() != data[end : end + 32]:
        return CopyRead(CopyStatus.CORRUPT, reason="checksum mismatch")
    try:
        env = _decoder.decode(data[_HEAD.size : end])
    except msgspec.DecodeError as exc:
        return CopyRead(CopyStatus.CORRUPT, reason=f"payload does not decode: {exc}")
    if env.seq != seq:
        return CopyRead(CopyStatus.CORRUPT, reason=f"header seq {seq} != payload seq {env.seq}")
    return CopyRead(CopyStatus.OK, env)


def choose_copy(copies: Sequence[CopyRead], where: str = "META") -> tuple[int, BootEnv] | None:
    """The valid copy with the highest seq; None when every copy is blank; StorageError when none is valid."""
    valid = [(c.env.seq, i, c.env) for i, c in enumerate(copies) if c.env is not None]
    if valid:
        _, index, env = max(valid, key=lambda v: (v[0], -v[1]))
        return index, env
    if all(c.status is CopyStatus.BLANK for c in copies):
        return None
    reasons = "; ".join(f"copy {i}: {c.status.value}{f' ({c.reason})' if c.reason else ''}"
                        for i, c in enumerate(copies))
    raise StorageError(f"{where}: no valid boot environment copy ({reasons})", path=where)


def target_copy(copies: Sequence[CopyRead]) -> int:
    """Which copy a write overwrites: an invalid one, else the one with the lowest seq."""
    seqs = [c.env.seq if c.env is not None else -1 for c in copies]
    return min(range(len(copies)), key=lambda i: (seqs[i], i))


class MetaStore:
    """The two-copy boot environment in a 1 MiB raw area (a file or a partition)."""

    def __init__(self, path: Path | str, *, size: int = META_SIZE) -> None:
        self.path = Path(path)
        if size < META_SIZE:
            raise StorageError(f"{self.path}: META needs {META_SIZE} bytes, has {size}", path=str(self.path))

    def _read_copies(self) -> list[CopyRead]:
        where = str(self.path)
        with os_errors(f"read META {where}"):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return [decode_copy(os.pread(fd, _COPY_AREA, off)) for off in META_COPY_OFFSETS]
            finally:
                os.close(fd)

    def copies(self) -> list[CopyRead]:
        """Both copies, classified (for diagnostics)."""
        return self._read_copies()

    def read(self) -> BootEnv | None:
        """The last good boot environment, or None on a blank (all-zero, full-size) META."""
        copies = self._read_copies()
        chosen = choose_copy(copies, f"META {self.path}")
        if chosen is None:
            size = self._size()
            if size < META_SIZE:
                raise StorageError(f"META {self.path} is truncated ({size} of {META_SIZE} bytes) and holds no "
                                   "valid boot environment copy", path=str(self.path))
            return None
        return chosen[1]

    def _size(self) -> int:
        with os_errors(f"size of META {self.path}"):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)

    def write(self, env: BootEnv) -> BootEnv:
        """Store ``env`` over the older (or invalid) copy and fsync; refuse an env that is not newer."""
        copies = self._read_copies()
        try:
            chosen = choose_copy(copies, f"META {self.path}")
        except StorageError:
            chosen = None  # both copies bad: the new environment repairs META
        if chosen is not None and env.seq <= chosen[1].seq:
            raise StorageError(
                f"META {self.path}: refusing a stale boot environment (seq {env.seq}, stored seq {chosen[1].seq})",
                path=str(self.path),
            )
        data = encode_copy(env)
        offset = META_COPY_OFFSETS[target_copy(copies)]
        with os_errors(f"write META {self.path}"):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _pwrite_all(fd, data, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        return env

    def clear(self) -> None:
        """Zero both copies: a blank META, as after format."""
        with os_errors(f"clear META {self.path}"):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _pwrite_all(fd, bytes(META_SIZE), 0)
                os.fsync(fd)
            finally:
                os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
