"""Partitions: lay them out, format them, wipe them by label."""

from __future__ import annotations

from .._context import Context
from .._model import task
from .._requests import ResetRequest

LABELS = ("EFI", "BOOT-A", "BOOT-B", "META", "STATE", "EPHEMERAL")


@task(timeout=120)
async def partition_disk(ctx: Context) -> None:
    """Only onto the disk the config's ``machine.install.disk`` names: any other, and nothing is written."""
    install = ctx.config.machine.install
    if install is not None:
        await ctx.blocking(ctx.ports.disk.check_install_disk, install.disk)
    await ctx.blocking(ctx.ports.disk.partition)


@task(timeout=300)
async def format_partitions(ctx: Context) -> None:
    await ctx.blocking(ctx.ports.disk.format, LABELS)


@task(timeout=300)
async def wipe_labels(ctx: Context) -> None:
    await ctx.blocking(ctx.ports.disk.wipe, ctx.request_as(ResetRequest).wipe)
