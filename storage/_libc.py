"""The C library, for the system calls the ``os`` module lacks (mount, unshare, pivot_root, prctl, reboot, madvise,
malloc_trim): the one the interpreter itself links, through dlopen(NULL). ``ctypes.util.find_library`` asks
ldconfig, gcc or ld, and a fixed name such as ``libc.so.6`` holds only for glibc: an OS image has none of those
tools, so the lookup found nothing there (commit 5a058ce)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import signal

__all__ = ["die_with_parent", "libc", "libc_keeping_gil"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The interpreter's own C library, with errno kept for ``ctypes.get_errno()``; None where it has none."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@functools.cache
def libc_keeping_gil() -> ctypes.PyDLL:
    """The same library through ``ctypes.PyDLL``: its calls keep the GIL (for calls that never wait, such as I/O
    on a non-blocking pipe, where giving the GIL up and queueing to get it back costs more than the call)."""
    return ctypes.PyDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (prctl ``PR_SET_PDEATHSIG``): a
    ``preexec_fn``, so a machine's agent or VM never outlives the supervisor that started it."""
    lib = libc()
    if lib is not None:
        with contextlib.suppress(AttributeError):
            lib.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
