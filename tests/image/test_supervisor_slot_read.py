"""The supervisor's choice of slot when a slot's image cannot be checked: an image that does not verify takes
its slot out of service at once (RAUC: only verified images boot), while a slot that cannot be *read* (an I/O
error) only spends a try, as a failed boot does: boot counting falls back if it persists, and a transient
error costs nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from image_fixtures import Images, Keys

import image
from boot import Slot, arm
from errors import BadImage, StorageError
from image import install, plan_install, verify
from node._supervisor import Machine, MachineOptions
from storage import SandboxDisk


@pytest.fixture
def upgraded(running_v1: SandboxDisk, images: Images, keys: Keys) -> SandboxDisk:
    """v1 in slot A, booted good; v2 written to slot B and armed (on trial, falling back to A)."""
    install(running_v1, plan_install(running_v1.read_boot_env(), verify(images.v2, keys.trusted), booted=Slot.A))
    env = running_v1.read_boot_env()  # the install took slot B out of service while writing it
    assert env is not None
    running_v1.write_boot_env(arm(env, Slot.B)[0])
    return running_v1


def failing_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[Slot]:
    """``verify_slot`` raises ``error`` on its first call only (the fault), then reads the slot for real."""
    real, calls = image.verify_slot, []

    def verify_slot(disk: Any, slot: Slot, keys: Any) -> Any:
        calls.append(slot)
        if len(calls) == 1:
            raise error
        return real(disk, slot, keys)

    monkeypatch.setattr(image, "verify_slot", verify_slot)
    return calls


def machine(disk: SandboxDisk, keys: Keys, tmp_path: Path) -> Machine:
    return Machine(MachineOptions(root=tmp_path / "machine", trusted_keys=list(keys.trusted)), disk)


def test_a_slot_that_cannot_be_read_spends_a_try_and_is_tried_again(
        upgraded: SandboxDisk, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = failing_once(monkeypatch, StorageError("cannot read image BOOT-B: Input/output error"))
    m = machine(upgraded, keys, tmp_path)
    boot = m._select()
    assert boot is not None and boot.slot is Slot.B and boot.version == "2.0.0"
    assert calls == [Slot.B, Slot.B]
    env = upgraded.read_boot_env()
    assert env is not None and env.default is Slot.B and env.fallback is Slot.A
    assert env.b.tries_left == 1 and not env.b.good  # two tries spent: the failed read and this boot
    failed = [e["payload"] for e in m.pending if e["kind"] == "boot.failed"]
    assert len(failed) == 1 and failed[0]["slot"] == "B" and failed[0]["version"] is None
    assert failed[0]["reason"] == "cannot read slot B: cannot read image BOOT-B: Input/output error"
    assert not any(e["kind"] == "slot.invalidated" for e in m.pending)
    upgraded.close()


def test_an_image_that_does_not_verify_takes_its_slot_out_of_service(
        upgraded: SandboxDisk, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = failing_once(monkeypatch, BadImage("slot B: the image differs from the slot record"))
    m = machine(upgraded, keys, tmp_path)
    boot = m._select()
    assert boot is not None and boot.slot is Slot.A and boot.version == "1.0.0"  # fell back at once
    assert calls == [Slot.B, Slot.A]
    env = upgraded.read_boot_env()
    assert env is not None and env.default is Slot.A
    assert env.b.tries_left == 0 and not env.b.good
    assert "does not verify" in (env.last_fallback_reason or "")
    upgraded.close()
