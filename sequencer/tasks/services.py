"""The agent's services: start them, wait until they are healthy, stop them in reverse order."""

from __future__ import annotations

from errors import Unavailable

from .._context import Context
from .._model import OnError, task

MAINTENANCE = "maintenance-api"  # insecure apply-config only, as Talos's maintenance service
API = "api"
HEALTH = "health"
ETCD = "etcd"
POLL = 0.02


async def _start(ctx: Context, name: str) -> None:
    await ctx.blocking(ctx.ports.services.start, name)
    ctx.runtime.services.append(name)


@task(timeout=30)
async def start_maintenance_api(ctx: Context) -> None:
    await _start(ctx, MAINTENANCE)


@task(timeout=30)
async def start_api(ctx: Context) -> None:
    if MAINTENANCE in ctx.runtime.services:
        await ctx.blocking(ctx.ports.services.stop, MAINTENANCE)
        ctx.runtime.services.remove(MAINTENANCE)
    await _start(ctx, API)


@task(timeout=30)
async def start_health(ctx: Context) -> None:
    await _start(ctx, HEALTH)


@task(timeout=30, on_error=OnError.CONTINUE)
async def start_etcd(ctx: Context) -> None:
    """Controlplane nodes with ``cluster.etcd.ca``: etcd, which then waits for bootstrap or joins on its own. Its
    health does not hold the boot (the cluster may not exist yet); an etcd that cannot start fails this task
    with the reason and the boot goes on."""
    cfg = ctx.runtime.config
    if cfg is None or cfg.machine.type != "controlplane" or cfg.cluster.etcd is None:
        return
    await _start(ctx, ETCD)


@task(timeout=120)
async def wait_healthy(ctx: Context) -> None:
    """Every started service reports healthy; polls until then, the task's timeout or a cancel."""
    delay = POLL
    while True:
        sick = [n for n in ctx.runtime.services if not await ctx.blocking(ctx.ports.services.healthy, n)]
        if not sick:
            return
        ctx.cancel.check()
        await ctx.cancel.sleep(delay)
        delay = min(delay * 2, 2.0)


@task(timeout=60, on_error=OnError.CONTINUE)
async def stop_services(ctx: Context) -> None:
    """Stop in reverse start order; one that fails to stop is reported and does not keep the others up."""
    failed: list[str] = []
    for name in reversed(list(ctx.runtime.services)):
        try:
            await ctx.blocking(ctx.ports.services.stop, name)
        except Exception:
            failed.append(name)
            continue
        ctx.runtime.services.remove(name)
    if failed:
        raise Unavailable(f"services did not stop: {', '.join(failed)}", services=failed)
