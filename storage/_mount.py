"""Making a slot's squashfs root available read-only, three ways.

``kernel``: ``mount -t squashfs -o ro`` (a loop mount for a file), as root. ``fuse``: ``squashfuse``, where
it and ``/dev/fuse`` exist (and ``fusermount``, when not root). ``unpack``: the verified payload is copied
out of the slot while hashing, ``unsquashfs`` unpacks it into a directory named by the payload digest under
the disk's cache, and the tree is made read-only; a later boot of the same digest reuses it.
The default is the first that works here, in that order.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import shutil
import stat
from pathlib import Path

from boot import Slot
from errors import BadImage, StorageError

from ._slot import InstallableImage
from ._sys import have, is_root, os_errors, run

__all__ = ["MountStrategy", "SlotMounts", "available_strategies", "strategy_problem"]


class MountStrategy(enum.StrEnum):
    KERNEL = "kernel"
    FUSE = "fuse"
    UNPACK = "unpack"


def _kernel_has_squashfs() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            return any(line.split()[-1] == "squashfs" for line in f if line.strip())
    except OSError:
        return False


def strategy_problem(strategy: MountStrategy) -> str | None:
    """Why ``strategy`` cannot work on this machine, or None when it can."""
    if strategy is MountStrategy.KERNEL:
        if not is_root():
            return "kernel squashfs mounts need root"
        if not _kernel_has_squashfs():
            return "the kernel has no squashfs support"
        if not have("mount"):
            return "mount is not installed"
        return None
    if strategy is MountStrategy.FUSE:
        if not have("squashfuse"):
            return "squashfuse is not installed"
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse does not exist"
        if not is_root() and not (have("fusermount") or have("fusermount3")):
            return "fusermount is needed to mount FUSE as a normal user"
        return None
    if not have("unsquashfs"):
        return "unsquashfs is not installed"
    return None


def available_strategies() -> tuple[MountStrategy, ...]:
    return tuple(s for s in MountStrategy if strategy_problem(s) is None)


class SlotMounts:
    """The read-only roots of a disk's slots: mount points under ``mount_dir``, unpacked trees in ``cache_dir``."""

    def __init__(self, mount_dir: Path, cache_dir: Path, strategy: MountStrategy | None = None) -> None:
        self.mount_dir = mount_dir
        self.cache_dir = cache_dir
        self._strategy = strategy
        self._active: dict[Slot, tuple[MountStrategy, Path]] = {}

    @property
    def strategy(self) -> MountStrategy:
        if self._strategy is not None:
            problem = strategy_problem(self._strategy)
            if problem:
                raise StorageError(f"cannot mount slots with {self._strategy.value}: {problem}")
            return self._strategy
        available = available_strategies()
        if not available:
            reasons = "; ".join(f"{s.value}: {strategy_problem(s)}" for s in MountStrategy)
            raise StorageError(f"no way to mount a squashfs root on this machine ({reasons})")
        return available[0]

    def mountpoint(self, slot: Slot) -> Path:
        return self.mount_dir / slot.value

    def is_mounted(self, slot: Slot) -> bool:
        return os.path.ismount(self.mountpoint(slot))

    def mount(self, slot: Slot, source: Path, image: InstallableImage) -> Path:
        strategy = self.strategy
        self.unmount(slot)
        if strategy is MountStrategy.UNPACK:
            root = self._unpack(slot, source, image)
            self._active[slot] = (strategy, root)
            return root
        target = self.mountpoint(slot)
        with os_errors(f"create mount point {target}"):
            target.mkdir(parents=True, exist_ok=True)
        is_block = _is_block(source)
        if strategy is MountStrategy.KERNEL:
            opts = "ro" if is_block else f"ro,loop,sizelimit={image.payload_size}"
            run(["mount", "-t", "squashfs", "-o", opts, str(source), str(target)])
        else:
            run(["squashfuse", str(source), str(target)])
        self._active[slot] = (strategy, target)
        return target

    def unmount(self, slot: Slot, *, lazy: bool = True) -> None:
        """Unmount the slot's root (also a stale mount a crashed process left at its mount point).

        A busy root (an agent still runs from it) is detached lazily, or, with ``lazy=False``, refused
        with ``StorageError``.
        """
        target = self.mountpoint(slot)
        if os.path.ismount(target):
            _umount(target, lazy=lazy)
        self._active.pop(slot, None)

    def unmount_all(self) -> None:
        for slot in Slot:
            self.unmount(slot)

    # -- unpack ---------------------------------------------------------------------------------------------

    def _unpack(self, slot: Slot, source: Path, image: InstallableImage) -> Path:
        digest = image.payload_sha256.hex()
        root = self.cache_dir / digest
        marker = self.cache_dir / f"{digest}.complete"
        if root.is_dir() and marker.is_file() and marker.read_text(encoding="ascii").strip() == digest:
            return root
        with os_errors(f"prepare unpack cache {self.cache_dir}"):
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for stale in (root, self.cache_dir / f".tmp-{digest}"):
                if stale.exists():
                    _make_writable(stale)
                    shutil.rmtree(stale)
            marker.unlink(missing_ok=True)
        tmp = self.cache_dir / f".tmp-{digest}"
        payload = tmp.with_suffix(".sqfs")
        with os_errors(f"copy the payload of slot {slot.value} out of {source}"):
            got = _copy_hashed(source, payload, image.payload_size)
        try:
            if got != image.payload_sha256:
                raise BadImage(
                    f"slot {slot.value} payload digest {got.hex()[:16]} does not match the verified "
                    f"{digest[:16]}; refusing to unpack it",
                    slot=slot.value,
                )
            run(["unsquashfs", "-n", "-q", "-no-xattrs", "-d", str(tmp), str(payload)])
        finally:
            payload.unlink(missing_ok=True)
        with os_errors(f"seal unpacked root {root}"):
            _make_read_only(tmp)
            tmp.rename(root)
            marker.write_text(digest + "\n", encoding="ascii")
        return root


def _is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


def _umount(target: Path, *, lazy: bool) -> None:
    fuse_tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if not is_root() and fuse_tool:
        run([fuse_tool, "-u", *(["-z"] if lazy else []), str(target)])
        return
    try:
        run(["umount", str(target)])
    except StorageError:
        if not lazy:
            raise
        run(["umount", "-l", str(target)])  # busy (a process still runs from it): detach now, free later


def _copy_hashed(source: Path, dest: Path, length: int) -> bytes:
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    done = 0
    with open(source, "rb", buffering=0) as src, open(dest, "wb") as out:
        while done < length:
            n = src.readinto(view[: min(len(buf), length - done)])
            if not n:
                break
            digest.update(view[:n])
            out.write(view[:n])
            done += n
    return digest.digest()


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) & ~0o222)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) & ~0o222)
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) & ~0o222)


def _make_writable(root: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(root, 0o755)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o755)
