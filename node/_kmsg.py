"""The kernel's log (``/dev/kmsg``) of a node that has a kernel of its own: a virtual machine, where the agent is
PID 1 of the first pid namespace. A process or container machine shares the host's kernel, whose log is not the
node's to give."""

from __future__ import annotations

import errno
import json
import os
import select
from collections import deque
from collections.abc import Generator, Iterator
from pathlib import Path

from errors import Unavailable

__all__ = ["KMSG", "kernel_records", "own_kernel", "parse_record"]

KMSG = Path("/dev/kmsg")
_INIT_PID_NS = 0xEFFFFFFC  # the kernel's fixed inode number of its first pid namespace
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def own_kernel() -> bool:
    try:
        return os.getpid() == 1 and os.stat("/proc/self/ns/pid").st_ino == _INIT_PID_NS
    except OSError:
        return False


def parse_record(raw: bytes) -> dict[str, object]:
    """One ``/dev/kmsg`` record (``prio,seq,usec,flags[,...];message``) as a JSON-able dict."""
    head, _, text = raw.rstrip(b"\n").partition(b";")
    fields = head.split(b",")
    prio, seq, usec = (int(fields[i]) if len(fields) > i and fields[i].isdigit() else 0 for i in range(3))
    message = text.split(b"\n", 1)[0]  # continuation lines (" KEY=value") are dictionary entries
    return {"seq": seq, "time_s": usec / 1e6, "level": LEVELS[prio & 7], "facility": prio >> 3,
            "msg": message.decode(errors="replace")}


def kernel_records(*, tail: int | None = None, follow: bool = False, poll_s: float = 1.0,
                   path: Path = KMSG) -> Generator[bytes | None, None, None]:
    """JSON lines of the kernel's records (the last ``tail``, else all kept), then, with ``follow``, new ones as
    they come; ``None`` each ``poll_s`` without one, so a caller can notice its client went away."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Unavailable(f"cannot read the kernel's log {path}: {exc.strerror}") from exc
    try:
        kept: deque[bytes] = deque(maxlen=tail) if tail else deque()
        for raw in _drain(fd):
            kept.append(raw)
        for raw in kept:
            yield json.dumps(parse_record(raw)).encode()
        while follow:
            ready, _, _ = select.select([fd], [], [], poll_s)
            if not ready:
                yield None
            for raw in _drain(fd):
                yield json.dumps(parse_record(raw)).encode()
    finally:
        os.close(fd)


def _drain(fd: int) -> Iterator[bytes]:
    while True:
        try:
            raw = os.read(fd, 8192)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            if exc.errno == errno.EPIPE:  # records we had not read yet were overwritten: go on with the next
                continue
            raise
        if not raw:
            return
        yield raw
