"""The boot environment (META): load it, commit a good boot, arm a slot, revert to the other slot."""

from __future__ import annotations

from dataclasses import replace

from errors import GravenError, NotFound
from events import Kind

from .._context import Context
from .._model import task
from ..ports import BootState, SlotBoot, other_slot

TRIES = 3


def installed(slot: str, tries: int = TRIES) -> BootState:
    """A fresh install: ``slot`` is the default, on trial, with nothing to fall back to."""
    return BootState(default=slot).with_slot(slot, SlotBoot(tries_left=tries))


def armed(state: BootState, slot: str, tries: int = TRIES) -> BootState:
    """Boot ``slot`` next, on trial for ``tries`` boots, falling back to the slot that runs now."""
    return replace(state, default=slot, fallback=other_slot(slot)).with_slot(slot, SlotBoot(tries_left=tries))


def committed(state: BootState, slot: str) -> BootState:
    """``slot`` booted good: it stays the default and the fallback is cleared."""
    return replace(state, default=slot, fallback=None).with_slot(slot, SlotBoot(tries_left=0, good=True))


def invalidated(state: BootState, slot: str) -> BootState:
    """``slot`` is about to be overwritten: not good, no tries, neither the default nor the fallback."""
    default, fallback = state.default, None if state.fallback == slot else state.fallback
    if state.default == slot:
        other = other_slot(slot)
        default = other if (state.slot(other).good or state.slot(other).tries_left > 0) else None
        fallback = None
    return replace(state, default=default, fallback=fallback).with_slot(slot, SlotBoot())


def reverted(state: BootState, running: str) -> BootState:
    """Boot the other slot next; it must have booted good before."""
    target = other_slot(running)
    if not state.slot(target).good:
        raise NotFound(f"slot {target} holds no image that booted good; nothing to roll back to", slot=target)
    return replace(state, default=target, fallback=None)


@task(timeout=10)
async def load_boot_env(ctx: Context) -> None:
    ctx.runtime.boot_env = await ctx.blocking(ctx.ports.boot_env.load)


@task(timeout=10)
async def commit_boot(ctx: Context) -> None:
    slot = ctx.runtime.image.slot if ctx.runtime.image else None
    if slot is not None:
        state = committed(ctx.runtime.boot_env or BootState(), slot)
        await ctx.blocking(ctx.ports.boot_env.store, state)
        ctx.runtime.boot_env = state
    ctx.emit(Kind.BOOT_COMMITTED, {"slot": slot or ""})


@task(timeout=10)
async def default_slot_a(ctx: Context) -> None:
    state = installed("A")
    await ctx.blocking(ctx.ports.boot_env.store, state)
    ctx.runtime.boot_env = state


@task(timeout=10)
async def arm_slot(ctx: Context) -> None:
    if ctx.slot is None:
        raise NotFound("no slot was written to arm")
    state = armed(ctx.runtime.boot_env or BootState(), ctx.slot)
    await ctx.blocking(ctx.ports.boot_env.store, state)
    ctx.runtime.boot_env = state


@task(timeout=10)
async def revert_slot(ctx: Context) -> None:
    running = ctx.runtime.image.slot if ctx.runtime.image else None
    state = await ctx.blocking(ctx.ports.boot_env.load)
    if running is None or state is None:
        raise NotFound("this boot runs no slot of the disk; nothing to roll back to")
    state = reverted(state, running)
    target = other_slot(running)
    install = ctx.config.machine.install
    keys = install.trusted_public_keys() if install is not None else ()
    try:  # good once is not enough: the image must still be there and verify
        image = await ctx.blocking(ctx.ports.disk.verify_slot, target, keys)
    except GravenError as exc:
        raise NotFound(f"cannot roll back to slot {target}: its image does not verify: {exc.message}",
                       slot=target) from exc
    ctx.emit(Kind.BOOT_REVERTED, {"from_slot": running, "to_slot": target, "version": image.version,
                                  "digest": image.payload_sha256.hex()})
    await ctx.blocking(ctx.ports.boot_env.store, state)
    ctx.runtime.boot_env = state
