"""The agent's allocator tuning must work in its OS image, which has no ldconfig, gcc or ld: ctypes'
find_library finds nothing there, so the C library is taken from the interpreter itself."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

import storage
from api import _memory


def test_the_allocator_is_tuned_and_trimmed_where_find_library_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda _name: None)
    storage.libc.cache_clear()
    try:
        assert _memory._glibc() is not None
        assert _memory.tune_allocator() is True
        assert isinstance(_memory.trim(), bool)
    finally:
        storage.libc.cache_clear()


_HOLES = """
from api import _memory
_memory.tune_allocator()
kept, freed = [], []
for i in range(400):
    (kept if i % 2 else freed).append(bytearray(100_000))  # under the mmap threshold: in the heap
del freed
print(_memory.trim())
"""


def test_trim_gives_back_the_pages_of_the_heaps_free_holes() -> None:
    done = subprocess.run([sys.executable, "-c", _HOLES], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
