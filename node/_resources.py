"""What the node sees from inside: its processes and its mounts, read from its own ``/proc`` (in a container
machine the agent is PID 1 and ``/`` is the slot's squashfs, read-only), and the kernel and OS it runs."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from pathlib import Path

from api import trim_heap
from errors import InvalidRequest
from storage import libc

__all__ = ["KINDS", "about", "kernel", "mounts", "os_image", "processes", "read", "release_startup_memory",
           "release_startup_pages"]

KINDS = ("processes", "mounts")


def _clk_tck() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def processes(proc: str = "/proc") -> list[dict[str, object]]:
    """One row per process: pid, ppid, state, threads, resident memory, CPU seconds, command line."""
    page = os.sysconf("SC_PAGE_SIZE")
    tck = _clk_tck()
    rows: list[dict[str, object]] = []
    for name in sorted((n for n in os.listdir(proc) if n.isdigit()), key=int):
        try:
            stat = Path(f"{proc}/{name}/stat").read_bytes()
            cmdline = Path(f"{proc}/{name}/cmdline").read_bytes()
            statm = Path(f"{proc}/{name}/statm").read_text().split()
        except OSError:
            continue  # it ended while we looked
        comm = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode(errors="replace")
        fields = stat[stat.rfind(b")") + 2:].split()
        args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        rows.append({"pid": int(name), "ppid": int(fields[1]), "state": fields[0].decode(),
                     "threads": int(fields[17]), "rss_bytes": int(statm[1]) * page,
                     "cpu_seconds": round((int(fields[11]) + int(fields[12])) / tck, 2),
                     "command": " ".join(args) if args else f"[{comm}]"})
    return rows


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[dict[str, object]]:
    """One row per mount: mount point, file system type, source, read-only or not, options."""
    rows = []
    for line in Path(mountinfo).read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        options = fields[5].split(",")
        rows.append({"mountpoint": _unescape(fields[4]), "fstype": rest[0], "source": _unescape(rest[1]),
                     "read_only": "ro" in options, "options": fields[5]})
    return rows


def kernel() -> str:
    return os.uname().release


def os_image(os_release: str = "/etc/os-release") -> str:
    """The running root's PRETTY_NAME (the image's, in a container machine; the host's for a process one)."""
    with contextlib.suppress(OSError):
        for line in Path(os_release).read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip('"')
    return ""


def about() -> dict[str, str]:
    """For ``version``: the kernel, the running root's OS, and whether the agent is PID 1 of its own machine."""
    from ._guest import in_guest
    from ._pid1 import is_pid1

    provisioner = "qemu" if in_guest() else "container" if is_pid1() else "process"
    return {"kernel": kernel(), "os_image": os_image(), "provisioner": provisioner}


def read(kind: str) -> list[dict[str, object]]:
    if kind == "processes":
        return processes()
    if kind == "mounts":
        return mounts()
    raise InvalidRequest(f"unknown resource {kind!r} (resources: {', '.join(KINDS)})", kind=kind)


_MADV_DONTNEED = 4
_SHARED_OBJECT = re.compile(r"/[^ ]*\.so(\.[0-9.]+)?")
_RANGE = re.compile(r"([0-9a-f]+)-([0-9a-f]+) ")


def startup_pages(smaps: str) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of each mapping ``release_startup_pages`` may drop, from the text of
    ``/proc/PID/smaps``: a private, read-only mapping of a shared object (code and constants) with pages resident
    and none of them a private copy (no relocated or written page: dropping one would lose it)."""
    out: list[tuple[int, int, int]] = []
    candidate: list[int] | None = None
    for line in smaps.splitlines():
        head = _RANGE.match(line)
        if head:
            if candidate is not None and candidate[2] > 0 and candidate[3] == 0:
                out.append((candidate[0], candidate[1], candidate[2]))
            fields = line.split(None, 5)
            path = fields[5].strip() if len(fields) > 5 else ""
            private_ro = len(fields[1]) == 4 and fields[1][1] == "-" and fields[1][3] == "p"
            candidate = ([int(head[1], 16), int(head[2], 16), 0, 0]
                         if private_ro and _SHARED_OBJECT.fullmatch(path) else None)
        elif candidate is not None and line.startswith(("Rss:", "Anonymous:", "Private_Dirty:", "Swap:")):
            name, value = line.split()[:2]
            kib = int(value) * 1024
            candidate[2 if name == "Rss:" else 3] += kib
    if candidate is not None and candidate[2] > 0 and candidate[3] == 0:
        out.append((candidate[0], candidate[1], candidate[2]))
    return out


def release_startup_pages(smaps: str = "/proc/self/smaps") -> int:
    """Unmap the clean pages of the shared libraries' code and constants, once the node is up. Start-up (imports,
    module initialisation, the first TLS handshake) faults in whole 64 KiB windows of each library, most of which a
    node at rest never touches again (bench/bench_rss.py: about 16 MiB of gRPC's, cryptography's and libpython's
    code). A page still needed faults back in from the page cache, a minor fault, as it was mapped the first time;
    a mapping holding any private copy of a page (relocations) is left alone, so only clean file pages, identical
    to the file's, are dropped. Shared objects stay loaded for the process's life (CPython never unloads one).
    Returns the resident bytes unmapped; 0 where there is no smaps or no madvise."""
    lib = libc()
    if lib is None:
        return 0
    try:
        with open(smaps) as f:
            ranges = startup_pages(f.read())
        madvise = lib.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return sum(rss for lo, hi, rss in ranges if madvise(lo, hi - lo, _MADV_DONTNEED) == 0)


def release_startup_memory() -> None:
    """Once the node is up: what start-up freed in the C heap, and the library pages only start-up touched.
    Start-up frees more than it keeps (imports, the log's replay, TLS set-up), and glibc keeps freed pages resident
    until its top chunk passes the trim threshold, which fragmentation rarely lets happen."""
    trim_heap()
    release_startup_pages()
