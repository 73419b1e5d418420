"""The agent's duties as PID 1 of a container machine (``node._launch``).

- It reaps orphans: a process whose parent dies is re-parented to PID 1 and, once it exits, stays a zombie until
  PID 1 waits for it. A thread scans ``/proc`` once a second and reaps a zombie child it saw in the previous
  scan too, so that the agent's own ``subprocess`` calls, which wait for their children at once, keep their
  exit statuses (``to_reap`` is that rule, pure).
- It ends through reboot(2) alone: ``LINUX_REBOOT_CMD_RESTART`` or ``LINUX_REBOOT_CMD_POWER_OFF``, which in a
  pid namespace other than the kernel's first one make the kernel kill PID 1 with SIGHUP or SIGINT; the launcher
  reads that death as reboot or power off. In the kernel's first pid namespace reboot(2) would reboot the host:
  ``power`` refuses to call it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable

from storage import libc

__all__ = ["INIT_PID_NS_INO", "fault_oom", "is_pid1", "power", "reboot", "start_reaper", "to_reap", "zombie_children"]

INIT_PID_NS_INO = 0xEFFFFFFC  # PROC_PID_INIT_INO: the kernel's first pid namespace
LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_POWER_OFF = 0x01234567, 0x4321FEDC
EXIT_POWER_OFF, EXIT_REBOOT = 0, 10


def is_pid1() -> bool:
    """PID 1 of a pid namespace that is not the host's."""
    if os.getpid() != 1:
        return False
    try:
        return os.stat("/proc/self/ns/pid").st_ino != INIT_PID_NS_INO
    except OSError:
        return False


def zombie_children(proc: str = "/proc") -> set[int]:
    """Pids of this process's children that are zombies (state Z), from ``/proc/PID/stat``."""
    me = os.getpid()
    found = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(proc):
            if not name.isdigit():
                continue
            try:
                with open(f"{proc}/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()  # after "(comm) ": state, ppid, ...
            if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
                found.add(int(name))
    return found


def to_reap(before: Iterable[int], now: Iterable[int]) -> set[int]:
    """Zombies seen in two scans in a row: nobody else is going to wait for them."""
    return set(before) & set(now)


def _reap_loop(interval: float, stop: threading.Event) -> None:
    seen: set[int] = set()
    while not stop.wait(interval):
        now = zombie_children()
        for pid in to_reap(seen, now):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        seen = now - to_reap(seen, now)


def start_reaper(interval: float = 1.0) -> threading.Event:
    """Reap orphans in a daemon thread until the returned event is set."""
    stop = threading.Event()
    threading.Thread(target=_reap_loop, args=(interval, stop), name="pid1-reaper", daemon=True).start()
    return stop


def power(code: int) -> int:
    """End the machine through reboot(2) for reboot (10) and power off (0); return ``code`` for anything else
    (the process then exits with it, which the launcher counts as a failed boot)."""
    if code not in (EXIT_REBOOT, EXIT_POWER_OFF) or not is_pid1():
        return code
    err = reboot(code)  # returns only if it failed: the kernel kills PID 1 with SIGHUP / SIGINT
    print(f"graven agent: reboot(2) failed: {os.strerror(err)}; exiting with {code}", file=sys.stderr, flush=True)
    return code


def reboot(code: int) -> int:
    """Flush stdio, sync, and reboot(2) with restart for ``EXIT_REBOOT``, else power off; returns only when that
    failed, with its errno (the caller says so and exits)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.sync()
    lib = libc()
    if lib is None:
        return errno.ENOSYS
    lib.reboot(ctypes.c_int(LINUX_REBOOT_CMD_RESTART if code == EXIT_REBOOT else LINUX_REBOOT_CMD_POWER_OFF))
    return ctypes.get_errno()


# allocates and touches 8 MiB at a time, forever
_HOG = "chunks = []\nwhile True:\n    chunks.append(bytearray(b'\\xa5') * (8 << 20))\n"


async def fault_oom(say: Callable[[str], None]) -> None:
    """Fault point ``oom`` (test images only, ``image build --fault oom``): a process of the machine allocates until
    the kernel's OOM killer acts. The machine's memory cgroup then ends the whole machine, so the boot fails with
    the reason; should the machine outlive it, this returns and the boot goes on (and a test sees it did). It acts
    only where memory is bounded, in a machine whose PID 1 is the agent: on the host it would eat the host's."""
    if os.getpid() != 1:
        say("fault point oom: ignored (the agent is not PID 1 of a machine with a memory limit)")
        return
    say("fault point oom: a process allocates past the machine's memory limit (test image)")
    hog = subprocess.Popen([sys.executable, "-S", "-c", _HOG], stdin=subprocess.DEVNULL)
    code = await asyncio.to_thread(hog.wait)
    say(f"fault point oom: the allocating process ended ({code}) and the machine lives on")
