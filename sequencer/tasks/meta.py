"""The boot environment (META): load it, commit a good boot, arm a slot, revert to the other slot. The rules are
``boot``'s, the same the bootloader follows; these tasks only load, apply and store."""

from __future__ import annotations

import boot
from boot import BootEnv, Slot
from errors import GravenError, NotFound
from events import Kind

from .._context import Context
from .._model import task


@task(timeout=10)
async def load_boot_env(ctx: Context) -> None:
    ctx.runtime.boot_env = await ctx.blocking(ctx.ports.boot_env.load)


@task(timeout=10)
async def commit_boot(ctx: Context) -> None:
    slot = ctx.runtime.image.slot if ctx.runtime.image else None
    if slot is not None:
        env, _ = boot.mark_good(ctx.runtime.boot_env or BootEnv(), Slot.parse(slot))
        await ctx.blocking(ctx.ports.boot_env.store, env)
        ctx.runtime.boot_env = env
    ctx.emit(Kind.BOOT_COMMITTED, {"slot": slot or ""})


@task(timeout=10)
async def default_slot_a(ctx: Context) -> None:
    env = boot.installed(ctx.runtime.boot_env or BootEnv(), Slot.A)
    await ctx.blocking(ctx.ports.boot_env.store, env)
    ctx.runtime.boot_env = env


@task(timeout=10)
async def arm_slot(ctx: Context) -> None:
    if ctx.slot is None:
        raise NotFound("no slot was written to arm")
    env, _ = boot.arm(ctx.runtime.boot_env or BootEnv(), Slot.parse(ctx.slot))
    await ctx.blocking(ctx.ports.boot_env.store, env)
    ctx.runtime.boot_env = env


@task(timeout=10)
async def revert_slot(ctx: Context) -> None:
    running = ctx.runtime.image.slot if ctx.runtime.image else None
    env = await ctx.blocking(ctx.ports.boot_env.load)
    env, _ = boot.rollback(env, Slot.parse(running) if running else None)  # the other slot must have booted good
    target = env.default
    assert target is not None, "a rollback makes the other slot the default"
    try:  # good once is not enough: the image must still be there and verify
        image = await ctx.blocking(ctx.ports.disk.verify_slot, target.value, ctx.config.machine.trusted_image_keys())
    except GravenError as exc:
        raise NotFound(f"cannot roll back to slot {target}: its image does not verify: {exc.message}",
                       slot=target.value) from exc
    ctx.emit(Kind.BOOT_REVERTED, {"from_slot": running, "to_slot": target.value, "version": image.version,
                                  "digest": image.payload_sha256.hex()})
    await ctx.blocking(ctx.ports.boot_env.store, env)
    ctx.runtime.boot_env = env
