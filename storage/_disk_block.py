"""The block disk: a real GPT disk, or a loop device over a file, partitioned with sfdisk.

Partitions are found by their GPT name (``sfdisk --json``), never by ``/dev/disk/by-partlabel``, which a
container without udev lacks. A partition's device node is the kernel's when it exists; else one made
with ``mknod`` under the run directory from ``/sys/class/block`` (after ``partx --add``); else a loop
device over the partition's byte range. EFI, STATE and EPHEMERAL are mounted under ``RUN/mnt/<label>``
when first asked for; a partition another process already mounted is used where it is mounted.

Everything this object attaches, makes or mounts, ``close()`` undoes; what it found already there, it
leaves alone. That lets a supervisor and the agent it starts open the same disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from boot import Slot
from errors import StorageError

from ._disk import ALL_LABELS, FS_LABELS, DiskBase, parse_labels
from ._guest import mount, sysfs_partitions, umount
from ._meta import META_SIZE, MetaStore
from ._mount import MountStrategy
from ._slot import Label, slot_label
from ._slotio import SlotArea, area_size
from ._sys import have, is_root, os_errors, run

__all__ = ["BlockDisk", "DiskLayout", "block_problem"]

MIN_EPHEMERAL_MIB = 160
_MIB = 1 << 20
_NODE_METHODS = ("auto", "kernel", "mknod", "loop")
_LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_EFI_SYSTEM = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


@dataclass(frozen=True)
class DiskLayout:
    """Partition sizes in MiB; EPHEMERAL takes the rest of the disk."""

    efi_mib: int = 100
    slot_mib: int = 1024
    meta_mib: int = 1
    state_mib: int = 100
    min_ephemeral_mib: int = 32

    @classmethod
    def for_size(cls, size: int) -> DiskLayout:
        """The default for a disk of ``size`` bytes: generous on big disks, compact on small ones."""
        mib = size // _MIB
        if mib >= 6 * 1024:
            return cls()
        # EPHEMERAL keeps at least 160 MiB: an upgrade spools a whole OS image (~47 MiB with etcd) there and must
        # still leave the log its reserve (config.limits upload_free_bytes, 64 MiB), past ext4's own ~13%
        slot = min(1024, (mib - 2 - 4 - 1 - 16 - MIN_EPHEMERAL_MIB) // 2)
        if slot < 16:
            least = 2 + 4 + 1 + 16 + MIN_EPHEMERAL_MIB + 2 * 16
            raise StorageError(f"a disk of {mib} MiB is too small for Graven (at least {least} MiB)")
        return cls(efi_mib=4, slot_mib=slot, meta_mib=1, state_mib=16)

    def sizes(self) -> dict[Label, int | None]:
        return {
            Label.EFI: self.efi_mib,
            Label.BOOT_A: self.slot_mib,
            Label.BOOT_B: self.slot_mib,
            Label.META: self.meta_mib,
            Label.STATE: self.state_mib,
            Label.EPHEMERAL: None,
        }

    def sfdisk_script(self) -> str:
        lines = ["label: gpt"]
        for label, size in self.sizes().items():
            kind = _EFI_SYSTEM if label is Label.EFI else _LINUX_FS
            lines.append(", ".join([*([f"size={size}MiB"] if size else []), f"type={kind}", f"name={label.value}"]))
        return "\n".join(lines) + "\n"


def block_problem() -> str | None:
    """Why block disks cannot be used here (for a clear test skip), or None when they can."""
    if not is_root():
        return "block disks need root (mount, losetup, sfdisk)"
    for tool in ("losetup", "sfdisk", "mkfs.ext4", "mount", "umount", "partx"):
        if not have(tool):
            return f"{tool} is not installed"
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        return "no loop devices (/dev/loop-control is missing)"
    try:
        run(["losetup", "--find"])
    except StorageError as exc:
        return f"no free loop device: {exc.message}"
    return None


@dataclass(frozen=True)
class _Part:
    name: str
    node: str
    start: int  # bytes
    size: int  # bytes


class BlockDisk(DiskBase):
    """A GPT disk. ``partition_nodes`` picks how partitions get device nodes: ``auto`` (the kernel's, else
    ``mknod`` from sysfs, else a ``loop`` over the byte range) or one of those three alone (for tests)."""

    kind = "block"
    makes_filesystems = True
    named_device = True

    def __init__(
        self,
        device: Path | str,
        *,
        run_dir: Path | str | None = None,
        layout: DiskLayout | None = None,
        mount_strategy: MountStrategy | str | None = None,
        partition_nodes: str = "auto",
    ) -> None:
        if partition_nodes not in _NODE_METHODS:
            raise StorageError(f"partition_nodes must be one of {', '.join(_NODE_METHODS)}, not {partition_nodes!r}")
        self.partition_nodes = partition_nodes
        self.source = Path(device).absolute()
        tag = hashlib.sha256(str(self.source).encode()).hexdigest()[:12]
        run = Path(run_dir) if run_dir is not None else Path("/run/graven") / f"disk-{tag}"
        super().__init__(run_dir=run, cache_dir=run / "cache", mount_strategy=mount_strategy)
        self._layout = layout
        self._device: Path | None = None
        self._owned_loops: list[str] = []  # attached by us, detached on close (partition loops first)
        self._owned_mounts: list[Path] = []
        self._parts: dict[str, _Part] | None = None
        self._nodes: dict[Label, Path] = {}
        self._lock = threading.RLock()  # tasks of one phase ask for paths from several threads at once

    def __repr__(self) -> str:
        return f"BlockDisk({str(self.source)!r})"

    # -- the device ----------------------------------------------------------------------------------------

    @property
    def device(self) -> Path:
        """The whole-disk block device (a loop device when the disk is a file)."""
        if self._device is None:
            self._device = self._open_device()
        return self._device

    def is_named(self, name: str) -> bool:
        try:
            named = os.stat(name)
        except OSError:
            return False
        mine = [self.source] + ([self._device] if self._device is not None else [])
        for path in mine:
            with contextlib.suppress(OSError):
                st = path.stat()
                if stat.S_ISBLK(named.st_mode) and stat.S_ISBLK(st.st_mode):
                    if named.st_rdev == st.st_rdev:
                        return True
                elif (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino):
                    return True
        return False

    def _open_device(self) -> Path:
        if not is_root():
            raise StorageError(f"block disk {self.source}: needs root", path=str(self.source))
        with os_errors(f"open block disk {self.source}"):
            mode = self.source.stat().st_mode
        if stat.S_ISBLK(mode):
            return self.source
        if not stat.S_ISREG(mode):
            raise StorageError(f"{self.source} is neither a block device nor a regular file", path=str(self.source))
        existing = self._find_loop(str(self.source.resolve()), 0)
        if existing:
            return Path(existing)
        dev = run(["losetup", "--find", "--show", "--partscan", str(self.source)]).strip()
        self._owned_loops.append(dev)
        return Path(dev)

    @staticmethod
    def _find_loop(back_file: str, offset: int, sizelimit: int = 0) -> str | None:
        out = run(["losetup", "--list", "--json", "-O", "NAME,BACK-FILE,OFFSET,SIZELIMIT"]) or "{}"
        for dev in json.loads(out).get("loopdevices", []):
            back = str(dev.get("back-file") or "").removesuffix(" (deleted)")
            where = (int(dev.get("offset") or 0), int(dev.get("sizelimit") or 0))
            if back == back_file and where == (offset, sizelimit):
                return str(dev["name"])
        return None

    # -- partitions ----------------------------------------------------------------------------------------

    def _partitions(self) -> dict[str, _Part]:
        if self._parts is None:
            if not have("sfdisk"):  # inside a machine: the kernel's view of the table
                self._parts = {n: _Part(n, *p) for n, p in sysfs_partitions(self.device).items()}
                return self._parts
            try:
                out = run(["sfdisk", "--json", str(self.device)])
            except StorageError as exc:
                if "does not contain a recognized partition table" in exc.message:
                    return {}
                raise
            table = json.loads(out)["partitiontable"]
            sector = int(table.get("sectorsize", 512))
            parts = {}
            if table.get("label") == "gpt":
                for p in table.get("partitions", []):
                    if p.get("name"):
                        start, size = int(p["start"]) * sector, int(p["size"]) * sector
                        parts[p["name"]] = _Part(p["name"], p["node"], start, size)
            self._parts = parts
        return self._parts

    def is_partitioned(self) -> bool:
        parts = self._partitions()
        meta = parts.get(Label.META.value)
        return all(label.value in parts for label in ALL_LABELS) and meta is not None and meta.size >= META_SIZE

    def partition(self) -> None:
        self.unmount_all()
        self._release_mounts()
        busy = self._busy_partitions()
        if busy:
            raise StorageError(f"{self.source} has mounted partitions ({', '.join(busy)}); refusing to repartition")
        self._forget_partitions()
        layout = self._layout or DiskLayout.for_size(area_size(self.device))
        run(["sfdisk", "--quiet", "--wipe", "always", str(self.device)], input=layout.sfdisk_script().encode())
        self._parts = None
        self._sync_kernel_table()
        if not self.is_partitioned():
            raise StorageError(f"sfdisk wrote a table on {self.device} but not every label reads back")
        MetaStore(self._raw_path(Label.META)).clear()
        for slot in Slot:
            SlotArea(self._raw_path(slot_label(slot)), slot_label(slot)).clear()

    def _busy_partitions(self) -> list[str]:
        """``LABEL at /mount/point`` for every partition of this disk mounted anywhere in this namespace."""
        busy = []
        for name, part in self._partitions().items():
            ids = set()
            with contextlib.suppress(OSError, ValueError):
                ids.add((Path("/sys/class/block") / Path(part.node).name / "dev").read_text().strip())
            with contextlib.suppress(ValueError, OSError):
                node = self._nodes.get(Label(name))
                if node is not None:
                    rdev = node.stat().st_rdev
                    ids.add(f"{os.major(rdev)}:{os.minor(rdev)}")
            for dev_id in ids:
                where = _mount_of(dev_id)
                if where:
                    busy.append(f"{name} at {where}")
                    break
        return busy

    def _release_mounts(self) -> None:
        """Unmount the filesystems this object mounted."""
        for target in list(reversed(self._owned_mounts)):
            if os.path.ismount(target):
                umount(target)
            self._owned_mounts.remove(target)

    def _sync_kernel_table(self) -> None:
        for args in (["partx", "--update"], ["partx", "--add"]):
            with contextlib.suppress(StorageError):
                run([*args, str(self.device)])

    def _forget_partitions(self) -> None:
        """Drop partition nodes and partition loops; the table is about to change."""
        for dev in list(reversed(self._owned_loops[1:] if self._owned_is_disk() else self._owned_loops)):
            with contextlib.suppress(StorageError):
                run(["losetup", "--detach", dev])
            self._owned_loops.remove(dev)
        node_dir = self.run_dir / "dev"
        for node in node_dir.glob("*") if node_dir.is_dir() else ():
            node.unlink(missing_ok=True)
        self._nodes.clear()
        self._parts = None

    def _owned_is_disk(self) -> bool:
        return bool(self._owned_loops) and self._device is not None and self._owned_loops[0] == str(self._device)

    def _node(self, label: Label) -> Path:
        """A block device node for the partition named ``label``."""
        if label in self._nodes:
            return self._nodes[label]
        part = self._partitions().get(label.value)
        if part is None:
            raise StorageError(f"{self.source} has no partition named {label.value} (not partitioned?)")
        how = self.partition_nodes
        node = (
            (self._kernel_node(part) if how in ("auto", "kernel") else None)
            or (self._made_node(part) if how in ("auto", "mknod") else None)
            or (self._loop_node(part) if how in ("auto", "loop") else None)
        )
        if node is None:
            raise StorageError(f"no device node for partition {label.value} of {self.source} by {how}")
        self._nodes[label] = node
        return node

    @staticmethod
    def _kernel_node(part: _Part) -> Path | None:
        p = Path(part.node)
        with contextlib.suppress(OSError):
            if stat.S_ISBLK(p.stat().st_mode):
                return p
        return None

    def _made_node(self, part: _Part) -> Path | None:
        name = Path(part.node).name
        sys_dir = Path("/sys/class/block") / name
        if not (sys_dir / "dev").exists():
            self._sync_kernel_table()
        try:
            major, minor = (int(x) for x in (sys_dir / "dev").read_text().strip().split(":"))
            start = int((sys_dir / "start").read_text()) * 512
            size = int((sys_dir / "size").read_text()) * 512
        except (OSError, ValueError):
            return None
        if (start, size) != (part.start, part.size):
            return None  # the kernel's view is stale
        node = self.run_dir / "dev" / name
        rdev = os.makedev(major, minor)
        try:
            node.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if node.stat().st_rdev != rdev:
                    node.unlink()
            if not node.exists():
                os.mknod(node, 0o600 | stat.S_IFBLK, rdev)
            fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
            os.close(fd)
        except OSError:
            return None
        return node

    def _loop_node(self, part: _Part) -> Path:
        existing = self._find_loop(str(self.device), part.start, part.size)
        if existing:
            return Path(existing)
        dev = run(["losetup", "--find", "--show", "--offset", str(part.start), "--sizelimit", str(part.size),
                   str(self.device)]).strip()
        self._owned_loops.append(dev)
        return Path(dev)

    # -- mounts --------------------------------------------------------------------------------------------

    @staticmethod
    def _mounted_at(node: Path) -> str | None:
        """Where the partition at ``node`` is mounted (its root), in this mount namespace."""
        try:
            rdev = node.stat().st_rdev
        except OSError:
            return None
        return _mount_of(f"{os.major(rdev)}:{os.minor(rdev)}")

    def path(self, label: Label | str) -> Path:
        try:
            parsed = Label.parse(label)
        except ValueError as exc:
            raise StorageError(str(exc)) from exc
        with self._lock:
            return self._path(parsed)

    def _path(self, parsed: Label) -> Path:
        node = self._node(parsed)
        if parsed.is_raw:
            return node
        where = self._mounted_at(node)
        if where:
            return Path(where)
        target = self.run_dir / "mnt" / parsed.value
        with os_errors(f"create mount point {target}"):
            target.mkdir(parents=True, exist_ok=True)
        try:
            mount(node, target)
        except StorageError as exc:
            raise StorageError(f"cannot mount {parsed.value} of {self.source} (formatted?): {exc.message}",
                               label=parsed.value) from exc
        self._owned_mounts.append(target)
        return target

    def _raw_path(self, label: Label) -> Path:
        with self._lock:
            return self._node(label)

    def _slot_in_use(self, slot: Slot) -> str | None:
        where = self._mounted_at(self._node(slot_label(slot)))
        return f"mounted at {where}" if where else None

    def _unmount_label(self, label: Label) -> None:
        node = self._node(label)
        target = self.run_dir / "mnt" / label.value
        if target in self._owned_mounts or self._mounted_at(node) == str(target):
            umount(target)
            with contextlib.suppress(ValueError):
                self._owned_mounts.remove(target)
        where = self._mounted_at(node)
        if where:
            raise StorageError(f"{label.value} of {self.source} is mounted at {where}; refusing to format it")

    def format(self, labels: Iterable[Label | str] | None = None) -> None:
        if not self.is_partitioned():
            raise StorageError(f"block disk {self.source} is not partitioned")
        for label in parse_labels(labels):
            node = self._node(label)
            if label in FS_LABELS:
                self._unmount_label(label)
                if label is Label.EFI and have("mkfs.vfat"):
                    run(["mkfs.vfat", "-n", label.value, str(node)])
                else:
                    run(["mkfs.ext4", "-F", "-q", "-L", label.value, str(node)])
            elif label is Label.META:
                MetaStore(node).clear()
            else:
                slot = Slot.parse(label.value)
                self.unmount_slot(slot)
                SlotArea(node, label).clear()

    def release(self) -> None:
        self._release_mounts()
        self._parts = None
        self._nodes.clear()

    def describe(self) -> dict[str, object]:
        data = super().describe()
        data.update(source=str(self.source), device=str(self.device),
                    partitions={n: {"start": p.start, "size": p.size} for n, p in self._partitions().items()})
        return data

    def close(self) -> None:
        """Unmount what this object mounted and detach the loop devices it attached."""
        errors: list[str] = []
        try:
            self.unmount_all()
        except StorageError as exc:
            errors.append(exc.message)
        for target in reversed(self._owned_mounts):
            try:
                umount(target)
            except StorageError:
                try:
                    umount(target, lazy=True)
                except StorageError as exc:
                    errors.append(exc.message)
        self._owned_mounts.clear()
        disk_loop = self._owned_loops[0] if self._owned_is_disk() else None
        self._forget_partitions()
        if disk_loop:
            try:
                run(["losetup", "--detach", disk_loop])
            except StorageError as exc:
                errors.append(exc.message)
            self._owned_loops.clear()
            self._device = None
        if errors:
            raise StorageError(f"closing {self.source}: " + "; ".join(errors))


def _mount_of(dev_id: str) -> str | None:
    """The mount point of the filesystem on device ``major:minor`` (mounted at its root), if any."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == dev_id and fields[3] == "/":
            return _unescape(fields[4])
    return None


def _unescape(path: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    return path.encode().decode("unicode_escape") if "\\" in path else path
