"""Power: ask for a reboot or a power-off. The runner carries it out once the sequence's events are durable."""

from __future__ import annotations

from .._context import Context
from .._model import task


@task(timeout=5)
async def request_reboot(ctx: Context) -> None:
    ctx.power = "reboot"


@task(timeout=5)
async def request_power_off(ctx: Context) -> None:
    ctx.power = "power_off"
