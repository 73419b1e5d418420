"""Reading the LMDB event log: named database ``events``, key = seq as 8-byte big-endian, value = canonical bytes.

Several ``LogReader``s may run beside the one writer (``LmdbEventLog``); in the writer's process they share
its environment, as LMDB allows one environment per path per process.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb

from errors import StorageError
from events import Event, NodeState, decode_event, replay_raw

from ._hash_child import MIN_EVENTS, HashChild, hasher
from ._lmdb_errors import lmdb_errors

__all__ = ["DB_NAME", "DEFAULT_MAP_SIZE", "KEY", "WRITER_ENVS", "LogReader", "grow_map", "open_env", "seq_key"]

KEY = struct.Struct(">Q")
DB_NAME = b"events"
DEFAULT_MAP_SIZE = 1 << 30


def seq_key(seq: int) -> bytes:
    return KEY.pack(seq)


def open_env(path: Path, *, readonly: bool, map_size: int = DEFAULT_MAP_SIZE) -> lmdb.Environment:
    with lmdb_errors(str(path)):
        if readonly:
            try:
                return lmdb.open(str(path), readonly=True, max_dbs=2, lock=True, subdir=True)
            except lmdb.Error:
                # A copied log on read-only media has no usable lock file; nobody writes it.
                return lmdb.open(str(path), readonly=True, max_dbs=2, lock=False, subdir=True)
        return lmdb.open(str(path), map_size=map_size, max_dbs=2, subdir=True, sync=True, metasync=True)


def grow_map(env: lmdb.Environment, path: Path) -> None:
    """Double the writer's map (it was full)."""
    size = env.info()["map_size"] * 2
    for _ in range(100):
        try:
            env.set_mapsize(size)
            return
        except lmdb.Error:
            time.sleep(0.01)  # a reader in this process holds a transaction; it is short
    raise StorageError(f"{path}: could not grow the map to {size} bytes")


# LMDB allows one environment per path per process: readers in the writer's process share its environment.
WRITER_ENVS: dict[str, lmdb.Environment] = {}


class LogReader:
    """Read-only access to a log directory; any number may run beside the writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "data.mdb").exists():
            raise StorageError(f"{self.path}: no event log here (data.mdb missing)", path=str(self.path))
        shared = WRITER_ENVS.get(str(self.path.resolve()))
        self._owns_env = shared is None
        self._env = shared if shared is not None else open_env(self.path, readonly=True)
        with lmdb_errors(str(self.path)):
            try:
                self._db = self._env.open_db(DB_NAME, create=False)
            except lmdb.NotFoundError as exc:
                raise StorageError(f"{self.path}: LMDB has no 'events' database", path=str(self.path)) from exc
        st = os.stat(self.path / "data.mdb")
        self._ident = (st.st_dev, st.st_ino)  # the file this reader's environment maps (for the hashing process)

    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq from the key, stored bytes) in key order, from ``start`` up to but not including ``end``."""
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db, buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(seq_key(start)):
                return
            for key, value in cur:
                seq = KEY.unpack(key)[0] if len(key) == 8 else -1
                if end is not None and seq >= end:
                    break
                yield seq, bytes(value)

    def replay(self, state: NodeState | None = None, *, hashing: HashChild | None = None,
               min_events: int = MIN_EVENTS) -> NodeState:
        """``replay_raw`` of the stored events after ``state`` (from seq 0 without one): the same checks, errors and
        state. A range of ``min_events`` or more takes its chain digests from a hashing process (``hashing``, by
        default this process's: ``storage._hash_child``), so that the hashing runs on the other core."""
        state = state or NodeState()
        start = state.seq + 1
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db, buffers=False) as txn:
            cur = txn.cursor()
            if not cur.last():
                return state
            last = cur.key()
            count = KEY.unpack(last)[0] + 1 - start if len(last) == 8 else 0
            if not cur.set_range(seq_key(start)):
                return state
            values = cur.iternext(keys=False, values=True)
            if count < min_events:
                return replay_raw(values, state)
            with (hashing or hasher()).session(self.path, self._ident, seq_key(start), count) as digests:
                return replay_raw(values, state, digests)

    def read_raw_reversed(self, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, stored bytes) newest first, from the one before ``end`` (default: the last) down to seq 0."""
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db, buffers=False) as txn:
            cur = txn.cursor()
            found = cur.prev() if end is not None and cur.set_range(seq_key(end)) else cur.last()
            if not found:
                return
            for key, value in cur.iterprev():
                yield KEY.unpack(key)[0] if len(key) == 8 else -1, bytes(value)

    def read(self, start: int = 0, end: int | None = None) -> Iterator[Event]:
        for seq, raw in self.read_raw(start, end):
            yield decode_event(raw, seq=seq)

    def next_seq(self) -> int:
        with lmdb_errors(str(self.path)), self._env.begin(db=self._db) as txn:
            cur = txn.cursor()
            return KEY.unpack(cur.key())[0] + 1 if cur.last() else 0

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
