"""The event log itself: check the tail at start, seal it, ship it to the audit sinks."""

from __future__ import annotations

import itertools

from errors import TamperedLog
from events import event_hash

from .._context import Context
from .._model import OnError, task

TAIL = 64


@task(timeout=30)
async def verify_tail(ctx: Context) -> None:
    """The last events link up (each ``prev`` is the hash of the one before); the open already checked signatures."""
    end = ctx.log.next_seq()
    events = await ctx.blocking(lambda: list(ctx.log.read(max(0, end - TAIL - 1), end)))
    for before, event in itertools.pairwise(events):
        if event.prev != event_hash(before):
            raise TamperedLog(f"seq {event.seq}: prev does not match the event before it", seq=event.seq,
                              reason="chain")


@task(timeout=30)
async def seal_log(ctx: Context) -> None:
    ctx.sealed = True
    await ctx.blocking(ctx.log.seal, str(ctx.sequence))


@task(timeout=120, on_error=OnError.CONTINUE)
async def ship_audit(ctx: Context) -> None:
    sinks = ctx.config.machine.audit.sinks
    await ctx.blocking(lambda: ctx.ports.sinks.ship(sinks, ctx.log.read()))
