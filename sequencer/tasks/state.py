"""STATE: the machine config and the node's identity."""

from __future__ import annotations

import config
from errors import InvalidConfig
from events import Kind, read_payload
from events.payloads import ConfigApplied, ConfigConfirmed, ConfigStaged

from .._context import Context
from .._model import OnError, task

CONFIG = "config.yaml"
STAGED = "staged.yaml"
PENDING = ".pending"
SETTLE_WINDOW = 512  # an interrupted apply's event is among the last events of the log
_CONFIG_KINDS = frozenset({Kind.CONFIG_APPLIED, Kind.CONFIG_STAGED, Kind.CONFIG_CONFIRMED})


async def settle_pending(ctx: Context) -> None:
    """Finish or drop an apply that a crash interrupted: a pending file whose ``config.*`` event is in the log
    takes its place; one whose event never became durable is removed, as the apply never happened."""
    disk = ctx.ports.disk
    end = ctx.log.next_seq()
    recorded: set[str] | None = None
    for name in (CONFIG, STAGED):
        pending = await ctx.blocking(disk.read, "STATE", name + PENDING)
        if pending is None:
            continue
        if recorded is None:
            tail = await ctx.blocking(lambda: list(ctx.log.read(max(0, end - SETTLE_WINDOW), end)))
            recorded = {str(p.digest) for e in tail if e.kind in _CONFIG_KINDS
                        and isinstance(p := read_payload(e), ConfigApplied | ConfigStaged | ConfigConfirmed)}
        try:
            keep = config.digest(config.load(pending, name=f"STATE/{name}{PENDING}")) in recorded
        except InvalidConfig:
            keep = False
        if keep:
            await ctx.blocking(disk.write, "STATE", name, pending)
        await ctx.blocking(disk.remove, "STATE", name + PENDING)


@task(timeout=10)
async def load_identity(ctx: Context) -> None:
    ctx.runtime.identity = await ctx.blocking(ctx.ports.identity.load)


# A config that does not load is reported (task.failed, every problem with its path) and the node goes to
# maintenance to be given a good one, instead of failing the boot and looping.
@task(timeout=10, on_error=OnError.CONTINUE)
async def load_config(ctx: Context) -> None:
    """Load the persisted config; a staged one takes its place (and is recorded as applied)."""
    disk = ctx.ports.disk
    await settle_pending(ctx)
    raw = await ctx.blocking(disk.read, "STATE", CONFIG)
    staged_raw = await ctx.blocking(disk.read, "STATE", STAGED)
    persisted = config.load(raw, name=f"STATE/{CONFIG}") if raw is not None else None
    staged = config.load(staged_raw, name=f"STATE/{STAGED}") if staged_raw is not None else None
    active = config.boot_config(persisted, staged)
    if staged is not None:
        await ctx.blocking(disk.write, "STATE", CONFIG, staged_raw)
        await ctx.blocking(disk.remove, "STATE", STAGED)
        ctx.emit(Kind.CONFIG_APPLIED, {"mode": "staged", "action": "boot", "digest": config.digest(staged),
                                       "changes": [c.to_dict() for c in config.diff(persisted, staged)]})
    ctx.runtime.config = ctx.runtime.persisted = active
    ctx.runtime.staged = None


@task(timeout=10)
async def write_config(ctx: Context) -> None:
    data = config.dump_yaml(ctx.config).encode()
    await ctx.blocking(ctx.ports.disk.write, "STATE", CONFIG, data)
    ctx.runtime.persisted = ctx.config


@task(timeout=30)
async def create_identity(ctx: Context) -> None:
    ctx.runtime.identity = await ctx.blocking(ctx.ports.identity.create, ctx.config)
