"""The sandbox disk: partitions are files and folders under ``ROOT/disk/``; no root needed.

``ROOT/disk/partitions.json`` plays the partition table. ``BOOT-A`` and ``BOOT-B`` are sparse files of
``slot_size`` bytes and ``META`` a 1 MiB file, written raw exactly as on a block disk; ``EFI``, ``STATE``
and ``EPHEMERAL`` are folders. Slot roots are mounted at ``ROOT/run/slots/<slot>`` or unpacked under
``ROOT/cache/rootfs/<payload sha256>``. A second process opening the same disk (the agent, while the
supervisor holds the slot roots) passes its own ``run_dir`` so that it never touches the other's mounts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from errors import StorageError

from ._disk import ALL_LABELS, DiskBase, parse_labels
from ._meta import META_SIZE
from ._mount import MountStrategy
from ._slot import Label
from ._sys import fsync_dir, os_errors

__all__ = ["DEFAULT_SANDBOX_SLOT_SIZE", "SandboxDisk"]

DEFAULT_SANDBOX_SLOT_SIZE = 1 << 30
_TABLE = "partitions.json"
_TABLE_VERSION = 1


class SandboxDisk(DiskBase):
    kind = "sandbox"
    makes_filesystems = False
    named_device = False

    def __init__(
        self,
        root: Path | str,
        *,
        slot_size: int = DEFAULT_SANDBOX_SLOT_SIZE,
        mount_strategy: MountStrategy | str | None = None,
        run_dir: Path | str | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.disk_dir = self.root / "disk"
        self.slot_size = slot_size
        run = Path(run_dir).absolute() if run_dir is not None else self.root / "run"
        super().__init__(run_dir=run, cache_dir=self.root / "cache", mount_strategy=mount_strategy)

    def __repr__(self) -> str:
        return f"SandboxDisk({str(self.root)!r})"

    def _table(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.disk_dir / _TABLE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_partitioned(self) -> bool:
        table = self._table()
        if table is None or table.get("version") != _TABLE_VERSION:
            return False
        parts = table.get("partitions")
        names = {p.get("name") for p in (parts if isinstance(parts, list) else []) if isinstance(p, dict)}
        return names >= {label.value for label in ALL_LABELS}

    def partition(self) -> None:
        self.unmount_all()
        table = {
            "version": _TABLE_VERSION,
            "table": "gpt",
            "partitions": [
                {"name": label.value, "type": "raw" if label.is_raw else "dir",
                 **({"size": self._raw_size(label)} if label.is_raw else {})}
                for label in ALL_LABELS
            ],
        }
        with os_errors(f"partition sandbox disk {self.disk_dir}"):
            if os.path.ismount(self.disk_dir):  # a container machine's disk, bound in: emptied in place
                for child in self.disk_dir.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif self.disk_dir.exists():
                shutil.rmtree(self.disk_dir)
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            for label in ALL_LABELS:
                p = self.disk_dir / label.value
                if label.is_raw:
                    with open(p, "wb") as f:
                        f.truncate(self._raw_size(label))
                        os.fsync(f.fileno())
                else:
                    p.mkdir()
            tmp = self.disk_dir / (_TABLE + ".tmp")
            tmp.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.disk_dir / _TABLE)
            fsync_dir(self.disk_dir)

    def _raw_size(self, label: Label) -> int:
        return META_SIZE if label is Label.META else self.slot_size

    def _require_partitioned(self) -> None:
        if not self.is_partitioned():
            raise StorageError(f"sandbox disk {self.disk_dir} is not partitioned", path=str(self.disk_dir))

    def format(self, labels: Iterable[Label | str] | None = None) -> None:
        self._require_partitioned()
        for label in parse_labels(labels):
            p = self.disk_dir / label.value
            if label in (Label.BOOT_A, Label.BOOT_B):
                self.unmount_slot(label.value)
            with os_errors(f"format {label.value} on {self.disk_dir}"):
                if label.is_raw:
                    # Zero the whole area without allocating it: truncate to nothing, then back to size.
                    size = self._raw_size(label)
                    with open(p, "r+b" if p.exists() else "wb") as f:
                        f.truncate(0)
                        f.truncate(size)
                        os.fsync(f.fileno())
                else:
                    if p.exists():
                        shutil.rmtree(p)
                    p.mkdir()
                    fsync_dir(self.disk_dir)

    def path(self, label: Label | str) -> Path:
        try:
            parsed = Label.parse(label)
        except ValueError as exc:
            raise StorageError(str(exc)) from exc
        self._require_partitioned()
        return self.disk_dir / parsed.value

    def _raw_path(self, label: Label) -> Path:
        return self.path(label)
