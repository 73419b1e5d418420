"""What only the block disk does: a real GPT table, filesystems, loop devices and device nodes.

Runs as root where loop devices exist (a loop device over a sparse file); skipped with the reason elsewhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from boot import Slot
from errors import StorageError
from image import verify, verify_slot
from storage import BlockDisk, DiskLayout, Label, block_problem

MIB = 1 << 20
PROBLEM = block_problem()
pytestmark = [pytest.mark.root, pytest.mark.skipif(PROBLEM is not None, reason=f"block disks: {PROBLEM}")]
SMALL = DiskLayout(efi_mib=4, slot_mib=64, meta_mib=1, state_mib=16)


def loops_over(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(["losetup", "--list", "--json", "-O", "NAME,BACK-FILE,OFFSET"], capture_output=True,
                         text=True).stdout
    return [d for d in json.loads(out or "{}").get("loopdevices", []) if str(d.get("back-file", "")) == str(path)]


@pytest.fixture
def disk_file(tmp_path: Path) -> Iterator[Path]:
    f = tmp_path / "disk.img"
    with open(f, "wb") as fh:
        fh.truncate(300 * MIB)
    yield f
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text(), "a mount was left behind"
    leftover = loops_over(f)
    for dev in leftover:
        subprocess.run(["losetup", "-d", dev["name"]], check=False)
    assert not leftover, "a loop device was left attached"


def test_gpt_by_label_with_filesystems(disk_file: Path, tmp_path: Path):
    disk = BlockDisk(disk_file, run_dir=tmp_path / "run", layout=SMALL)
    try:
        disk.partition()
        disk.format()
        table = json.loads(subprocess.run(["sfdisk", "--json", str(disk.device)], capture_output=True,
                                          text=True, check=True).stdout)["partitiontable"]
        assert table["label"] == "gpt"
        names = [p["name"] for p in table["partitions"]]
        assert names == ["EFI", "BOOT-A", "BOOT-B", "META", "STATE", "EPHEMERAL"]
        sizes = {p["name"]: p["size"] * table.get("sectorsize", 512) for p in table["partitions"]}
        assert sizes["META"] == MIB and sizes["BOOT-A"] == sizes["BOOT-B"] == 64 * MIB
        if shutil.which("blkid"):
            for label in ("STATE", "EPHEMERAL"):
                node = disk._raw_path(Label(label))
                got = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(node)], capture_output=True,
                                     text=True).stdout.strip()
                assert got == label
        state, ephemeral = disk.path("STATE"), disk.path("EPHEMERAL")
        mounts = Path("/proc/self/mountinfo").read_text()
        assert f" {state} " in mounts and f" {ephemeral} " in mounts
    finally:
        disk.close()


@pytest.mark.parametrize("nodes", ["kernel", "mknod", "loop"])
def test_every_way_to_reach_a_partition(nodes: str, disk_file: Path, tmp_path: Path, signed: tuple[Path, bytes]):
    """Kernel nodes, nodes made from sysfs (containers without udev), or loops over byte ranges."""
    img, key = signed
    disk = BlockDisk(disk_file, run_dir=tmp_path / "run", layout=SMALL, partition_nodes=nodes)
    try:
        disk.partition()
        disk.format()
        node = disk.slot_path(Slot.A)
        if nodes == "mknod":
            assert node.parent == tmp_path / "run/dev"
        elif nodes == "loop":
            assert node.name.startswith("loop") and "p" not in node.name.removeprefix("loop")
        (disk.path("STATE") / "config.yaml").write_text("x")
        disk.write_image(Slot.A, verify(img, [key]))
        root = disk.mount_slot(Slot.A, verify_slot(disk, Slot.A, [key]))
        assert "VERSION_ID=1.0.0" in (root / "etc/os-release").read_text()
    finally:
        disk.close()


def test_second_opener_shares_loop_and_mounts(disk_file: Path, tmp_path: Path):
    """A supervisor and the agent it starts open the same disk: one loop device, one mount of STATE."""
    owner = BlockDisk(disk_file, run_dir=tmp_path / "run", layout=SMALL)
    try:
        owner.partition()
        owner.format()
        state = owner.path("STATE")
        (state / "key").write_text("k")
        guest = BlockDisk(disk_file, run_dir=tmp_path / "run2")
        assert guest.device == owner.device
        assert guest.path("STATE") == state and (guest.path("STATE") / "key").read_text() == "k"
        with pytest.raises(StorageError, match=r"STATE of .* is mounted at"):
            guest.format(["STATE"])
        with pytest.raises(StorageError, match=r"has mounted partitions \(STATE at .*\); refusing to repartition"):
            guest.partition()
        guest.close()
        assert len(loops_over(disk_file)) == 1 and (state / "key").exists()  # the guest took nothing down
    finally:
        owner.close()


def test_a_block_device_given_directly_stays_attached(disk_file: Path, tmp_path: Path):
    dev = subprocess.run(["losetup", "--find", "--show", str(disk_file)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        disk = BlockDisk(dev, run_dir=tmp_path / "run", layout=SMALL)
        disk.partition()
        disk.format()
        assert disk.device == Path(dev)
        disk.close()
        assert [d["name"] for d in loops_over(disk_file)] == [dev]
        again = BlockDisk(dev, run_dir=tmp_path / "run")
        assert again.is_partitioned()
        again.close()
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_not_a_disk(tmp_path: Path):
    with pytest.raises(StorageError, match="neither a block device nor a regular file"):
        _ = BlockDisk(tmp_path, run_dir=tmp_path / "run").device
    with pytest.raises(StorageError, match="No such file"):
        _ = BlockDisk(tmp_path / "missing.img", run_dir=tmp_path / "run").device
    with pytest.raises(StorageError, match="partition_nodes"):
        BlockDisk(tmp_path / "x", partition_nodes="magic")


def test_unpartitioned_disk(disk_file: Path, tmp_path: Path):
    disk = BlockDisk(disk_file, run_dir=tmp_path / "run")
    try:
        assert not disk.is_partitioned()
        with pytest.raises(StorageError, match="no partition named STATE"):
            disk.path("STATE")
        with pytest.raises(StorageError, match="not partitioned"):
            disk.format()
    finally:
        disk.close()


def test_default_layout_fits_the_disk():
    small = DiskLayout.for_size(300 * MIB)
    assert small.slot_mib >= 48 and small.efi_mib + 2 * small.slot_mib + 1 + small.state_mib + 160 <= 300  # the OS
    # image with etcd (~47 MiB) fits a slot, and EPHEMERAL holds one spooled plus the log's 64 MiB reserve
    assert DiskLayout.for_size(64 << 30) == DiskLayout()
    with pytest.raises(StorageError, match="too small"):
        DiskLayout.for_size(64 * MIB)
    assert "name=EPHEMERAL" in small.sfdisk_script().splitlines()[-1]


def test_names_of_the_disk(disk_file: Path, tmp_path: Path):
    """``machine.install.disk`` may name the image file, a link to it, or the loop device over it."""
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "disk0").symlink_to(disk_file)
    other = tmp_path / "other.img"
    other.write_bytes(b"")
    disk = BlockDisk(disk_file, run_dir=tmp_path / "run", layout=SMALL)
    try:
        assert disk.is_named(str(disk_file)) and disk.is_named(str(tmp_path / "by-id" / "disk0"))
        assert not disk.is_named(str(other)) and not disk.is_named("/dev/nonexistent")
        dev = str(disk.device)  # attaches the loop device
        assert disk.is_named(dev)
        unrelated = subprocess.run(["losetup", "--find", "--show", str(other)], capture_output=True, text=True,
                                   check=True).stdout.strip()
        try:
            assert not disk.is_named(unrelated)
        finally:
            subprocess.run(["losetup", "-d", unrelated], check=False)
    finally:
        disk.close()
