"""The node's way through a boot, on top of the runner: record the boot, initialize, then install or boot
(waiting in maintenance for a config if there is none), and apply configs durably."""

from __future__ import annotations

import asyncio

import config
from events import NODE, Actor, Event, Kind
from fsm import Stage, Trigger

from ._model import SequenceName
from ._runner import Sequencer, SequenceResult
from .tasks.state import CONFIG, PENDING, STAGED

__all__ = ["apply_config", "bring_up", "confirm_config", "record_boot"]


async def record_boot(seq: Sequencer, boot_id: str) -> Event:
    """``boot.started``: which slot and image this boot runs. Durable before anything else happens."""
    running = await asyncio.to_thread(seq.ports.images.running)
    env = await asyncio.to_thread(seq.ports.boot_env.load)
    seq.runtime.image, seq.runtime.boot_env = running, env
    return await seq.record(Kind.BOOT_STARTED, {
        "boot_id": boot_id, "slot": running.slot, "version": running.version, "image_digest": running.digest,
        "boot_number": env.boots if env else 0,
    })  # fmt: skip


async def _needs_install(seq: Sequencer) -> bool:
    cfg = seq.runtime.config
    if cfg is None or cfg.machine.install is None:
        return False
    return seq.runtime.identity is None or not await asyncio.to_thread(seq.ports.disk.is_partitioned)


async def bring_up(seq: Sequencer, *, boot_id: str, actor: Actor = NODE) -> SequenceResult:
    """As Talos's entrypoint: initialize; then install (config asks for it, disk not installed) or boot.

    In maintenance it waits for ``apply_config``; it returns early if another sequence takes the node elsewhere.
    """
    await record_boot(seq, boot_id)
    result = await seq.run(SequenceName.INITIALIZE, actor=actor)
    if not result.ok:
        return result
    while seq.running is not None or (seq.fsm.stage is Stage.MAINTENANCE and seq.runtime.config is None):
        seq.wake.clear()
        await seq.wake.wait()
    if seq.fsm.stage not in (Stage.BOOTING, Stage.MAINTENANCE):
        return result
    if await _needs_install(seq):
        return await seq.run(SequenceName.INSTALL, actor=actor)
    if seq.fsm.stage is Stage.MAINTENANCE:
        await asyncio.wrap_future(seq.fsm.fire(Trigger.CONFIGURED, actor=actor).durable)
    return await seq.run(SequenceName.BOOT, actor=actor)


async def apply_config(seq: Sequencer, plan: config.ApplyPlan, *, actor: Actor) -> Event | None:
    """Carry out a plan from ``config.plan_apply``: persist, record durably, then make it active.

    Returns the ``config.applied`` (or ``config.staged``) event, or None for a dry run or a no-op. A plan that
    needs a reboot is persisted here; asking for the reboot is the caller's part.
    """
    if plan.dry_run or plan.action is config.Action.NONE:
        return None
    disk, rt = seq.ports.disk, seq.runtime
    # In maintenance on an empty disk there is no STATE yet: the install sequence persists the config.
    persist = seq.fsm.stage is not Stage.MAINTENANCE or await asyncio.to_thread(disk.is_partitioned)
    writes: list[tuple[str, bytes | None]] = []
    if persist and plan.persisted is not None and plan.persisted != rt.persisted:
        writes.append((CONFIG, config.dump_yaml(plan.persisted).encode()))
    if persist and plan.staged != rt.staged:
        writes.append((STAGED, None if plan.staged is None else config.dump_yaml(plan.staged).encode()))
    kind = Kind.CONFIG_STAGED if plan.action is config.Action.STAGE else Kind.CONFIG_APPLIED
    event = await _persisted(seq, writes, kind, plan.event_payload(), actor)
    live = plan.action in (config.Action.LIVE, config.Action.TRY) and seq.fsm.stage is Stage.RUNNING
    network_changed = any(c.path.startswith("machine.network") for c in plan.changes)
    rt.config, rt.persisted, rt.staged = plan.active, plan.persisted, plan.staged
    if live and network_changed and plan.active is not None:
        net = plan.active.machine.network
        await asyncio.to_thread(seq.ports.network.configure, net.interfaces)
        if net.hostname:
            await asyncio.to_thread(seq.ports.network.set_hostname, net.hostname)
        await asyncio.to_thread(seq.ports.network.set_resolvers, net.nameservers)
    seq.wake.set()
    return event


async def confirm_config(seq: Sequencer, plan: config.ApplyPlan, *, actor: Actor) -> Event:
    """Keep the config on trial (a plan from ``config.confirm_try``): persisted, and ``config.confirmed``."""
    writes: list[tuple[str, bytes | None]] = []
    if plan.persisted is not None:
        writes.append((CONFIG, config.dump_yaml(plan.persisted).encode()))
    event = await _persisted(seq, writes, Kind.CONFIG_CONFIRMED, {"digest": plan.digest}, actor)
    seq.runtime.persisted = plan.persisted
    return event


async def _persisted(seq: Sequencer, writes: list[tuple[str, bytes | None]], kind: str, payload: dict[str, object],
                     actor: Actor) -> Event:
    """Record ``kind`` with the files ``writes`` names (None: remove it) in STATE, two-phase, so that a crash leaves
    the config and its event both there or both absent: the new files go to ``*.pending`` first, the event is made
    durable, then the pending files take their place. A boot that finds a pending file keeps it only if the log
    holds its event (``tasks.state.settle_pending``)."""
    disk = seq.ports.disk
    for name, data in writes:
        if data is not None:
            await asyncio.to_thread(disk.write, "STATE", name + PENDING, data)
    event = await seq.record(kind, payload, actor)
    for name, data in writes:
        if data is None:
            await asyncio.to_thread(disk.remove, "STATE", name)
        else:
            await asyncio.to_thread(disk.write, "STATE", name, data)
            await asyncio.to_thread(disk.remove, "STATE", name + PENDING)
    return event
