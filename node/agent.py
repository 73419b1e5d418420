"""The agent: one process per boot. It opens the log, runs initialize and boot (or install), serves the API,
and exits when a sequence powers the machine off or reboots it.

Exit codes (read by the supervisor): 0 power off, 10 reboot, 20 the boot failed before it was committed;
anything else is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import config
import image
from api._memory import tune_allocator
from api._pki import check_roles, issue_client_certificate
from api._server import Server
from api._tls import MaintenanceCredentials, ServingCredentials
from errors import GravenError, InvalidRequest, NotFound, Unavailable
from events import Actor, Kind, NodeState, SystemClock, fold
from fsm import NodeFSM, Stage
from pki import Ed25519Signer, load_certificate, load_private_key
from sequencer import (
    Ports,
    RebootRequest,
    ResetRequest,
    Runtime,
    SequenceName,
    Sequencer,
    ShutdownRequest,
    UpgradeRequest,
    apply_config,
    bring_up,
)
from sequencer.ports import RunningImage, other_slot
from sequencer.tasks.state import CONFIG, PENDING
from storage import DiskBase, LmdbEventLog, LogRing

from . import _pid1, _resources
from ._disk import open_disk
from ._etcd_node import QUORUM_SEQUENCES, EtcdNode, settings_for
from ._identity import FileIdentity, node_name
from ._kmsg import kernel_records, own_kernel
from ._log import NodeLog
from ._logging import AGENT, FileFollower, setup_agent_logging
from ._metrics_service import MetricsService
from ._network import NetlinkNetwork, plan_rows, select_network
from ._ports import BootEnvPort, DirSinks, DiskPort, ImagesPort, PlanNetwork
from ._wipe import finish_pending_wipe, request_wipe

if TYPE_CHECKING:
    from ._metrics import NodeMetrics

__all__ = ["EXIT_BOOT_FAILED", "EXIT_POWER_OFF", "EXIT_REBOOT", "Agent", "BootInfo"]

EXIT_POWER_OFF, EXIT_REBOOT, EXIT_BOOT_FAILED, EXIT_LOG_BROKEN = 0, 10, 20, 30
BOOTLOADER = Actor("bootloader")
DEFAULT_LISTEN = "127.0.0.1:50000"


@dataclass
class BootInfo:
    """What the supervisor tells the agent it started (``GRAVEN_BOOT``, a JSON file); defaults for a bare run."""

    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    slot: str | None = None
    digest: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)  # the bootloader's decisions, to log
    source: Path | None = None  # the GRAVEN_BOOT file

    @classmethod
    def from_env(cls) -> BootInfo:
        path = os.environ.get("GRAVEN_BOOT")
        if not path:
            return cls()
        data = json.loads(Path(path).read_text())
        return cls(boot_id=data.get("boot_id") or uuid.uuid4().hex, slot=data.get("slot"),
                   digest=data.get("digest", ""), events=list(data.get("events", [])), source=Path(path))

    def logged(self) -> None:
        """The events are in the log: remove the file, which tells the supervisor not to hand them over again."""
        if self.source is not None:
            with contextlib.suppress(OSError):
                self.source.unlink()


class Agent:
    def __init__(self, disk: DiskBase, *, listen: str = DEFAULT_LISTEN, boot: BootInfo | None = None,
                 health_timeout: float | None = None, logs: LogRing | None = None) -> None:
        self.disk = disk
        self.logs = logs or LogRing()
        self.listen = listen
        self.boot = boot or BootInfo()
        self.health_timeout = health_timeout  # services not healthy by then fail the boot (None: the task's own)
        self._health_since: float | None = None
        self._reset_args: dict[str, Any] = {}
        self.exit_code = EXIT_POWER_OFF
        self.identity = FileIdentity(lambda: disk.path("STATE"), self._promote)
        self._servers: dict[str, Server] = {}
        self._fault = image.fault_point()
        self._state = NodeState()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._try_task: asyncio.Task[None] | None = None
        self._parsing = asyncio.Semaphore(2)
        self.log = self._open_log()
        if self.log.durable:
            self.logs.attach(self._logs_dir())
        self.version_string = image.running_version()
        self._metrics_service = MetricsService(self._make_metrics, self._emit)
        self._followers: dict[str, FileFollower] = {}  # service -> its log file copied into the ring
        self.etcd = EtcdNode(self._emit, lambda: settings_for(self._config, ephemeral=self.spool_dir.parent,
                                                              listen=self.listen))

    # -- the log and identity ------------------------------------------------------------------------------
    def _open_log(self) -> NodeLog:
        found = self.identity.signer() if self.disk.is_partitioned() else None
        if found is None:
            return NodeLog(boot_id=self.boot.boot_id, node="graven", clock=SystemClock())
        signer, cert_der = found
        durable = LmdbEventLog(self._log_dir(), signer, boot_id=self.boot.boot_id, cert_der=cert_der,
                               origin=f"graven/{_cert_cn(cert_der)}")
        return NodeLog(boot_id=self.boot.boot_id, node=_cert_cn(cert_der), durable=durable)

    def _log_dir(self) -> Path:
        return self.disk.path("EPHEMERAL") / "log"

    def _logs_dir(self) -> Path:
        return self.disk.path("EPHEMERAL") / "logs"

    def _promote(self, signer: Ed25519Signer, cert_der: bytes, name: str) -> None:
        every = self._config.machine.audit.checkpoint_every if self._config else 1024
        self.log.promote(self._log_dir(), signer, cert_der, origin=f"graven/{name}", checkpoint_every=every)
        self.logs.attach(self._logs_dir())
        self._state = NodeState()

    @property
    def _config(self) -> config.MachineConfig | None:
        seq = getattr(self, "seq", None)
        return seq.runtime.config if seq is not None else None

    # -- running -------------------------------------------------------------------------------------------------
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        broken = getattr(self.log.backend, "broken", None)
        if broken is not None:
            AGENT.error(f"the event log is read-only: {broken.message}")
            return EXIT_LOG_BROKEN
        sealed = self.log.seal_tail()
        if sealed is not None:
            AGENT.warning(f"the previous boot ended without sealing its log: sealed seq 0..{sealed.seq - 1} "
                  f"with a checkpoint at seq {sealed.seq}")
        for ev in self.boot.events:
            self.log.submit(ev["kind"], ev.get("payload", {}), BOOTLOADER)
        if self.boot.events:
            self.log.flush()
        self.boot.logged()
        self.fsm = NodeFSM(self.log)
        running = RunningImage(self.boot.slot, self.version_string, self.boot.digest)
        net = select_network(self._emit, resolv_conf=lambda: self._disk_file("STATE", "resolv.conf"),
                             record=lambda: self._disk_file("EPHEMERAL", "network.json"))
        AGENT.info(f"network: {net.reason}")
        ports = Ports(
            boot_env=BootEnvPort(self.disk), disk=DiskPort(self.disk, defer_wipe=self._defer_wipe),
            images=ImagesPort(lambda: self.spool_dir, running),
            network=net.port, services=_Services(self), power=_Power(self),
            clock=SystemClock(), identity=self.identity,
            sinks=DirSinks(self._ca_pem, self._emit),
        )
        self.planned_network, self.network_platform = ports.network, net.platform
        self.seq = Sequencer(self.log, self.fsm, ports, runtime=Runtime())
        if self._fault == "oom":
            await _pid1.fault_oom(AGENT.warning)
        if self._fault == "boot-crash":
            self.log.flush()
            AGENT.warning("fault point boot-crash: crashing early in boot (test image)")
            return 70
        self._loop.add_signal_handler(signal.SIGTERM, self._sigterm)
        up = asyncio.create_task(bring_up(self.seq, boot_id=self.boot.boot_id))
        up.add_done_callback(self._brought_up)
        await self._stopped.wait()
        await self._shutdown_servers()
        self.log.close()
        self.logs.close()
        return self.exit_code

    def _brought_up(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        result = None if exc else task.result()
        failed_boot = exc is not None or (result is not None and not result.ok and
                                          result.sequence in (SequenceName.BOOT, SequenceName.INITIALIZE))
        if failed_boot and self.seq.running is None:
            why = exc or (result.error if result else None)
            AGENT.error(f"boot failed: {why}")
            with contextlib.suppress(GravenError):
                self.log.seal("boot failed")
            self.exit_code = EXIT_BOOT_FAILED
            self._stopped.set()

    def _sigterm(self) -> None:
        try:
            self.seq.request(SequenceName.SHUTDOWN, ShutdownRequest(), actor=Actor("signal:SIGTERM"))
        except GravenError as exc:
            AGENT.warning(f"SIGTERM: {exc}")

    def power(self, code: int) -> None:
        """Called by the Power port once the sequence's events are durable: end the process with ``code``."""
        self.exit_code = code
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stopped.set)

    # -- services ---------------------------------------------------------------------------------------------
    def _sans(self) -> list[str]:
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        sans = [host, "127.0.0.1", "localhost"]
        if self._config:
            sans += list(self._config.machine.cert_sans)
        return [s for s in dict.fromkeys(sans) if s and s != "0.0.0.0"]

    async def start_service(self, name: str) -> None:
        if name == "maintenance-api":
            creds = MaintenanceCredentials("graven", self._sans())
            server = Server(self, self.listen, creds.credentials(), observe=self._metrics_service.observe_call)
            await server.start()
            AGENT.info(f"maintenance mode on {self.listen}; server certificate sha256 {creds.fingerprint}\n"
                  f"  apply a config: gravenctl apply-config --insecure -e {self.listen} -f controlplane.yaml")
        elif name == "api":
            cfg = self._config
            if cfg is None:
                raise Unavailable("the API needs a machine config")
            ca_key = cfg.machine.ca.key_pem()
            if ca_key is None:
                raise InvalidRequest("machine.ca.key is needed to issue the node's serving certificate")
            creds2 = ServingCredentials(load_certificate(cfg.machine.ca.crt_pem()), load_private_key(ca_key),
                                        node=node_name(cfg), sans=self._sans())
            server = Server(self, self.listen, creds2.credentials(), observe=self._metrics_service.observe_call)
            await server.start()
            AGENT.info(f"serving the API with mutual TLS on {self.listen}")
        elif name == "etcd":
            await self.etcd.start()
            if self.etcd.service is not None:
                self._followers["etcd"] = FileFollower(self.etcd.service.log_path, "etcd", self.logs)
            return
        else:
            return
        self._servers[name] = server
        if name == "api":
            await self._sync_metrics()

    async def stop_service(self, name: str) -> None:
        follower = self._followers.pop(name, None)
        if follower is not None:
            follower.stop()
        if name == "etcd":  # a graceful reset leaves the cluster first
            await self.etcd.stop("the node stops its services", leave=self.fsm.stage is Stage.RESETTING
                                 and bool(self._reset_args.get("graceful")))
        server = self._servers.pop(name, None)
        if name == "api":
            await self._sync_metrics()
        if server is not None:
            await server.stop(0.5)

    async def _sync_metrics(self) -> None:
        served = self._config if "api" in self._servers else None
        await self._metrics_service.sync(served, host=self.listen.rsplit(":", 1)[0].strip("[]"), sans=self._sans(),
                                         quiet=self._stopped.is_set())

    def _make_metrics(self) -> NodeMetrics:
        """The metrics, made when the config first enables them: a node without them never imports
        prometheus_client (~3 MiB); what the log holds is folded from seq 0 at the first scrape anyway."""
        from ._metrics import NodeMetrics, NodeView

        def view() -> NodeView:
            fsm = getattr(self, "fsm", None)
            return NodeView(stage=fsm.stage.value if fsm is not None else Stage.BOOTING.value,
                            boot_id=self.boot.boot_id, next_seq=self.log.next_seq(), log_bytes=self.log.disk_bytes())

        metrics = NodeMetrics(read_raw=self.log.read_raw, view=view)
        metrics.set_image(version=self.version_string, slot=self.boot.slot or "", digest=self.boot.digest)
        self.log.on_durable = metrics.observe_append
        return metrics

    def healthy(self, name: str) -> bool:
        if name == "health" and self._fault == "health-fail":
            raise Unavailable("health check failed: fault point health-fail (test image)")
        ok = name not in ("api", "maintenance-api") or name in self._servers
        if not ok and self.health_timeout is not None:
            now = time.monotonic()
            self._health_since = self._health_since or now
            if now - self._health_since > self.health_timeout:
                raise Unavailable(f"service {name} is not healthy after {self.health_timeout:g} s", service=name)
        return ok

    def _defer_wipe(self, labels: Sequence[str]) -> None:
        """The reset's wipe of EPHEMERAL, done once the log is closed (``node._wipe``); a graceful reset with
        audit sinks ships the final, sealed log there first."""
        cfg = self._config
        graceful = bool(self._reset_args.get("graceful"))
        sinks = list(cfg.machine.audit.sinks) if cfg is not None and graceful else []
        request_wipe(self.disk, labels, reason="reset", sinks=sinks, ca_pem=self._ca_pem())

    async def _shutdown_servers(self) -> None:
        for name in list(self._servers):
            await self.stop_service(name)

    # -- NodeApi ------------------------------------------------------------------------------------------------
    @property
    def maintenance(self) -> bool:
        return self.fsm.stage is Stage.MAINTENANCE

    @property
    def spool_dir(self) -> Path:
        base = self.disk.path("EPHEMERAL") if self.disk.is_partitioned() else self.disk.path("STATE").parent
        return base / "spool"

    def _disk_file(self, label: str, name: str) -> Path | None:
        return self.disk.path(label) / name if self.disk.is_partitioned() else None

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.log.submit(kind, payload)

    def _ca_pem(self) -> bytes | None:
        cfg = self._config
        return cfg.machine.ca.crt_pem() if cfg else None

    def live_state(self) -> NodeState:
        """The fold of the node's own log, brought up to date: the live state the API reports."""
        state = self._state
        for event in self.log.read(state.seq + 1):
            state = fold(state, event)
        self._state = state
        return state

    def version(self) -> dict[str, str]:
        cfg = self._config
        return {"version": self.version_string, "image_digest": self.boot.digest, "slot": self.boot.slot or "",
                "boot_id": self.boot.boot_id, "node": node_name(cfg) if cfg else "graven", **_resources.about()}

    def resources(self, kind: str) -> list[dict[str, Any]]:
        return _resources.read(kind)

    def status(self) -> dict[str, Any]:
        state = self.live_state()
        run = self.seq.running
        committed = bool(state.boots and state.boots[-1].boot_id == self.boot.boot_id
                         and state.boots[-1].outcome == "committed")
        return {
            "stage": self.fsm.stage.value, "ready": self.fsm.stage is Stage.RUNNING and committed,
            "slot": self.boot.slot, "version": self.version_string, "boot_id": self.boot.boot_id,
            "log_next_seq": self.log.next_seq(), "config_digest": state.config_digest,
            "staged_config_digest": state.staged_config_digest, "node": self.version()["node"],
            "sequence": {"name": run.name.value, "actor": str(run.actor),
                         # the fold knows where it started once its sequence.started is in the log
                         "started_seq": state.sequence.started_seq if state.sequence is not None
                         and state.sequence.name == run.name.value else 0} if run else None,
            "last_fallback": state.last_fallback,
            "details": {"slots": {k: v for k, v in state.to_json()["slots"].items()},
                        "last_sequence": state.last_sequence, "durable_log": self.log.durable,
                        "boots": len(state.boots), "try_config": state.try_config, **self._drift()},
        }

    def _drift(self) -> dict[str, Any]:
        """``drift``: how the live network differs from the config (None where it cannot be read: the sandbox)."""
        port, cfg = getattr(self, "planned_network", None), self._config
        out: dict[str, Any] = {"network_platform": getattr(self, "network_platform", None), "drift": None}
        if isinstance(port, NetlinkNetwork) and cfg is not None:
            try:
                out["drift"] = port.drift(cfg.machine.network)
            except GravenError as exc:
                out["drift_error"] = exc.message
        return out

    async def apply_config(self, data: bytes, mode: str, dry_run: bool, try_timeout: float,
                           actor: Actor) -> dict[str, Any]:
        # off the event loop, one at a time: the loader's limits bound each parse, this bounds how many run
        async with self._parsing:
            new = await asyncio.to_thread(config.load, data, name="the applied config")
        if self.maintenance and new.machine.install is not None:  # refused before anything is kept or recorded
            await asyncio.to_thread(self.seq.ports.disk.check_install_disk, new.machine.install.disk)
        rt = self.seq.runtime
        if not dry_run and mode != "try" and self._trying(config.digest(new)):
            return await self._confirm_try(actor)
        plan = config.plan_apply(rt.config, rt.persisted, rt.staged, new, mode, dry_run=dry_run,
                                 try_timeout=try_timeout)
        seq = 0
        if not dry_run:
            if self.maintenance and new.machine.install is None and not self.log.durable:
                # No install step to come: this sandbox node runs from its folders, so it takes its identity now.
                await asyncio.to_thread(self._adopt_folders, new)
            event = await apply_config(self.seq, plan, actor=actor)
            seq = event.seq if event is not None else 0
            if plan.reboot and self.fsm.stage is Stage.RUNNING:
                self.seq.request(SequenceName.REBOOT, RebootRequest(), actor=actor)
            if plan.action is config.Action.TRY and plan.revert_to is not None:
                self._schedule_revert(plan, actor)
            await self._sync_metrics()
        return {"mode": str(plan.mode), "diff": [c.to_dict() for c in plan.changes], "digest": plan.digest,
                "seq": seq, "reboot_required": plan.reboot, "warnings": list(plan.warnings)}

    def _trying(self, digest: str) -> bool:
        """Whether a ``try`` of exactly this config is running and not yet confirmed."""
        rt = self.seq.runtime
        return (self._try_task is not None and not self._try_task.done() and rt.config is not None
                and config.digest(rt.config) == digest)

    async def _confirm_try(self, actor: Actor) -> dict[str, Any]:
        """Applying the tried config again (in any mode but try) confirms it: it is persisted and kept. Two-phase
        like every config change: pending file, durable ``config.confirmed``, then in place."""
        rt, disk = self.seq.runtime, self.seq.ports.disk
        assert self._try_task is not None and rt.config is not None
        self._try_task.cancel()
        plan = config.confirm_try(rt.config, rt.persisted, rt.staged)
        data = config.dump_yaml(plan.persisted).encode() if plan.persisted is not None else None
        if data is not None:
            await asyncio.to_thread(disk.write, "STATE", CONFIG + PENDING, data)
        event = await self.seq.record(Kind.CONFIG_CONFIRMED, {"digest": plan.digest}, actor)
        if data is not None:
            await asyncio.to_thread(disk.write, "STATE", CONFIG, data)
            await asyncio.to_thread(disk.remove, "STATE", CONFIG + PENDING)
        rt.persisted = plan.persisted
        return {"mode": "no-reboot", "diff": [], "digest": plan.digest, "seq": event.seq, "reboot_required": False,
                "warnings": ["confirmed the config on trial: it is kept and persisted"]}

    def _adopt_folders(self, cfg: config.MachineConfig) -> None:
        if not self.disk.is_partitioned():
            self.disk.partition()
        self.identity.create(cfg)

    def _schedule_revert(self, plan: config.ApplyPlan, actor: Actor) -> None:
        if self._try_task is not None:
            self._try_task.cancel()
        tried = plan.digest

        async def revert_later() -> None:
            await asyncio.sleep(plan.try_timeout or config.DEFAULT_TRY_TIMEOUT)
            rt = self.seq.runtime
            if rt.config is None or config.digest(rt.config) != tried or plan.revert_to is None:
                return
            back = config.revert_try(rt.config, rt.persisted, rt.staged, plan.revert_to)
            rt.config = back.active
            await self.seq.record(Kind.CONFIG_REVERTED, {"digest": back.digest, "reason": "try timed out",
                                                         "tried": tried}, actor)

        self._try_task = asyncio.create_task(revert_later())

    def get_config(self, redact: bool) -> tuple[bytes, str]:
        cfg = self._config
        if cfg is None:
            raise NotFound("this node has no machine config (maintenance mode)")
        shown = config.redact(cfg) if redact else cfg
        return config.dump_yaml(shown).encode(), config.digest(cfg)

    async def request(self, sequence: str, args: dict[str, Any], actor: Actor) -> tuple[str, int]:
        name = SequenceName(sequence)
        builders: dict[SequenceName, Any] = {
            SequenceName.UPGRADE: lambda: UpgradeRequest(image=str(args["source"])),
            SequenceName.STAGE_UPGRADE: lambda: UpgradeRequest(image=str(args["source"])),
            SequenceName.RESET: lambda: ResetRequest(graceful=bool(args.get("graceful")),
                                                     reboot=bool(args.get("reboot")),
                                                     wipe=tuple(args.get("wipe") or ("STATE", "EPHEMERAL"))),
            SequenceName.REBOOT: RebootRequest, SequenceName.SHUTDOWN: ShutdownRequest,
        }
        if name is SequenceName.RESET:
            self._reset_args = dict(args)
        event = await self.seq.record(Kind.API_REQUEST, {"method": name.value, "args": _plain(args)}, actor)
        if name in (SequenceName.UPGRADE, SequenceName.STAGE_UPGRADE):  # first: a bad image takes no cluster lock
            args = {**args, "source": await self._check_image(name.value, str(args["source"]), actor, event.seq)}
        if name.value in QUORUM_SEQUENCES and not args.get("force"):
            await self.etcd.check_quorum(name.value, actor, event.seq, self.seq.record)
        if name is SequenceName.UPGRADE and not args.get("force"):
            await self.etcd.take_upgrade_lock(actor, event.seq, self.seq.record)
        if name is SequenceName.RESET:
            await self._check_shipped(args, actor, event.seq)
        if name is SequenceName.ROLLBACK:
            await self._check_rollback(actor, event.seq)
        req: object | None = builders[name]() if name in builders else None
        try:
            self.seq.request(name, req, actor=actor)
        except GravenError as exc:
            await self.seq.record(Kind.API_REFUSED, {"method": name.value, "request_seq": event.seq,
                                                     "reason": exc.message, "code": exc.code.name}, actor)
            raise
        return name.value, event.seq

    async def _check_shipped(self, args: dict[str, Any], actor: Actor, request_seq: int) -> None:
        """A reset that wipes EPHEMERAL destroys the log: refuse unless it ships to a sink first, or is forced."""
        if "EPHEMERAL" not in (args.get("wipe") or ["EPHEMERAL"]) or args.get("force"):
            return
        cfg = self._config
        if args.get("graceful") and cfg is not None and cfg.machine.audit.sinks:
            return
        reason = ("reset would wipe EPHEMERAL and destroy events that were never shipped; configure "
                  "machine.audit.sinks and reset with --graceful, or pass --force")
        await self.seq.record(Kind.API_REFUSED, {"method": "reset", "request_seq": request_seq, "reason": reason,
                                                 "code": "INVALID_REQUEST"}, actor)
        raise InvalidRequest(reason)

    async def _check_image(self, method: str, source: str, actor: Actor, request_seq: int) -> str:
        """An upgrade's image is verified (format, size, digest, signature, trusted key) before the request is
        accepted: a bad one is refused at once, as a signed ``api.refused``. Returns the verified file (an
        https image is fetched once, here)."""
        install = self._config.machine.install if self._config is not None else None
        keys = install.trusted_public_keys() if install is not None else ()
        try:
            verified = await asyncio.to_thread(self.seq.ports.images.verify, source, keys)
        except GravenError as exc:
            await self.seq.record(Kind.API_REFUSED, {"method": method, "request_seq": request_seq,
                                                     "reason": exc.message, "code": exc.code.name}, actor)
            raise
        path = getattr(verified, "path", None)
        return str(path) if path is not None else source

    async def _check_rollback(self, actor: Actor, request_seq: int) -> None:
        """A rollback needs the other slot to have booted good: refuse it at once, not after acceptance."""
        env = await asyncio.to_thread(BootEnvPort(self.disk).load)
        running = self.boot.slot
        reason = None
        if running is None or env is None:
            reason = "this boot runs no slot of the disk (installer or bare agent); nothing to roll back to"
        elif not env.slot(other_slot(running)).good:
            reason = f"slot {other_slot(running)} holds no image that booted good; nothing to roll back to"
        if reason is None:
            return
        await self.seq.record(Kind.API_REFUSED, {"method": "rollback", "request_seq": request_seq,
                                                 "reason": reason, "code": "NOT_FOUND"}, actor)
        raise NotFound(reason)

    async def etcd_action(self, action: str, args: dict[str, Any], actor: Actor, *, manage: bool) -> dict[str, Any]:
        return await self.etcd.action(action, args, actor, manage=manage, record=self.seq.record)

    async def etcd_snapshot(self) -> Path:
        return await self.etcd.snapshot(self.spool_dir)

    async def etcd_recover(self, snapshot: Path, actor: Actor) -> dict[str, Any]:
        return await self.etcd.action("bootstrap", {"recover_from": str(snapshot)}, actor, manage=True,
                                      record=self.seq.record)

    async def record_denied(self, method: str, actor: Actor, reason: str) -> None:
        await self.seq.record(Kind.API_DENIED, {"method": method, "subject": actor.id, "roles": list(actor.roles),
                                                "reason": reason}, actor)

    def kernel_log(self, tail: int | None, follow: bool) -> Generator[bytes | None, None, None]:
        if not own_kernel():
            raise NotFound("this node shares its host's kernel (a process or container machine): it has no kernel "
                           "log of its own; the host's is read on the host (dmesg)")
        return kernel_records(tail=tail, follow=follow)

    def read_raw(self, start: int, end: int | None = None) -> Any:
        return self.log.read_raw(start, end)

    def next_seq(self) -> int:
        return self.log.next_seq()

    def wait_for(self, seq: int, timeout: float) -> bool:
        return self.log.wait_for(seq, timeout)

    def boot_trace(self, boot: int, boot_id: str, fmt: str) -> bytes:
        # Tracing is for the odd API call, not for every boot: import it then.
        from sequencer._render import render_chrome, render_json, render_svg
        from sequencer.trace import trace_boot

        trace = trace_boot(list(self.log.read()), index=None if boot < 0 else boot, boot_id=boot_id or None)
        if fmt == "svg":
            return render_svg(trace).encode()
        return json.dumps(render_chrome(trace) if fmt == "chrome" else render_json(trace)).encode()

    def client_config(self, roles: list[str], ttl_seconds: int, name: str) -> tuple[bytes, bytes, bytes]:

        cfg = self._config
        if cfg is None or cfg.machine.ca.key_pem() is None:
            raise NotFound("this node holds no CA key to issue client certificates")
        ca_key = load_private_key(cfg.machine.ca.key_pem() or b"")
        ca_cert = load_certificate(cfg.machine.ca.crt_pem())
        crt, key = issue_client_certificate(ca_key, ca_cert, cn=name, roles=check_roles(roles),
                                            ttl=dt.timedelta(seconds=ttl_seconds))
        return cfg.machine.ca.crt_pem(), crt, key

    def network(self, what: str) -> list[dict[str, Any]]:
        state = getattr(self, "planned_network", None)
        if isinstance(state, NetlinkNetwork):
            if what == "drift":
                cfg = self._config
                return state.drift(cfg.machine.network) if cfg is not None else []
            return state.query(what)
        if not isinstance(state, PlanNetwork):
            return []
        return plan_rows(state.state, what)


class _Services:
    """The sequencer's ``Services`` port: tasks call it from worker threads; the servers live on the loop."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def _on_loop(self, coro: Any) -> None:
        assert self.agent._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self.agent._loop).result(timeout=30)

    def start(self, name: str) -> None:
        self._on_loop(self.agent.start_service(name))

    def stop(self, name: str) -> None:
        self._on_loop(self.agent.stop_service(name))

    def healthy(self, name: str) -> bool:
        return self.agent.healthy(name)


class _Power:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def reboot(self) -> None:
        self.agent.power(EXIT_REBOOT)

    def power_off(self) -> None:
        self.agent.power(EXIT_POWER_OFF)


def _cert_cn(cert_der: bytes) -> str:
    from pki import cert_subject

    return cert_subject(load_certificate(cert_der))[0] or "graven"


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}


def _clear_spool(disk: DiskBase) -> None:
    """Upgrade images streamed to an earlier boot are of no use to this one."""
    if not disk.is_partitioned():
        return
    with contextlib.suppress(GravenError, OSError):
        spool = disk.path("EPHEMERAL") / "spool"
        for leftover in spool.glob("*.img") if spool.is_dir() else ():
            leftover.unlink(missing_ok=True)


def _say(msg: str) -> None:
    AGENT.info(msg)


def run_agent(root: Path, listen: str, *, device: Path | str | None = None,
              health_timeout: float | None = None) -> int:
    """``graven agent``: one boot on the sandbox disk under ``root``, or on the block disk ``device``."""
    import gc

    gc.freeze()  # the import-time objects never die; keep the collector off them
    gc.set_threshold(50_000, 50, 100)
    tune_allocator()  # what a hostile request made the agent allocate goes back after it
    from . import _guest

    disk = open_disk(root, device, Path(root).absolute() / "run" / "agent")
    try:
        if _guest.in_guest():
            _guest.adopt_boot_file()
        boot = BootInfo.from_env()
        logs = LogRing()
        setup_agent_logging(logs, boot.boot_id)
        if _guest.in_guest():
            _guest.kernel_timings(boot.events)
            _guest.prepare(_say)
        boot.events = finish_pending_wipe(disk, _say) + boot.events  # a reset's wipe the supervisor did not do
        _clear_spool(disk)
        agent = Agent(disk, listen=listen, boot=boot, health_timeout=health_timeout, logs=logs)
        code = asyncio.run(agent.run())
    finally:
        disk.close()
    return _guest.power(code)  # PID 1 of a qemu machine ends through reboot(2); elsewhere this returns code
