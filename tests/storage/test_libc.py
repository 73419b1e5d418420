"""The one C library lookup (``storage.libc``) the agent, the supervisor, the launchers and the allocator share:
the interpreter's own, found where no ldconfig, gcc or ld is (an OS image), with errno kept; and
``die_with_parent``, the pre-exec step that ties a machine's agent or VM to its supervisor."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from storage import die_with_parent, libc


def test_the_c_library_is_found_without_find_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda _name: None)
    libc.cache_clear()
    try:
        lib = libc()
        assert lib is not None
        assert libc() is lib
        for name in ("mount", "umount2", "unshare", "prctl", "reboot", "sethostname", "madvise", "syscall"):
            assert hasattr(lib, name), name
    finally:
        libc.cache_clear()


def test_errno_is_kept_for_get_errno() -> None:
    lib = libc()
    assert lib is not None
    ctypes.set_errno(0)
    assert lib.close(-1) == -1
    assert ctypes.get_errno() == errno.EBADF


_PARENT = """
import subprocess, sys, time
from storage import die_with_parent
child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_child_started_with_die_with_parent_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_die_with_parent_is_harmless_in_this_process() -> None:
    before = ctypes.c_int(-1)
    lib = libc()
    assert lib is not None
    lib.prctl(2, ctypes.byref(before), 0, 0, 0)  # PR_GET_PDEATHSIG
    try:
        die_with_parent()
        now = ctypes.c_int(-1)
        lib.prctl(2, ctypes.byref(now), 0, 0, 0)
        assert now.value == signal.SIGKILL
    finally:
        lib.prctl(1, before.value, 0, 0, 0)


def test_the_gil_keeping_library_is_the_same_one_with_errno_kept() -> None:
    from storage._libc import libc_keeping_gil

    held = libc_keeping_gil()
    assert isinstance(held, ctypes.PyDLL) and libc_keeping_gil() is held
    ctypes.set_errno(0)
    assert held.close(-1) == -1
    assert ctypes.get_errno() == errno.EBADF
