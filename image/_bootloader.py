"""The bootloader's decisions, as pure functions over the boot environment.

Boot counting follows systemd-boot's assessment and RAUC's U-Boot/GRUB contract: a slot that is not yet
good has a number of tries; every boot of it spends one *before* it starts; a boot that reaches its
health checks marks the slot good (and clears the fallback). A slot that is not good and has no tries
left is never booted again: the bootloader falls back to the other slot and records why. A good slot is
never given up by the bootloader; only an operator's ``arm`` or ``revert`` moves the default.

Every function returns a new ``BootEnv`` with ``seq + 1`` (META stores only newer environments) and the
events the caller should log.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from errors import NotFound
from storage import BootEnv, Slot, SlotBoot

__all__ = [
    "DEFAULT_TRIES",
    "BootChoice",
    "BootEvent",
    "arm",
    "bootable_slots",
    "choose_slot",
    "mark_bad",
    "mark_good",
    "revert",
]

DEFAULT_TRIES = 3


class BootEvent(NamedTuple):
    kind: str
    payload: dict[str, Any]


class BootChoice(NamedTuple):
    """``slot`` is None when no slot can boot (an empty disk, or both slots spent)."""

    slot: Slot | None
    env: BootEnv
    events: tuple[BootEvent, ...]


def _next(env: BootEnv, **changes: Any) -> BootEnv:
    return msgspec.structs.replace(env, seq=env.seq + 1, **changes)


def bootable_slots(env: BootEnv) -> tuple[Slot, ...]:
    return tuple(s for s in Slot if env.slot(s).bootable)


def choose_slot(env: BootEnv) -> BootChoice:
    """Pick the slot to boot now, spending a try if it is not yet good."""
    candidates: list[Slot] = []
    if env.default is not None:
        candidates = [env.default, env.default.other]
    events: list[BootEvent] = []
    boots = env.boots + 1
    for slot in candidates:
        state = env.slot(slot)
        if not state.bootable:
            continue
        new = _next(env, boots=boots)
        if slot is not env.default:
            assert env.default is not None
            reason = f"slot {env.default.value} ran out of boot tries without booting good"
            new = msgspec.structs.replace(
                new, default=slot, fallback=None, last_fallback_reason=reason, last_fallback_seq=new.seq
            )
            events.append(BootEvent("boot.fallback", {"from_slot": env.default.value, "to_slot": slot.value,
                                                       "reason": reason}))
        if not state.good:
            new = new.with_slot(slot, SlotBoot(tries_left=state.tries_left - 1, good=False))
        after = new.slot(slot)
        why = "fallback" if events else ("good" if after.good else f"trial, {after.tries_left} tries left after it")
        events.append(BootEvent("boot.selected", {
            "slot": slot.value, "tries_left": after.tries_left, "good": after.good, "boot": boots, "reason": why,
        }))
        return BootChoice(slot, new, tuple(events))
    reason = "no image installed" if env.default is None else "no slot is good or has tries left"
    new = _next(env, boots=boots)
    return BootChoice(None, new, (BootEvent("boot.none", {"reason": reason, "boot": boots}),))


def mark_good(env: BootEnv, slot: Slot) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Commit a boot of ``slot``: it is good from now on, and the fallback is cleared."""
    new = _next(env, fallback=None).with_slot(slot, SlotBoot(tries_left=0, good=True))
    return new, (BootEvent("boot.committed", {"slot": slot.value}),)


def mark_bad(env: BootEnv, slot: Slot) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Take ``slot`` out of service (before it is overwritten): not good, no tries, not a fallback."""
    changes: dict[str, Any] = {}
    if env.fallback is slot:
        changes["fallback"] = None
    if env.default is slot:
        other = slot.other
        changes["default"] = other if env.slot(other).bootable else None
        changes["fallback"] = None
    new = _next(env, **changes).with_slot(slot, SlotBoot(tries_left=0, good=False))
    return new, (BootEvent("slot.invalidated", {"slot": slot.value}),)


def arm(env: BootEnv, slot: Slot, tries: int = DEFAULT_TRIES) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Make ``slot`` the default for the next boots, on trial for ``tries`` boots, falling back to the other."""
    if tries < 1:
        raise ValueError("a slot needs at least one try")
    other = slot.other
    fallback = other if env.slot(other).good else None
    new = _next(env, default=slot, fallback=fallback).with_slot(slot, SlotBoot(tries_left=tries, good=False))
    return new, (BootEvent("boot.armed", {
        "slot": slot.value, "tries": tries, "fallback": fallback.value if fallback else None,
    }),)


def revert(env: BootEnv, current: Slot | None = None) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Rollback: boot the other slot from now on. It must hold a good image, else ``NotFound``.

    ``current`` is the slot running now (default: the environment's default slot).
    """
    running = current if current is not None else env.default
    if running is None:
        raise NotFound("nothing to roll back to: no slot is installed")
    target = running.other
    if not env.slot(target).good:
        raise NotFound(f"cannot roll back to slot {target.value}: it holds no image that booted good",
                       slot=target.value)
    fallback = running if env.slot(running).good else None
    new = _next(env, default=target, fallback=fallback)
    return new, (BootEvent("boot.reverted", {"from_slot": running.value, "to_slot": target.value}),)
