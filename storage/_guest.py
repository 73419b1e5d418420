"""Disk access without the tools: what a block disk falls back on inside a machine whose root is its own image
(no sfdisk, no mount binary), as PID 1 of a qemu machine.

Partitions come from the kernel's view in sysfs (``PARTNAME`` of each partition's ``uevent``, start and size in
512-byte sectors), mounts are mount(2) and umount2(2) through libc. Where the tools exist (the host), the tools
are used, as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from errors import StorageError

from ._libc import libc
from ._sys import have, run

__all__ = ["mount", "sysfs_partitions", "umount"]

_SECTOR = 512
_MNT_DETACH = 2
_FSTYPES = ("ext4", "vfat", "squashfs")


def sysfs_partitions(device: Path, sys_block: Path = Path("/sys/class/block")) -> dict[str, tuple[str, int, int]]:
    """GPT name -> (device node, start, size in bytes) of the partitions the kernel sees on ``device``."""
    disk = device.resolve().name
    found: dict[str, tuple[str, int, int]] = {}
    base = sys_block / disk
    if not base.is_dir():
        return found
    for part in sorted(base.iterdir()):
        uevent = part / "uevent"
        if not part.name.startswith(disk) or not uevent.is_file():
            continue
        fields = dict(line.split("=", 1) for line in uevent.read_text().splitlines() if "=" in line)
        name = fields.get("PARTNAME")
        if not name:
            continue
        start = int((part / "start").read_text()) * _SECTOR
        size = int((part / "size").read_text()) * _SECTOR
        found[name] = (f"/dev/{part.name}", start, size)
    return found


def _libc() -> ctypes.CDLL:
    lib = libc()
    if lib is None:
        raise StorageError("no C library to call mount(2) and umount2(2) through")
    return lib


def mount(node: Path | str, target: Path | str, *, fstype: str | None = None, readonly: bool = False,
          options: str = "") -> None:
    """Mount ``node`` at ``target`` (the ``mount`` tool where it exists, else mount(2) trying ext4, vfat, squashfs)."""
    if have("mount"):
        opts = ",".join(o for o in ("ro" if readonly else "", options) if o)
        run(["mount", *(["-t", fstype] if fstype else []), *(["-o", opts] if opts else []), str(node), str(target)])
        return
    lib = _libc()
    last = 0
    for kind in (fstype,) if fstype else _FSTYPES:
        if lib.mount(str(node).encode(), str(target).encode(), kind.encode(), 1 if readonly else 0,
                     options.encode() or None) == 0:
            return
        last = ctypes.get_errno()
        if last not in (errno.EINVAL, errno.ENODEV):
            break
    raise StorageError(f"mount {node} at {target}: {os.strerror(last)}", path=str(node))


def umount(target: Path | str, *, lazy: bool = False) -> None:
    if have("umount"):
        run(["umount", *(["-l"] if lazy else []), str(target)])
        return
    if _libc().umount2(str(target).encode(), _MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise StorageError(f"umount {target}: {os.strerror(err)}", path=str(target))
