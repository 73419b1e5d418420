"""The node's application service: every rule about what a command may do and what it records, over the sequencer
(the way eventsourcing's ``Application`` sits over its domain). No I/O of its own: it reaches disks, images and the
cluster only through ports, so the tests run it in memory.

- ``apply_config``: parse (two at a time at most), check the install disk in maintenance, plan (``config``),
  persist two-phase and record, reboot when the plan says so, and a ``try`` reverts after its timeout unless the
  same config is applied again in another mode, which confirms it.
- ``request``: record ``api.request``, then the pre-checks in this order, each a recorded ``api.refused`` with the
  error's own code: the upgrade image is verified (a bad image takes no cluster lock), the cluster's quorum and
  upgrade lock (unless forced), a reset that would destroy unshipped events, a rollback with no good slot to go
  back to; then the sequence starts (a refusal by the runner is recorded too).
- ``status``: the fold of the log, the running sequence and this boot, as one record.
"""

from __future__ import annotations

import asyncio
import json

import msgspec

import config
from boot import Slot, rollback
from errors import GravenError, InvalidRequest, NotFound
from events import Actor, Event, EventLog, Kind, NodeState, replay_raw
from events.payloads import api_refused
from fsm import NodeFSM, Stage
from sequencer import RebootRequest, SequenceName, Sequencer, apply_config, confirm_config

from ._ports import BootFacts, Cluster, Host, NetworkView, NoCluster, NoNetworkView
from ._records import (
    WIPE_ALL,
    Accepted,
    Applied,
    ApplyConfig,
    Command,
    Fallback,
    Reset,
    Rollback,
    RunningSequence,
    SequenceRequest,
    Status,
    StatusDetails,
    Upgrade,
)

__all__ = ["NodeService", "node_name"]

PARSE_AT_ONCE = 2  # the loader's limits bound each parse; this bounds how many run at the same time
CONFIRMED = "confirmed the config on trial: it is kept and persisted"


def node_name(cfg: config.MachineConfig | None) -> str:
    if cfg is None:
        return "graven"
    return cfg.machine.network.hostname or cfg.cluster.name or "graven"


class NodeService:
    def __init__(self, seq: Sequencer, boot: BootFacts, host: Host, *, cluster: Cluster | None = None,
                 network: NetworkView | None = None) -> None:
        self.seq = seq
        self.boot = boot
        self.host = host
        self.cluster: Cluster = cluster or NoCluster()
        self.network: NetworkView = network or NoNetworkView()
        self.reset: Reset | None = None  # the last reset accepted: the node's stop and wipe read how
        self._parsing = asyncio.Semaphore(PARSE_AT_ONCE)
        self._try_task: asyncio.Task[None] | None = None
        self._state = NodeState()

    @property
    def log(self) -> EventLog:
        return self.seq.log

    @property
    def fsm(self) -> NodeFSM:
        return self.seq.fsm

    @property
    def machine_config(self) -> config.MachineConfig | None:
        return self.seq.runtime.config

    @property
    def maintenance(self) -> bool:
        return self.fsm.stage is Stage.MAINTENANCE

    def forget_log(self) -> None:
        """The log was replaced (a sandbox node took its key): fold the new one from its start."""
        self._state = NodeState()

    # -- config ------------------------------------------------------------------------------------------------
    async def apply_config(self, cmd: ApplyConfig, actor: Actor) -> Applied:
        async with self._parsing:  # off the event loop, a bounded number at a time
            new = await asyncio.to_thread(config.load, cmd.data, name="the applied config")
        install = new.machine.install
        if self.maintenance and install is not None:  # refused before anything is kept or recorded
            await asyncio.to_thread(self.seq.ports.disk.check_install_disk, install.disk)
        rt = self.seq.runtime
        if not cmd.dry_run and cmd.mode is not config.ApplyMode.TRY and self.trying(config.digest(new)):
            return await self._confirm_try(actor)
        plan = config.plan_apply(rt.config, rt.persisted, rt.staged, new, cmd.mode, dry_run=cmd.dry_run,
                                 try_timeout=cmd.try_timeout)
        seq = 0
        if not cmd.dry_run:
            if self.maintenance and install is None and not self.host.log_durable():
                # No install step to come: this sandbox node runs from its folders, so it takes its identity now.
                await asyncio.to_thread(self.host.adopt, new)
            event = await apply_config(self.seq, plan, actor=actor)
            seq = event.seq if event is not None else 0
            if plan.reboot and self.fsm.stage is Stage.RUNNING:
                self.seq.request(SequenceName.REBOOT, RebootRequest(), actor=actor)
            if plan.action is config.Action.TRY and plan.revert_to is not None:
                self._schedule_revert(plan, actor)
            await self.host.config_changed()
        return Applied(mode=plan.mode, changes=plan.changes, digest=plan.digest, seq=seq,
                       reboot_required=plan.reboot, warnings=plan.warnings)

    def trying(self, digest: str) -> bool:
        """Whether a ``try`` of exactly this config is running and not yet confirmed."""
        cfg = self.seq.runtime.config
        return (self._try_task is not None and not self._try_task.done() and cfg is not None
                and config.digest(cfg) == digest)

    async def _confirm_try(self, actor: Actor) -> Applied:
        """Applying the tried config again (in any mode but try) confirms it: it is persisted and kept."""
        rt = self.seq.runtime
        assert self._try_task is not None and rt.config is not None
        self._try_task.cancel()
        plan = config.confirm_try(rt.config, rt.persisted, rt.staged)
        event = await confirm_config(self.seq, plan, actor=actor)
        return Applied(mode=config.ApplyMode.NO_REBOOT, changes=(), digest=plan.digest, seq=event.seq,
                       warnings=(CONFIRMED,))

    def _schedule_revert(self, plan: config.ApplyPlan, actor: Actor) -> None:
        if self._try_task is not None:
            self._try_task.cancel()
        self._try_task = asyncio.create_task(self._revert_later(plan, actor))

    async def _revert_later(self, plan: config.ApplyPlan, actor: Actor) -> None:
        tried = plan.digest
        await asyncio.sleep(plan.try_timeout or config.DEFAULT_TRY_TIMEOUT)
        rt = self.seq.runtime
        if rt.config is None or config.digest(rt.config) != tried or plan.revert_to is None:
            return
        back = config.revert_try(rt.config, rt.persisted, rt.staged, plan.revert_to)
        rt.config = back.active
        await self.seq.record(Kind.CONFIG_REVERTED, {"digest": back.digest, "reason": "try timed out",
                                                     "tried": tried}, actor)

    def config_text(self, redact: bool) -> tuple[bytes, str]:
        """The active config as YAML (secrets as digests when ``redact``) and its digest."""
        cfg = self.machine_config
        if cfg is None:
            raise NotFound("this node has no machine config (maintenance mode)")
        shown = config.redact(cfg) if redact else cfg
        return config.dump_yaml(shown).encode(), config.digest(cfg)

    # -- sequences ---------------------------------------------------------------------------------------------
    async def request(self, cmd: Command, actor: Actor) -> Accepted:
        name = cmd.sequence
        if isinstance(cmd, Reset):
            self.reset = cmd
        event = await self.seq.record(Kind.API_REQUEST, {"method": name.value, "args": cmd.args()}, actor)
        req: SequenceRequest | None
        if isinstance(cmd, Upgrade):  # first: a bad image takes no cluster lock
            req = cmd.request(await self._verified(name, cmd.source, actor, event.seq))
        else:
            req = cmd.request()
        if not cmd.force:
            await self.cluster.check_quorum(name, actor, event.seq)
            if name is SequenceName.UPGRADE:
                await self.cluster.take_upgrade_lock(actor, event.seq)
        if isinstance(cmd, Reset):
            await self._refuse_if(self._unshipped(cmd), name, actor, event.seq)
        if isinstance(cmd, Rollback):
            await self._refuse_if(await self._no_rollback(), name, actor, event.seq)
        try:
            self.seq.request(name, req, actor=actor)
        except GravenError as exc:
            await self._refused(name, exc, actor, event.seq)
            raise
        return Accepted(sequence=name, seq=event.seq)

    async def _refused(self, name: SequenceName, exc: GravenError, actor: Actor, request_seq: int) -> Event:
        return await self.seq.record(Kind.API_REFUSED, api_refused(name.value, request_seq, exc), actor)

    async def _refuse_if(self, exc: GravenError | None, name: SequenceName, actor: Actor, request_seq: int) -> None:
        if exc is not None:
            await self._refused(name, exc, actor, request_seq)
            raise exc

    async def _verified(self, name: SequenceName, source: str, actor: Actor, request_seq: int) -> str:
        """An upgrade's image is verified (format, size, digest, signature, trusted key) before the request is
        accepted: a bad one is refused at once. Returns the verified file (an https image is fetched once, here)."""
        keys = self.machine_config.machine.trusted_image_keys() if self.machine_config is not None else ()
        try:
            verified = await asyncio.to_thread(self.seq.ports.images.verify, source, keys)
        except GravenError as exc:
            await self._refused(name, exc, actor, request_seq)
            raise
        path = getattr(verified, "path", None)  # a file image has one; the in-memory catalog's has not
        return str(path) if path is not None else source

    def _unshipped(self, cmd: Reset) -> GravenError | None:
        """A reset that wipes EPHEMERAL destroys the log: refused unless it ships to a sink first, or is forced."""
        if "EPHEMERAL" not in (cmd.wipe or WIPE_ALL) or cmd.force:
            return None
        if cmd.graceful and self.machine_config is not None and self.machine_config.machine.audit.sinks:
            return None
        return InvalidRequest("reset would wipe EPHEMERAL and destroy events that were never shipped; configure "
                              "machine.audit.sinks and reset with --graceful, or pass --force")

    async def _no_rollback(self) -> GravenError | None:
        """A rollback needs the other slot to have booted good: refused at once, not after acceptance."""
        env = await asyncio.to_thread(self.seq.ports.boot_env.load)
        running = self.boot.slot
        try:
            rollback(env, Slot.parse(running) if running else None)  # the rule the rollback itself follows
        except NotFound as exc:
            return exc
        return None

    def boot_trace(self, boot: int, boot_id: str, fmt: str) -> bytes:
        """Boot ``boot`` (an index; -1 the last) or ``boot_id`` of the log as a trace: ``json``, ``chrome`` or
        ``svg``."""
        # Tracing is for the odd API call, not for every boot: import it then.
        from sequencer import render_chrome, render_json, render_svg
        from sequencer.trace import trace_stored

        trace = trace_stored(self.log.read_raw, index=None if boot < 0 else boot, boot_id=boot_id or None)
        if fmt == "svg":
            return render_svg(trace).encode()
        return json.dumps(render_chrome(trace) if fmt == "chrome" else render_json(trace)).encode()

    # -- status ------------------------------------------------------------------------------------------------
    def live_state(self) -> NodeState:
        """The fold of the node's own log, brought up to date (from its stored bytes: the first status of a long
        log's node folds it all, and replay_raw builds no Event for most of them)."""
        state = self._state
        self._state = state = replay_raw((raw for _, raw in self.log.read_raw(state.seq + 1)), state)
        return state

    def status(self) -> Status:
        state = self.live_state()
        run = self.seq.running
        last = state.boots[-1] if state.boots else None
        committed = last is not None and last.boot_id == self.boot.boot_id and last.outcome == "committed"
        sequence = None
        if run is not None:  # the fold knows where it started once its sequence.started is in the log
            started = state.sequence.started_seq if state.sequence is not None and \
                state.sequence.name == run.name.value else 0
            sequence = RunningSequence(name=run.name, actor=str(run.actor), started_seq=started)
        f = state.last_fallback
        fallback = Fallback(from_slot=str(f.get("from_slot") or ""), to_slot=str(f.get("to_slot") or ""),
                            reason=str(f.get("reason") or ""), seq=_int(f.get("seq"))) if f else None
        return Status(
            stage=self.fsm.stage.value, ready=self.fsm.stage is Stage.RUNNING and committed, slot=self.boot.slot,
            version=self.boot.version, boot_id=self.boot.boot_id, log_next_seq=self.log.next_seq(),
            config_digest=state.config_digest, staged_config_digest=state.staged_config_digest,
            node=node_name(self.machine_config), sequence=sequence, last_fallback=fallback,
            details=self._details(state))

    def _details(self, state: NodeState) -> StatusDetails:
        drift, drift_error = None, None
        if self.machine_config is not None:
            try:
                drift = self.network.drift(self.machine_config)
            except GravenError as exc:
                drift_error = exc.message
        slots: dict[str, dict[str, object]] = {k: msgspec.to_builtins(v) for k, v in state.slots.items()}
        return StatusDetails(slots=slots, last_sequence=state.last_sequence,
                             durable_log=self.host.log_durable(), boots=len(state.boots), try_config=state.try_config,
                             network_platform=self.network.platform, drift=drift, drift_error=drift_error)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
