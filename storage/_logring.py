"""The node's service logs: a bounded ring of JSON lines per service, on EPHEMERAL.

Unlike the event log these lines are not evidence: they are not signed and not synced line by line (a crash may
lose the last few), and the oldest are dropped once a service holds ``max_lines``. Each line has a position
that only grows, across restarts too, so a reader resumes where it stopped, as with ``Events``; a reader that
asks for a position already dropped starts at the oldest line kept.

Until the node has an EPHEMERAL partition the lines are held in memory; ``attach`` moves them to disk.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from pathlib import Path

import lmdb

__all__ = ["LogRing"]

_POS = struct.Struct(">Q")
MAP_SIZE = 256 << 20


def _key(service: str, pos: int) -> bytes:
    return service.encode() + b"\0" + _POS.pack(pos)


class LogRing:
    def __init__(self, *, max_lines: int = 20_000) -> None:
        self.max_lines = max_lines
        self._cond = threading.Condition()
        self._env: lmdb.Environment | None = None
        self._memory: dict[str, deque[tuple[int, bytes]]] = {}
        self._first: dict[str, int] = {}
        self._next: dict[str, int] = {}

    # -- where the lines live ---------------------------------------------------------------------------------
    def attach(self, path: Path) -> None:
        """Keep the lines in the LMDB environment at ``path`` from now on, after the ones it already holds."""
        path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, sync=False, metasync=False, max_dbs=0)
        with self._cond:
            if self._env is not None:
                env.close()
                return
            self._env = env
            self._scan()
            held, self._memory = self._memory, {}
            for service, lines in held.items():
                # after the lines on disk, with the positions of the lines memory already dropped still counted
                self._next[service] = self._next.get(service, 0) + lines[0][0]
                for _, line in lines:
                    self._append_locked(service, line)

    def _scan(self) -> None:
        assert self._env is not None
        self._first.clear()
        self._next.clear()
        with self._env.begin() as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                service, pos = key[:-9].decode(), _POS.unpack(key[-8:])[0]
                self._first.setdefault(service, pos)
                self._next[service] = pos + 1

    def close(self) -> None:
        with self._cond:
            if self._env is not None:
                self._env.close()
                self._env = None

    # -- writing ------------------------------------------------------------------------------------------------
    def append(self, service: str, line: bytes) -> int:
        with self._cond:
            pos = self._append_locked(service, line)
            self._cond.notify_all()
            return pos

    def _append_locked(self, service: str, line: bytes) -> int:
        pos = self._next.get(service, 0)
        self._next[service] = pos + 1
        self._first.setdefault(service, pos)
        if self._env is None:
            held = self._memory.setdefault(service, deque())
            held.append((pos, line))
            while len(held) > self.max_lines:
                held.popleft()
            self._first[service] = held[0][0]
            return pos
        with self._env.begin(write=True) as txn:
            txn.put(_key(service, pos), line)
            first = self._first[service]
            if pos - first + 1 > self.max_lines:  # drop a tenth at once, not one line per append
                drop_to = pos + 1 - self.max_lines + self.max_lines // 10
                for old in range(first, drop_to):
                    txn.delete(_key(service, old))
                self._first[service] = drop_to
        return pos

    # -- reading ------------------------------------------------------------------------------------------------
    def services(self) -> list[str]:
        with self._cond:
            return sorted(self._next)

    def next_position(self, service: str) -> int:
        with self._cond:
            return self._next.get(service, 0)

    def read(self, service: str, start: int, limit: int = 500) -> list[tuple[int, bytes]]:
        """Up to ``limit`` lines from position ``start`` (or the oldest kept, if that one was dropped)."""
        with self._cond:
            start = max(start, self._first.get(service, 0))
            end = min(self._next.get(service, 0), start + limit)
            if self._env is None:
                return [(p, line) for p, line in self._memory.get(service, ()) if start <= p < end]
            with self._env.begin() as txn:
                out = []
                for pos in range(start, end):
                    line = txn.get(_key(service, pos))
                    if line is not None:
                        out.append((pos, bytes(line)))
                return out

    def wait_for(self, service: str, position: int, timeout: float) -> bool:
        """Block until ``service`` has a line at ``position``, or ``timeout`` seconds pass."""
        with self._cond:
            return self._cond.wait_for(lambda: self._next.get(service, 0) > position, timeout)
