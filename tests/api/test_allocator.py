"""The agent's allocator tuning must work in its OS image, which has no ldconfig, gcc or ld: ctypes'
find_library finds nothing there, so the C library is taken from the interpreter itself."""

from __future__ import annotations

import ctypes.util

import pytest

import storage
from api import _memory


def test_the_allocator_is_tuned_and_trimmed_where_find_library_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda _name: None)
    storage.libc.cache_clear()
    try:
        assert _memory._glibc() is not None
        assert _memory.tune_allocator() is True
        _memory.trim()
    finally:
        storage.libc.cache_clear()
