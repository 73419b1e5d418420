"""Images: record what runs, verify a new one, write it into a slot (only through the ``Slots`` port: the one
install protocol, ``image.install``)."""

from __future__ import annotations

from boot import Slot
from errors import InvalidRequest
from events import Kind

from .._context import Context
from .._model import task
from .._requests import InstallRequest, UpgradeRequest
from ..ports import Image


async def _install(ctx: Context, image: Image, running: Slot | None) -> str:
    """Write ``image`` into the slot ``running`` is not, and record it (``image.installed``)."""
    try:
        slot = (await ctx.blocking(ctx.ports.slots.install, image, running)).value
    finally:  # the slot was taken out of service in META before the write, even if the write failed
        ctx.runtime.boot_env = await ctx.blocking(ctx.ports.boot_env.load)
    ctx.emit(Kind.IMAGE_INSTALLED, {"slot": slot, "version": image.version, "digest": image.payload_sha256.hex(),
                                    "key_id": image.key_id})
    return slot


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
    image = await ctx.blocking(ctx.ports.images.verify, source, ctx.config.machine.trusted_image_keys())
    ctx.cancel.check()
    await _install(ctx, image, None)  # a fresh disk: META is blank, so slot A


@task(timeout=300)
async def verify_image(ctx: Context) -> None:
    source = ctx.request_as(UpgradeRequest).image
    ctx.image = await ctx.blocking(ctx.ports.images.verify, source, ctx.config.machine.trusted_image_keys())


@task(timeout=600)
async def write_inactive_slot(ctx: Context) -> None:
    assert ctx.image is not None, "verify runs before write"
    running = ctx.runtime.image.slot if ctx.runtime.image and ctx.runtime.image.slot else "A"
    ctx.slot = await _install(ctx, ctx.image, Slot.parse(running))
