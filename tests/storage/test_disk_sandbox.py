"""What only the sandbox disk does: its file layout, and each way of making a slot's root available."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from boot import Slot
from errors import BadImage, StorageError
from image import verify, verify_slot
from storage import META_SIZE, Label, MountStrategy, SandboxDisk
from storage._mount import strategy_problem

MIB = 1 << 20


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxDisk]:
    disk = SandboxDisk(tmp_path / "m", slot_size=16 * MIB)
    disk.partition()
    disk.format()
    yield disk
    disk.close()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_layout_is_files_and_folders(sandbox: SandboxDisk):
    d = sandbox.disk_dir
    table = json.loads((d / "partitions.json").read_text())
    assert [p["name"] for p in table["partitions"]] == ["EFI", "BOOT-A", "BOOT-B", "META", "STATE", "EPHEMERAL"]
    for name in ("EFI", "STATE", "EPHEMERAL"):
        assert (d / name).is_dir()
    assert (d / "META").stat().st_size == META_SIZE
    for name in ("BOOT-A", "BOOT-B"):
        st = (d / name).stat()
        assert st.st_size == 16 * MIB and st.st_blocks * 512 < MIB  # sparse: nothing allocated
    assert sandbox.path(Label.STATE) == d / "STATE"


def test_a_damaged_table_is_not_partitioned(sandbox: SandboxDisk):
    (sandbox.disk_dir / "partitions.json").write_text("{")
    assert not sandbox.is_partitioned()
    with pytest.raises(StorageError, match="not partitioned"):
        sandbox.path("STATE")


@pytest.mark.parametrize("strategy", list(MountStrategy))
def test_each_mount_strategy(strategy: MountStrategy, tmp_path: Path, signed: tuple[Path, bytes]):
    problem = strategy_problem(strategy)
    if problem:
        pytest.skip(f"{strategy.value} mounts unavailable here: {problem}")
    img, key = signed
    disk = SandboxDisk(tmp_path / "m", slot_size=16 * MIB, mount_strategy=strategy)
    try:
        disk.partition()
        disk.format()
        disk.write_image(Slot.A, verify(img, [key]))
        root = disk.mount_slot(Slot.A, verify_slot(disk, Slot.A, [key]))
        assert "VERSION_ID=1.0.0" in (root / "etc/os-release").read_text()
        assert disk.mount_strategy is strategy
        if strategy is MountStrategy.UNPACK:
            assert root.name == verify(img, [key]).digest and not os.path.ismount(root)
        else:
            assert os.path.ismount(root)
    finally:
        disk.close()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_unavailable_strategy_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              signed: tuple[Path, bytes]):
    img, key = signed
    disk = SandboxDisk(tmp_path / "m", slot_size=16 * MIB, mount_strategy="fuse")
    disk.partition()
    disk.format()
    disk.write_image(Slot.A, verify(img, [key]))
    v = verify_slot(disk, Slot.A, [key])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StorageError, match="cannot mount slots with fuse: squashfuse is not installed"):
        disk.mount_slot(Slot.A, v)


def test_unpack_cache_is_read_only_verified_and_reused(tmp_path: Path, signed: tuple[Path, bytes]):
    img, key = signed
    disk = SandboxDisk(tmp_path / "m", slot_size=16 * MIB, mount_strategy="unpack")
    disk.partition()
    disk.format()
    disk.write_image(Slot.A, verify(img, [key]))
    v = verify_slot(disk, Slot.A, [key])
    root = disk.mount_slot(Slot.A, v)
    assert root == tmp_path / "m/cache/rootfs" / v.digest
    for p in [root, root / "etc", root / "etc/os-release"]:
        assert not stat.S_IMODE(p.stat().st_mode) & 0o222, p
    marker = root.with_name(v.digest + ".complete")
    inode = (root / "etc/os-release").stat().st_ino
    assert disk.mount_slot(Slot.A, v) == root and (root / "etc/os-release").stat().st_ino == inode  # reused
    marker.unlink()  # an unpack that never finished: done again
    assert disk.mount_slot(Slot.A, v) == root and marker.is_file()
    # the slot's bytes change after verification: the unpack re-hashes them and refuses
    marker.unlink()
    with open(disk.slot_path(Slot.A), "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\xff")
    with pytest.raises(BadImage, match="does not match the verified"):
        disk.mount_slot(Slot.A, v)


@pytest.mark.skipif(strategy_problem(MountStrategy.KERNEL) is not None, reason="kernel squashfs mounts need root")
def test_a_stale_mount_from_a_crashed_process_is_replaced(tmp_path: Path, signed: tuple[Path, bytes]):
    img, key = signed
    first = SandboxDisk(tmp_path / "m", slot_size=16 * MIB, mount_strategy="kernel")
    first.partition()
    first.format()
    first.write_image(Slot.A, verify(img, [key]))
    root = first.mount_slot(Slot.A, verify_slot(first, Slot.A, [key]))
    del first  # "crashes": never unmounts
    second = SandboxDisk(tmp_path / "m", mount_strategy="kernel")
    try:
        assert second.mount_slot(Slot.A, verify_slot(second, Slot.A, [key])) == root
        mounts = Path("/proc/self/mountinfo").read_text()
        assert mounts.count(f" {root} ") == 1
        with open(root / "etc/os-release", "rb"):  # busy: unmount detaches lazily, never hangs or fails
            second.unmount_slot(Slot.A)
        assert not os.path.ismount(root)
    finally:
        second.close()


def test_partition_again_starts_over(sandbox: SandboxDisk, signed: tuple[Path, bytes]):
    img, key = signed
    sandbox.write_image(Slot.B, verify(img, [key]))
    (sandbox.path("STATE") / "x").write_text("x")
    sandbox.partition()
    assert sandbox.slot_info(Slot.B) is None and not any(sandbox.path("STATE").iterdir())
