"""Network: links (MTU, addresses, routes), hostname, resolvers, as the machine config says."""

from __future__ import annotations

from .._context import Context
from .._model import task


@task(timeout=30)
async def configure_links(ctx: Context) -> None:
    await ctx.blocking(ctx.ports.network.configure, ctx.config.machine.network.interfaces)


@task(timeout=10)
async def set_hostname(ctx: Context) -> None:
    hostname = ctx.config.machine.network.hostname
    if hostname:
        await ctx.blocking(ctx.ports.network.set_hostname, hostname)


@task(timeout=10)
async def set_resolvers(ctx: Context) -> None:
    servers = ctx.config.machine.network.nameservers
    if servers:
        await ctx.blocking(ctx.ports.network.set_resolvers, servers)
