"""The one rule book of the boot environment: what the bootloader (``node._supervisor``, every boot) and the
agent (``sequencer.tasks``: install, upgrade, commit, rollback) may do to it. Pure functions over ``BootEnv``.

Boot counting follows systemd-boot's assessment and RAUC's U-Boot/GRUB contract: a slot that is not yet good
has a number of tries; every boot of it spends one *before* it starts; a boot that reaches its health checks
marks the slot good. A slot that is not good and has no tries left is never booted again: the bootloader falls
back to the other slot and records why. A good slot is never given up by the bootloader; only an operator's
upgrade (``arm``) or rollback (``revert``) moves the default, and a slot about to be overwritten is taken out
of service first (``mark_bad``).

``fallback`` is not chosen by any rule: every rule derives it (``fallback_of``) as the slot the bootloader would
boot if the default, on trial, ran out of tries. A good default has none (it never runs out). So what the agent
reports as the fallback is what the bootloader does.

Every function returns a new ``BootEnv`` with ``seq + 1`` (META stores only newer environments) and the events
the caller may log.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from errors import NotFound

from ._env import BootEnv, Slot, SlotBoot

__all__ = [
    "DEFAULT_TRIES",
    "BootChoice",
    "BootEvent",
    "arm",
    "bootable_slots",
    "choose_slot",
    "fallback_of",
    "install_target",
    "installed",
    "mark_bad",
    "mark_good",
    "next_slot",
    "revert",
    "rollback",
]

DEFAULT_TRIES = 3


class BootEvent(NamedTuple):
    kind: str
    payload: dict[str, object]


class BootChoice(NamedTuple):
    """``slot`` is None when no slot can boot (an empty disk, or both slots spent)."""

    slot: Slot | None
    env: BootEnv
    events: tuple[BootEvent, ...]


def fallback_of(env: BootEnv) -> Slot | None:
    """The slot the bootloader goes to if the default, on trial, runs out of tries (None: a good default, none
    at all, or nothing bootable beside it)."""
    if env.default is None or env.slot(env.default).good:
        return None
    other = env.default.other
    return other if env.slot(other).bootable else None


def _next(env: BootEnv, **changes: object) -> BootEnv:
    new = msgspec.structs.replace(env, seq=env.seq + 1, **changes)
    return msgspec.structs.replace(new, fallback=fallback_of(new))


def _with(env: BootEnv, slot: Slot, state: SlotBoot, **changes: object) -> BootEnv:
    return _next(env.with_slot(slot, state), **changes)


def bootable_slots(env: BootEnv) -> tuple[Slot, ...]:
    return tuple(s for s in Slot if env.slot(s).bootable)


def next_slot(env: BootEnv) -> Slot | None:
    """The slot the next boot starts (what ``choose_slot`` picks), without spending a try."""
    if env.default is None:
        return None
    return next((s for s in (env.default, env.default.other) if env.slot(s).bootable), None)


def choose_slot(env: BootEnv) -> BootChoice:
    """The bootloader, once per boot: pick the slot to boot now, spending a try if it is not yet good."""
    slot = next_slot(env)
    boots = env.boots + 1
    if slot is None:
        reason = "no image installed" if env.default is None else "no slot is good or has tries left"
        return BootChoice(None, _next(env, boots=boots), (BootEvent("boot.none", {"reason": reason, "boot": boots}),))
    assert env.default is not None
    events: list[BootEvent] = []
    state = env.slot(slot)
    after = state if state.good else SlotBoot(tries_left=state.tries_left - 1, good=False)
    if slot is env.default:
        new = _with(env, slot, after, boots=boots)
    else:
        reason = f"slot {env.default.value} ran out of boot tries without booting good"
        new = _with(env, slot, after, boots=boots, default=slot, last_fallback_reason=reason,
                    last_fallback_seq=env.seq + 1)
        events.append(BootEvent("boot.fallback", {"from_slot": env.default.value, "to_slot": slot.value,
                                                   "reason": reason}))
    why = "fallback" if events else ("good" if after.good else f"trial, {after.tries_left} tries left after it")
    events.append(BootEvent("boot.selected", {
        "slot": slot.value, "tries_left": after.tries_left, "good": after.good, "boot": boots, "reason": why,
    }))
    return BootChoice(slot, new, tuple(events))


def install_target(env: BootEnv | None, running: Slot | None = None) -> Slot:
    """The slot an install or upgrade writes: never the one running (``running``; not known: the environment's
    default), and slot A when nothing runs (a blank META: a fresh install)."""
    if running is None and env is not None:
        running = env.default
    return running.other if running is not None else Slot.A


def installed(env: BootEnv, slot: Slot, tries: int = DEFAULT_TRIES) -> BootEnv:
    """A fresh install into ``slot``: it is the default, on trial, and nothing else is known (the boot count
    and the last fallback start over; only ``seq`` goes on, so that META takes it)."""
    if tries < 1:
        raise ValueError("a slot needs at least one try")
    return _next(BootEnv(seq=env.seq, default=slot).with_slot(slot, SlotBoot(tries_left=tries)))


def mark_good(env: BootEnv, slot: Slot) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Commit a boot of ``slot``: it is good and the default from now on (so there is no fallback)."""
    new = _with(env, slot, SlotBoot(tries_left=0, good=True), default=slot)
    return new, (BootEvent("boot.committed", {"slot": slot.value}),)


def mark_bad(env: BootEnv, slot: Slot) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Take ``slot`` out of service (before it is overwritten, or when its image does not verify): not good, no
    tries; if it was the default, the other slot is, when it can boot."""
    default = env.default
    if default is slot:
        default = slot.other if env.slot(slot.other).bootable else None
    new = _with(env, slot, SlotBoot(tries_left=0, good=False), default=default)
    return new, (BootEvent("slot.invalidated", {"slot": slot.value}),)


def arm(env: BootEnv, slot: Slot, tries: int = DEFAULT_TRIES) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Make ``slot`` the default for the next boots, on trial for ``tries`` boots, falling back to the other if
    that one can boot."""
    if tries < 1:
        raise ValueError("a slot needs at least one try")
    new = _with(env, slot, SlotBoot(tries_left=tries, good=False), default=slot)
    return new, (BootEvent("boot.armed", {
        "slot": slot.value, "tries": tries, "fallback": new.fallback.value if new.fallback else None,
    }),)


def revert(env: BootEnv, current: Slot | None = None) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """Rollback: boot the other slot from now on. It must hold a good image, else ``NotFound``.

    ``current`` is the slot running now (default: the environment's default slot). The target is good, so the
    result has no fallback, as after a commit.
    """
    running = current if current is not None else env.default
    if running is None:
        raise NotFound("nothing to roll back to: no slot is installed")
    target = running.other
    if not env.slot(target).good:
        raise NotFound(f"cannot roll back to slot {target.value}: slot {target.value} holds no image that booted "
                       f"good; nothing to roll back to", slot=target.value)
    new = _next(env, default=target)
    return new, (BootEvent("boot.reverted", {"from_slot": running.value, "to_slot": target.value}),)


def rollback(env: BootEnv | None, running: Slot | None) -> tuple[BootEnv, tuple[BootEvent, ...]]:
    """The agent's rollback (``revert``) from the slot this boot runs; ``NotFound`` also when it runs none (an
    installer, a bare agent) or META is blank. The API's pre-check and the rollback itself both ask this."""
    if running is None or env is None:
        raise NotFound("this boot runs no slot of the disk (installer or bare agent); nothing to roll back to")
    return revert(env, running)
