"""A/B install: a pure plan, then the fixed protocol (RAUC's) that carries it out.

``plan_install`` picks the slot that is not running. ``install`` takes that slot out of service in META,
writes and reads back the verified image, and only then arms the slot (default, on trial, falling back to
the running one).

This is the one install path: the sequencer's install and upgrade reach it through their ``Slots`` port
(``node``'s adapter), the qemu provisioner and the tests call it directly. The slot rules are ``boot``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from boot import DEFAULT_TRIES, BootEnv, BootEvent, Slot, arm, install_target, mark_bad
from storage import DiskBase, Progress, SlotInfo

from ._verify import VerifiedImage

__all__ = ["InstallPlan", "InstallResult", "install", "plan_install"]


@dataclass(frozen=True)
class InstallPlan:
    slot: Slot  # the target: never the running slot
    image: VerifiedImage
    booted: Slot | None
    skip_write: bool  # the target already holds exactly this image (record ok, same digests)
    reason: str


@dataclass(frozen=True)
class InstallResult:
    plan: InstallPlan
    env: BootEnv
    info: SlotInfo | None
    events: tuple[BootEvent, ...]


def plan_install(
    boot_env: BootEnv | None,
    image: VerifiedImage,
    *,
    booted: Slot | None = None,
    slots: Mapping[Slot, SlotInfo | None] | None = None,
) -> InstallPlan:
    """Choose the inactive slot for ``image``. ``booted`` (default: META's default slot) is never the target."""
    running = booted if booted is not None else (boot_env.default if boot_env is not None else None)
    target = install_target(boot_env, booted)
    held = (slots or {}).get(target)
    same = (
        held is not None and held.ok and held.payload_sha256 == image.payload_sha256
        and held.image_size == image.image_size
    )
    if running is None:
        reason = f"no slot is running: install {image.version} into slot {target.value}"
    else:
        reason = f"slot {running.value} is running: install {image.version} into slot {target.value}"
    if same:
        reason += " (it already holds this image; nothing to write)"
    return InstallPlan(slot=target, image=image, booted=running, skip_write=same, reason=reason)


def install(
    disk: DiskBase,
    plan: InstallPlan,
    *,
    tries: int = DEFAULT_TRIES,
    activate: bool = True,
    progress: Progress | None = None,
) -> InstallResult:
    """Carry out ``plan`` on ``disk``: invalidate the slot in META, write it, then (``activate``) arm it."""
    env = disk.read_boot_env() or BootEnv()
    events: list[BootEvent] = []
    info: SlotInfo | None = None
    if not plan.skip_write:
        env, evs = mark_bad(env, plan.slot)
        disk.write_boot_env(env)
        events.extend(evs)
        info = disk.write_image(plan.slot, plan.image, progress)
        events.append(BootEvent("image.installed", {
            "slot": plan.slot.value, "version": plan.image.version, "digest": plan.image.digest,
            "key_id": plan.image.key_id, "size": plan.image.image_size,
        }))
    else:
        info = disk.slot_info(plan.slot)
    if activate:
        env, evs = arm(env, plan.slot, tries)
        disk.write_boot_env(env)
        events.extend(evs)
    return InstallResult(plan=plan, env=env, info=info, events=tuple(events))
