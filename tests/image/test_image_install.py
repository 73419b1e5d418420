"""A/B install planning, and issue test 7: no tampered image ever reaches a slot."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_fixtures import TAMPERS, Images, Keys

from boot import BootEnv, Slot, SlotBoot
from errors import VerificationError
from image import install, plan_install, verify, verify_slot
from storage import Label, SandboxDisk

SLOT = 4 << 20


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upgrade(disk: SandboxDisk, path: Path, trusted: list[bytes]) -> None:
    """What the upgrade sequence does with a received file: verify, plan, install."""
    image = verify(path, trusted)
    install(disk, plan_install(disk.read_boot_env(), image, booted=Slot.A))


def test_plan_picks_the_inactive_slot(images: Images, keys: Keys):
    v = verify(images.v1, keys.trusted)
    assert plan_install(None, v).slot is Slot.A
    assert plan_install(BootEnv(), v).slot is Slot.A
    assert plan_install(BootEnv(default=Slot.A), v).slot is Slot.B
    assert plan_install(BootEnv(default=Slot.B), v).slot is Slot.A
    # an upgrade staged into B (default B) while A still runs: the running slot is never the target
    staged = BootEnv(default=Slot.B, fallback=Slot.A, a=SlotBoot(0, True), b=SlotBoot(3, False))
    plan = plan_install(staged, v, booted=Slot.A)
    assert plan.slot is Slot.B and plan.booted is Slot.A and "slot A is running" in plan.reason


def test_upgrade_then_same_image_skips_the_write(running_v1: SandboxDisk, images: Images, keys: Keys):
    upgrade(running_v1, images.v2, keys.trusted)
    assert verify_slot(running_v1, Slot.B, keys.trusted).version == "2.0.0"
    before = digest(running_v1.slot_path(Slot.B))
    env = running_v1.read_boot_env()
    assert env is not None
    plan = plan_install(env, verify(images.v2, keys.trusted), booted=Slot.A,
                        slots={s: running_v1.slot_info(s) for s in Slot})
    result = install(running_v1, plan)
    assert plan.skip_write and [e.kind for e in result.events] == ["boot.armed"]
    assert digest(running_v1.slot_path(Slot.B)) == before


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_image_never_reaches_a_slot(name: str, running_v1: SandboxDisk, images: Images, keys: Keys,
                                             tmp_path: Path):
    make, error, pattern = TAMPERS[name]
    bad = tmp_path / "upload.img"
    bad.write_bytes(make(images.v1.read_bytes(), keys.signing, keys.other, images.v2.read_bytes()))
    disk = running_v1
    watched = [disk.slot_path(Slot.A), disk.slot_path(Slot.B), disk.path(Label.META)]
    before = {p: digest(p) for p in watched}
    env = disk.read_boot_env()
    with pytest.raises(error, match=pattern):
        upgrade(disk, bad, keys.trusted)
    assert issubclass(error, VerificationError)
    assert {p: digest(p) for p in watched} == before, "a refused image changed a slot or META"
    assert disk.slot_info(Slot.B) is None
    assert disk.read_boot_env() == env
    assert verify_slot(disk, Slot.A, keys.trusted).version == "1.0.0"


def test_the_sequencers_slots_port_writes_only_verified_images_and_leaves_the_slot_unarmed(
        running_v1: SandboxDisk, images: Images, keys: Keys):
    """The upgrade's write (``node``'s ``Slots`` adapter) is ``plan_install`` + ``install``: the inactive slot
    out of service in META, written and recorded, not armed (the bootloader phase arms it)."""
    from node._ports import SlotsPort
    from sequencer.memory import MemoryImage

    port = SlotsPort(running_v1)
    before = running_v1.read_boot_env()
    assert before is not None and before.default is Slot.A
    with pytest.raises(TypeError, match="not a verified image"):
        port.install(MemoryImage.of("2.0.0"), Slot.A)
    assert running_v1.read_boot_env() == before and running_v1.slot_info(Slot.B) is None
    assert port.install(verify(images.v2, keys.trusted), Slot.A) is Slot.B
    env = running_v1.read_boot_env()
    assert env is not None and env.default is Slot.A and env.b == SlotBoot(0, False) and env.seq == before.seq + 1
    assert verify_slot(running_v1, Slot.B, keys.trusted).version == "2.0.0"
    assert verify_slot(running_v1, Slot.A, keys.trusted).version == "1.0.0"


_slot_boots = st.builds(SlotBoot, st.integers(0, 3), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(default=st.sampled_from([None, Slot.A, Slot.B]), a=_slot_boots, b=_slot_boots, seq=st.integers(1, 50),
       running=st.sampled_from([None, Slot.A, Slot.B]), blank=st.booleans())
def test_the_in_memory_slots_install_as_the_real_port_does(images: Images, keys: Keys, tmp_path_factory: Any,
                                                           default: Slot | None, a: SlotBoot, b: SlotBoot, seq: int,
                                                           running: Slot | None, blank: bool):
    """The core's tests run on ``sequencer.memory.MemorySlots``; the node on ``SlotsPort`` (``image.install``):
    from any META, and any slot running or none, both write the same slot and leave the same META."""
    from node._ports import SlotsPort
    from sequencer.memory import MemoryBootEnv, MemoryDisk, MemoryImage, MemorySlots

    env = None if blank else BootEnv(seq=seq, default=default, a=a, b=b)
    disk = SandboxDisk(tmp_path_factory.mktemp("slots") / "machine", slot_size=SLOT, mount_strategy="unpack")
    disk.partition()
    disk.format()
    if env is not None:
        disk.write_boot_env(env)
    meta = MemoryBootEnv(env)
    written = SlotsPort(disk).install(verify(images.v2, keys.trusted), running)
    assert MemorySlots(MemoryDisk(), meta).install(MemoryImage.of("2.0.0"), running) is written
    assert written is not running and disk.read_boot_env() == meta.state
    assert verify_slot(disk, written, keys.trusted).version == "2.0.0"
