"""One suite, every Disk backend: partitions by label, META, slots, read-only slot roots, wipe.

The block backend runs where root and loop devices exist (a loop device over a sparse file) and is skipped
with the reason elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from boot import BootEnv, Slot, SlotBoot, arm
from errors import BadImage, DiskFull, InvariantViolation, StorageError
from image import VerifiedImage, build_image, install, plan_install, verify, verify_slot
from pki import public_raw
from storage import BlockDisk, DiskBase, DiskLayout, Label, MountStrategy, SandboxDisk, SlotState, block_problem

MIB = 1 << 20
CREATED = 1_700_000_000
BLOCK_PROBLEM = block_problem()

MakeDisk = Callable[..., DiskBase]


class Built(msgspec.Struct, frozen=True):
    dir: Path
    v1: Path
    v2: Path
    big: Path  # 2 MiB of incompressible overlay: does not fit a 1 MiB slot
    key: bytes  # raw trusted public key


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    d = tmp_path_factory.mktemp("disk-images")
    key = Ed25519PrivateKey.generate()
    build_image("1.0.0", key, d / "v1.img", created=CREATED, code_only=True)
    overlay = d / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/motd").write_text("version two\n")
    build_image("2.0.0", key, d / "v2.img", overlay=overlay, created=CREATED, code_only=True)
    big = d / "big"
    (big / "opt").mkdir(parents=True)
    (big / "opt/blob").write_bytes(os.urandom(2 * MIB))
    build_image("3.0.0", key, d / "big.img", overlay=big, created=CREATED, code_only=True)
    return Built(d, d / "v1.img", d / "v2.img", d / "big.img", public_raw(key.public_key()))


def _loops_over(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"], capture_output=True, text=True)
    devs = json.loads(out.stdout or "{}").get("loopdevices", [])
    return [d["name"] for d in devs if str(d.get("back-file", "")).startswith(str(path))]


@pytest.fixture(params=["sandbox", "block"])
def make_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeDisk]:
    """``make_disk(slot_mib=64, **kwargs)``: a disk of the parametrized backend; a second call reopens it."""
    backend: str = request.param
    if backend == "block" and BLOCK_PROBLEM:
        pytest.skip(f"block backend unavailable: {BLOCK_PROBLEM}")
    opened: list[DiskBase] = []
    disk_file = tmp_path / "disk.img"

    def make(slot_mib: int = 64, **kwargs: Any) -> DiskBase:
        disk: DiskBase
        if backend == "sandbox":
            disk = SandboxDisk(tmp_path / "machine", slot_size=slot_mib * MIB, **kwargs)
        else:
            if not disk_file.exists():
                with open(disk_file, "wb") as f:
                    f.truncate(300 * MIB)
            layout = DiskLayout(efi_mib=4, slot_mib=slot_mib, meta_mib=1, state_mib=16)
            disk = BlockDisk(disk_file, run_dir=tmp_path / "run", layout=layout, **kwargs)
        opened.append(disk)
        return disk

    try:
        yield make
    finally:
        errors = []
        for disk in reversed(opened):
            try:
                disk.close()
            except StorageError as exc:
                errors.append(exc)
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(tmp_path) not in mounts, "a mount was left behind"
        if backend == "block":
            assert not _loops_over(disk_file), "a loop device was left attached"
        assert not errors


@pytest.fixture
def disk(make_disk: MakeDisk) -> DiskBase:
    d = make_disk()
    d.partition()
    d.format()
    return d


def test_partition_and_format(make_disk: MakeDisk):
    d = make_disk()
    assert not d.is_partitioned()
    with pytest.raises(StorageError):
        d.path(Label.STATE)
    with pytest.raises(StorageError, match="not partitioned"):
        d.format()
    d.partition()
    assert d.is_partitioned()
    d.format()
    for label in (Label.EFI, Label.STATE, Label.EPHEMERAL):
        p = d.path(label)
        assert p.is_dir()
        (p / "probe").write_text(label.value)
        assert (d.path(label.value) / "probe").read_text() == label.value  # labels as plain strings too
    for label in (Label.BOOT_A, Label.BOOT_B, Label.META):
        assert d.path(label).exists()
    assert d.slot_capacity(Slot.A) >= 60 * MIB
    with pytest.raises(StorageError, match="unknown partition label"):
        d.path("SWAP")


def test_meta_round_trip_and_torn_copy(disk: DiskBase):
    assert disk.read_boot_env() is None
    env1, _ = arm(BootEnv(), Slot.A)
    disk.write_boot_env(env1)
    env2 = msgspec.structs.replace(env1, seq=env1.seq + 1, a=SlotBoot(2, False))
    disk.write_boot_env(env2)
    assert disk.read_boot_env() == env2
    with pytest.raises(StorageError, match="stale"):
        disk.write_boot_env(env1)
    # tear the newest copy (the second, at 512 KiB): the previous environment survives
    fd = os.open(disk.path(Label.META), os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xff" * 100, 512 * 1024 + 10)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert disk.read_boot_env() == env1


def test_write_verify_and_mount_slot(disk: DiskBase, built: Built):
    v1 = verify(built.v1, [built.key])
    phases: list[str] = []
    info = disk.write_image(Slot.A, v1, progress=lambda ph, done, total: phases.append(ph))
    assert phases and phases[0] == "write" and phases[-1] == "verify"
    assert info.state is SlotState.OK and info.version == "1.0.0" and info.payload_sha256 == v1.payload_sha256
    assert disk.slot_info(Slot.A) == info and disk.slot_info(Slot.B) is None
    in_slot = verify_slot(disk, Slot.A, [built.key])
    assert in_slot.payload_sha256 == v1.payload_sha256 and in_slot.path == disk.slot_path(Slot.A)
    root = disk.mount_slot(Slot.A, in_slot)
    assert "VERSION_ID=1.0.0" in (root / "etc/os-release").read_text()
    assert json.loads((root / "usr/lib/graven/graven_build.json").read_text())["version"] == "1.0.0"
    if disk.mount_strategy is not MountStrategy.UNPACK or os.geteuid() != 0:
        with pytest.raises(OSError) as exc:
            (root / "etc/os-release").write_text("tampered")
        assert exc.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    disk.unmount_slot(Slot.A)
    assert not os.path.ismount(root)


def test_two_slots_hold_two_versions(disk: DiskBase, built: Built):
    for slot, img in ((Slot.A, built.v1), (Slot.B, built.v2)):
        disk.write_image(slot, verify(img, [built.key]))
    roots = {s: disk.mount_slot(s, verify_slot(disk, s, [built.key])) for s in Slot}
    assert not (roots[Slot.A] / "etc/motd").exists()
    assert (roots[Slot.B] / "etc/motd").read_text() == "version two\n"
    disk.unmount_all()
    for root in roots.values():
        assert not os.path.ismount(root)


def test_mount_needs_the_slots_own_verified_image(disk: DiskBase, built: Built):
    v1, v2 = verify(built.v1, [built.key]), verify(built.v2, [built.key])
    with pytest.raises(BadImage, match="slot A holds no image"):
        disk.mount_slot(Slot.A, v1)
    disk.write_image(Slot.A, v1)
    with pytest.raises(BadImage, match=r"slot A holds image 1\.0\.0 .*not the verified 2\.0\.0"):
        disk.mount_slot(Slot.A, v2)
    with pytest.raises(BadImage, match="holds no image"):
        verify_slot(disk, Slot.B, [built.key])


def test_only_verified_images_are_written(disk: DiskBase, built: Built):
    class Lookalike:
        path, image_size, payload_size = built.v1, 1, 1
        payload_sha256, tail, version, key_id = bytes(32), b"", "1", "k"

    for fake in (Lookalike(), str(built.v1), built.v1, None):
        with pytest.raises(InvariantViolation, match=r"only an image\.VerifiedImage"):
            disk.write_image(Slot.A, fake)  # type: ignore[arg-type]
        with pytest.raises(InvariantViolation):
            disk.mount_slot(Slot.A, fake)  # type: ignore[arg-type]
    assert disk.slot_info(Slot.A) is None


def test_image_changed_after_verification_is_caught(disk: DiskBase, built: Built, tmp_path: Path):
    img = tmp_path / "swap.img"
    img.write_bytes(built.v1.read_bytes())
    v = verify(img, [built.key])
    data = bytearray(img.read_bytes())
    data[1000] ^= 0xFF  # the file changes between verify() and the write
    img.write_bytes(bytes(data))
    with pytest.raises(BadImage, match=r"does not hold the verified image .*did .* change after verification"):
        disk.write_image(Slot.B, v)
    info = disk.slot_info(Slot.B)
    assert info is not None and info.state is SlotState.FAILED
    with pytest.raises(BadImage, match="did not complete"):
        verify_slot(disk, Slot.B, [built.key])


def test_image_too_big_for_slot(make_disk: MakeDisk, built: Built):
    d = make_disk(slot_mib=2)  # the code-only v1 is ~1.1 MiB, big ~3.1 MiB
    d.partition()
    d.format()
    with pytest.raises(DiskFull, match=r"does not fit slot BOOT-A"):
        d.write_image(Slot.A, verify(built.big, [built.key]))
    assert d.slot_info(Slot.A) is None
    d.write_image(Slot.A, verify(built.v1, [built.key]))  # a small one fits


def test_writing_a_slot_in_use_is_refused(disk: DiskBase, built: Built):
    v1 = verify(built.v1, [built.key])
    disk.write_image(Slot.A, v1)
    root = disk.mount_slot(Slot.A, verify_slot(disk, Slot.A, [built.key]))
    if disk.mount_strategy is MountStrategy.UNPACK:
        pytest.skip("an unpacked root is a copy: the slot itself is never in use")
    # an agent runs from this root
    with open(root / "etc/os-release", "rb"), pytest.raises(StorageError, match=r"slot A is .*in use"):
        disk.write_image(Slot.A, v1)
    disk.write_image(Slot.A, v1)  # once nothing uses it, the stale mount is released and the write goes on
    assert not os.path.ismount(root)


def test_wipe_by_label(disk: DiskBase, built: Built):
    disk.write_image(Slot.A, verify(built.v1, [built.key]))
    env, _ = arm(BootEnv(), Slot.A)
    disk.write_boot_env(env)
    for label in (Label.STATE, Label.EPHEMERAL, Label.EFI):
        (disk.path(label) / "data").write_text("x")
    disk.wipe(["STATE"])
    assert not (disk.path(Label.STATE) / "data").exists()
    assert (disk.path(Label.EPHEMERAL) / "data").exists() and (disk.path(Label.EFI) / "data").exists()
    assert disk.read_boot_env() == env and disk.slot_info(Slot.A) is not None
    disk.wipe([Label.EPHEMERAL, "state"])
    assert not (disk.path(Label.EPHEMERAL) / "data").exists()
    with pytest.raises(StorageError, match="unknown partition label"):
        disk.wipe(["HOME"])
    disk.wipe(["BOOT-A", "META"])
    assert disk.slot_info(Slot.A) is None and disk.read_boot_env() is None


def test_repartition_forgets_everything(disk: DiskBase, built: Built):
    disk.write_image(Slot.A, verify(built.v1, [built.key]))
    disk.write_boot_env(arm(BootEnv(), Slot.A)[0])
    (disk.path(Label.STATE) / "config.yaml").write_text("x")  # mounted by this disk: released first
    disk.mount_slot(Slot.A, verify_slot(disk, Slot.A, [built.key]))
    disk.partition()
    disk.format()
    assert disk.slot_info(Slot.A) is None and disk.read_boot_env() is None
    assert not any(disk.path(Label.STATE).iterdir()) or {p.name for p in disk.path(Label.STATE).iterdir()} == {
        "lost+found"
    }


def test_reopen_sees_the_same_disk(make_disk: MakeDisk, built: Built):
    first = make_disk()
    first.partition()
    first.format()
    result = install(first, plan_install(first.read_boot_env(), verify(built.v1, [built.key])))
    (first.path(Label.STATE) / "config.yaml").write_text("version: v1alpha1\n")
    first.close()
    second = make_disk()  # a new object over the same root or file
    assert second.is_partitioned()
    assert second.read_boot_env() == result.env and result.env.default is Slot.A
    assert (second.path(Label.STATE) / "config.yaml").read_text() == "version: v1alpha1\n"
    root = second.mount_slot(Slot.A, verify_slot(second, Slot.A, [built.key]))
    assert (root / "etc/os-release").exists()


def test_install_protocol_upgrade(disk: DiskBase, built: Built):
    """Install A, boot it good, upgrade into B: B is written while A keeps running, then armed."""
    from boot import choose_slot, mark_good

    install(disk, plan_install(None, verify(built.v1, [built.key])))
    choice = choose_slot(disk.read_boot_env())  # type: ignore[arg-type]
    disk.write_boot_env(choice.env)
    disk.write_boot_env(mark_good(choice.env, Slot.A)[0])
    running = disk.mount_slot(Slot.A, verify_slot(disk, Slot.A, [built.key]))
    plan = plan_install(disk.read_boot_env(), verify(built.v2, [built.key]), booted=Slot.A,
                        slots={s: disk.slot_info(s) for s in Slot})
    assert plan.slot is Slot.B and not plan.skip_write
    result = install(disk, plan)
    assert [e.kind for e in result.events] == ["slot.invalidated", "image.installed", "boot.armed"]
    env = disk.read_boot_env()
    assert env is not None and env.default is Slot.B and env.fallback is Slot.A and env.b.tries_left == 3
    assert (running / "etc/os-release").exists()  # the running root was never touched
    again = plan_install(env, verify(built.v2, [built.key]), booted=Slot.A, slots={s: disk.slot_info(s) for s in Slot})
    assert again.skip_write and "already holds" in again.reason


def test_verified_image_from_another_disk_slot_can_be_written(disk: DiskBase, built: Built):
    """A VerifiedImage read in place from a slot is a valid source too (copying A to B)."""
    disk.write_image(Slot.A, verify(built.v1, [built.key]))
    in_a = verify_slot(disk, Slot.A, [built.key])
    assert isinstance(in_a, VerifiedImage)
    info = disk.write_image(Slot.B, in_a)
    assert info.payload_sha256 == in_a.payload_sha256
    verify_slot(disk, Slot.B, [built.key])

