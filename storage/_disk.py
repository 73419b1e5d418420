"""What both disk backends share: slots, the slot roots, META and the public method names.

A backend provides ``is_partitioned``, ``partition``, ``format``, ``wipe``, ``path`` and, privately,
``_raw_path`` and ``_slot_in_use``; everything else is here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from boot import BootEnv, Slot
from errors import BadImage, StorageError

from ._meta import MetaStore
from ._mount import MountStrategy, SlotMounts
from ._slot import InstallableImage, Label, SlotInfo, slot_label
from ._slotio import Progress, SlotArea, require_installable

__all__ = ["ALL_LABELS", "FS_LABELS", "DiskBase", "parse_labels"]

ALL_LABELS: tuple[Label, ...] = tuple(Label)
FS_LABELS: tuple[Label, ...] = (Label.EFI, Label.STATE, Label.EPHEMERAL)


def parse_labels(labels: Iterable[Label | str] | None) -> tuple[Label, ...]:
    if labels is None:
        return ALL_LABELS
    parsed: list[Label] = []
    for item in labels:
        try:
            label = Label.parse(item)
        except ValueError as exc:
            raise StorageError(str(exc)) from exc
        if label not in parsed:
            parsed.append(label)
    return tuple(parsed)


class DiskBase(abc.ABC):
    """One machine disk: partitions by label, two image slots, META."""

    kind: ClassVar[str]
    # What a caller may ask of a disk instead of its kind: its partitions hold filesystems that install makes (a
    # block disk; the sandbox's are folders), and it is a device that machine.install.disk must name.
    makes_filesystems: ClassVar[bool]
    named_device: ClassVar[bool]

    def __init__(self, *, run_dir: Path, cache_dir: Path, mount_strategy: MountStrategy | str | None) -> None:
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        strategy = MountStrategy(mount_strategy) if mount_strategy is not None else None
        self._mounts = SlotMounts(run_dir / "slots", cache_dir / "rootfs", strategy)
        # An image booted from a file, not a slot (an installer, as from a Talos ISO): RUN/installer/A.
        self._image_mounts = SlotMounts(run_dir / "installer", cache_dir / "rootfs", strategy)

    # -- backend-specific ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def is_partitioned(self) -> bool:
        """True when the disk carries Graven's partition table (every label present)."""

    @abc.abstractmethod
    def partition(self) -> None:
        """Write a fresh partition table with every label; whatever the disk held is gone."""

    @abc.abstractmethod
    def format(self, labels: Iterable[Label | str] | None = None) -> None:
        """Make empty filesystems (EFI, STATE, EPHEMERAL), a blank META and empty slots (default: all)."""

    @abc.abstractmethod
    def path(self, label: Label | str) -> Path:
        """A directory for EFI/STATE/EPHEMERAL (mounted if need be); the raw file or device otherwise."""

    def is_named(self, name: str) -> bool:
        """Whether ``name`` (a device, a link to one such as ``/dev/disk/by-id/...``, or a disk image file) is
        this disk. A sandbox has no device, so no name is it."""
        return False

    def wipe(self, labels: Iterable[Label | str]) -> None:
        """Erase the named partitions (reset): filesystems come back empty, META blank, slots empty."""
        self.format(parse_labels(labels))

    @abc.abstractmethod
    def _raw_path(self, label: Label) -> Path: ...

    def _slot_in_use(self, slot: Slot) -> str | None:
        """Why the slot may not be written now (something outside this object uses it), or None."""
        return None

    # -- shared ---------------------------------------------------------------------------------------------

    @property
    def mount_strategy(self) -> MountStrategy:
        return self._mounts.strategy

    def slot_path(self, slot: Slot | str) -> Path:
        return self._raw_path(slot_label(Slot.parse(slot)))

    def _area(self, slot: Slot) -> SlotArea:
        return SlotArea(self._raw_path(slot_label(slot)), slot_label(slot))

    def slot_info(self, slot: Slot | str) -> SlotInfo | None:
        """What the slot holds per its record; None for an empty or damaged record."""
        return self._area(Slot.parse(slot)).read_info()

    def slot_capacity(self, slot: Slot | str) -> int:
        return self._area(Slot.parse(slot)).capacity

    def write_image(self, slot: Slot | str, image: InstallableImage, progress: Progress | None = None) -> SlotInfo:
        """Write a verified image raw into the slot, fsync, read it back, and record it as ``ok``."""
        image = require_installable(image)
        slot = Slot.parse(slot)
        if self._mounts.is_mounted(slot):
            try:
                self._mounts.unmount(slot, lazy=False)
            except StorageError as exc:
                raise StorageError(
                    f"slot {slot.value} is mounted and in use; refusing to overwrite it", slot=slot.value
                ) from exc
        busy = self._slot_in_use(slot)
        if busy:
            raise StorageError(f"slot {slot.value} is in use ({busy}); refusing to overwrite it", slot=slot.value)
        return self._area(slot).write_image(image, progress)

    def clear_slot(self, slot: Slot | str) -> None:
        slot = Slot.parse(slot)
        self._mounts.unmount(slot)
        self._area(slot).clear()

    def mount_slot(self, slot: Slot | str, image: InstallableImage) -> Path:
        """The slot's root, read-only. ``image`` is the slot's verified image (``image.verify_slot``)."""
        image = require_installable(image)
        slot = Slot.parse(slot)
        info = self.slot_info(slot)
        if info is None or not info.ok:
            state = "no image" if info is None else f"a {info.state.value} write"
            raise BadImage(f"slot {slot.value} holds {state}; nothing to mount", slot=slot.value)
        if info.payload_sha256 != image.payload_sha256 or info.image_size != image.image_size:
            raise BadImage(
                f"slot {slot.value} holds image {info.version} ({info.payload_sha256.hex()[:16]}), not the "
                f"verified {image.version} ({image.payload_sha256.hex()[:16]})",
                slot=slot.value,
            )
        return self._mounts.mount(slot, self.slot_path(slot), image)

    def unmount_slot(self, slot: Slot | str) -> None:
        self._mounts.unmount(Slot.parse(slot))

    def mount_image(self, image: InstallableImage) -> Path:
        """The root of a verified image *file* (not in a slot: an installer), read-only, by the slot strategy."""
        image = require_installable(image)
        return self._image_mounts.mount(Slot.A, image.path, image)

    def unmount_image(self) -> None:
        self._image_mounts.unmount_all()

    def unmount_all(self) -> None:
        """Unmount every slot root this disk mounted (and stale ones at its mount points), and the image root."""
        self._mounts.unmount_all()
        self._image_mounts.unmount_all()

    def release(self) -> None:
        """Let another process use the disk for a while (the agent, started by the supervisor): unmount the
        filesystems this object mounted and forget what it read of the partition table, which the other
        process may rewrite. Slot roots stay mounted. The sandbox holds nothing to release."""
        return None

    @property
    def meta(self) -> MetaStore:
        return MetaStore(self._raw_path(Label.META))

    def read_boot_env(self) -> BootEnv | None:
        return self.meta.read()

    def write_boot_env(self, env: BootEnv) -> BootEnv:
        return self.meta.write(env)

    def describe(self) -> dict[str, object]:
        slots: dict[str, object] = {}
        if self.is_partitioned():
            for s in Slot:
                info = self.slot_info(s)
                slots[s.value] = info.to_dict() if info else None
        return {"kind": self.kind, "partitioned": self.is_partitioned(), "slots": slots}

    def close(self) -> None:
        self.unmount_all()

    def __enter__(self) -> DiskBase:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
