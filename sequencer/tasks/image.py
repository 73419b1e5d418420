"""Images: record what runs, verify a new one, write it into a slot."""

from __future__ import annotations

import boot
from boot import Slot
from errors import InvalidRequest
from events import Kind

from .._context import Context
from .._model import task
from .._requests import InstallRequest, UpgradeRequest
from ..ports import Image


def _trusted(ctx: Context) -> tuple[bytes, ...]:
    install = ctx.config.machine.install
    return install.trusted_public_keys() if install is not None else ()


def _installed(ctx: Context, slot: str, image: Image) -> None:
    ctx.emit(Kind.IMAGE_INSTALLED, {"slot": slot, "version": image.version, "digest": image.payload_sha256.hex(),
                                    "key_id": image.key_id})


@task(timeout=10)
async def measure_image(ctx: Context) -> None:
    running = await ctx.blocking(ctx.ports.images.running)
    ctx.runtime.image = running
    ctx.emit(Kind.IMAGE_MEASURED, {"slot": running.slot, "version": running.version, "digest": running.digest})


@task(timeout=600)
async def install_image(ctx: Context) -> None:
    install = ctx.config.machine.install
    source = ctx.request_as(InstallRequest).image or (install.image if install else None)
    if source is None:
        raise InvalidRequest("install needs an image: machine.install.image is not set and none was given")
    image = await ctx.blocking(ctx.ports.images.verify, source, _trusted(ctx))
    ctx.cancel.check()
    await ctx.blocking(ctx.ports.disk.write_image, "A", image)
    _installed(ctx, "A", image)


@task(timeout=300)
async def verify_image(ctx: Context) -> None:
    source = ctx.request_as(UpgradeRequest).image
    ctx.image = await ctx.blocking(ctx.ports.images.verify, source, _trusted(ctx))


@task(timeout=600)
async def write_inactive_slot(ctx: Context) -> None:
    assert ctx.image is not None, "verify runs before write"
    running = ctx.runtime.image.slot if ctx.runtime.image and ctx.runtime.image.slot else "A"
    ctx.slot = Slot.parse(running).other.value
    # As RAUC: take the slot out of service before writing it, so that a write cut off half-way is never
    # booted, fallen back to or rolled back to on the strength of an older good flag.
    state = await ctx.blocking(ctx.ports.boot_env.load)
    if state is not None:
        state, _ = boot.mark_bad(state, Slot.parse(ctx.slot))
        await ctx.blocking(ctx.ports.boot_env.store, state)
        ctx.runtime.boot_env = state
    await ctx.blocking(ctx.ports.disk.write_image, ctx.slot, ctx.image)
    _installed(ctx, ctx.slot, ctx.image)
