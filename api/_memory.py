"""The agent's allocator, tuned so that memory a hostile request made the agent allocate goes back to the
system after it: few malloc arenas (each thread that parses would otherwise keep its own 64 MiB arena), a fixed
mmap threshold (glibc raises it after every large free, so that later large buffers land in the heap and stay),
and ``malloc_trim`` after a large request. Each step is a no-op where the C library is not glibc."""

from __future__ import annotations

import asyncio
import ctypes
import os

from storage import libc

__all__ = ["BIG_REQUEST", "rss_bytes", "trim", "trim_when_grown", "tune_allocator"]

BIG_REQUEST = 256 << 10  # a request this large is followed by a trim
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def _glibc() -> ctypes.CDLL | None:
    lib = libc()
    return lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def tune_allocator(arenas: int = 2, mmap_threshold: int = 128 << 10) -> bool:
    """Few arenas and a fixed mmap threshold; True when the C library took them."""
    lib = _glibc()
    if lib is None:
        return False
    ok = lib.mallopt(_M_ARENA_MAX, arenas) == 1
    ok = lib.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and ok
    return bool(lib.mallopt(_M_TRIM_THRESHOLD, 4 * mmap_threshold) == 1 and ok)


def trim() -> bool:
    """Give the C heap's free pages back to the system, every arena (ctypes releases the GIL while it runs); True
    when some were. A no-op where the C library is not glibc."""
    lib = _glibc()
    return lib is not None and bool(lib.malloc_trim(0))


def rss_bytes() -> int:
    """This process's resident set, from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


async def trim_when_grown(every: float = 5.0, growth: int = 16 << 20) -> None:
    """Run for the agent's life: trim when the resident set grew by ``growth`` over its lowest since the last
    trim. Catches what no handler saw: a message gRPC refused for its size, buffers of connections that closed."""
    floor = rss_bytes()
    while True:
        await asyncio.sleep(every)
        now = rss_bytes()
        if now < floor:
            floor = now
        elif now > floor + growth:
            await asyncio.to_thread(trim)
            floor = rss_bytes()
