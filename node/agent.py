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
from collections.abc import Coroutine, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import config
import image
from api import (
    MaintenanceCredentials,
    Server,
    ServingCredentials,
    check_roles,
    issue_client_certificate,
    tune_allocator,
)
from errors import GravenError, InvalidRequest, NotFound, Unavailable
from events import Actor, Kind, SystemClock
from events.payloads import api_denied
from fsm import NodeFSM, Stage
from pki import Ed25519Signer, load_certificate, load_private_key
from sequencer import Ports, Runtime, SequenceName, Sequencer, SequenceResult, ShutdownRequest, bring_up
from sequencer.ports import RunningImage
from service import (
    Accepted,
    Applied,
    ApplyConfig,
    BootFacts,
    Command,
    NodeService,
    Status,
    VersionInfo,
    node_name,
)
from storage import DiskBase, LmdbEventLog, LogRing

from . import _guest, _pid1, _resources
from ._boottrace import mark
from ._disk import open_disk
from ._etcd_node import QUORUM_SEQUENCES, EtcdNode, settings_for
from ._identity import FileIdentity
from ._kmsg import kernel_records, own_kernel
from ._log import NodeLog
from ._logging import AGENT, FileFollower, setup_agent_logging
from ._metrics_service import MetricsService
from ._net_plan import NodeNetwork
from ._network import select_network
from ._ports import BootEnvPort, DirSinks, DiskPort, ImagesPort, SlotsPort
from ._wipe import finish_pending_wipe, request_wipe
from ._witness import WitnessNode

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
    events: list[dict[str, object]] = field(default_factory=list)  # the bootloader's decisions, to log
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
        """The events are in the log: remove the file, which tells the supervisor not to hand them over again (a
        qemu machine's is read-only: the guest says so on its console instead)."""
        if self.source is not None:
            with contextlib.suppress(OSError):
                self.source.unlink()
            _guest.said_logged(self.boot_id, self.source)


class Agent:
    """The composition root of one boot: opens the log, builds the ports, the sequencer and the service
    (``service.NodeService``, which holds every rule about commands), and starts the servers."""

    def __init__(self, disk: DiskBase, *, listen: str = DEFAULT_LISTEN, boot: BootInfo | None = None,
                 health_timeout: float | None = None, logs: LogRing | None = None) -> None:
        self.disk = disk
        self.logs = logs or LogRing()
        self.listen = listen
        self.boot = boot or BootInfo()
        self.health_timeout = health_timeout  # services not healthy by then fail the boot (None: the task's own)
        self._health_since: float | None = None
        self.exit_code = EXIT_POWER_OFF
        self.identity = FileIdentity(lambda: disk.path("STATE"), self._promote)
        self._servers: dict[str, Server] = {}
        self._fault = image.fault_point()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log = self._open_log()
        if self.log.durable:
            self.logs.attach(self._logs_dir())
        self.version_string = image.running_version()
        self._metrics_service = MetricsService(self._make_metrics, self._emit)
        self._followers: dict[str, FileFollower] = {}  # service -> its log file copied into the ring
        self.etcd = EtcdNode(self._emit, lambda: settings_for(self._config, ephemeral=self.spool_dir.parent,
                                                              listen=self.listen))
        self.witness = WitnessNode(self._emit, self.log)
        self.etcd.forget_witnessed = self.witness.forget
        backend = self.log.backend
        self.broken = backend.broken if isinstance(backend, LmdbEventLog) else None
        if self.broken is None:
            self._log_boot()
        self.fsm = NodeFSM(self.log)
        running = RunningImage(self.boot.slot, self.version_string, self.boot.digest)
        net = select_network(self._emit, resolv_conf=lambda: self._disk_file("STATE", "resolv.conf"),
                             record=lambda: self._disk_file("EPHEMERAL", "network.json"))
        AGENT.info(f"network: {net.reason}")
        self.ports = Ports(
            boot_env=BootEnvPort(self.disk), disk=DiskPort(self.disk, defer_wipe=self._defer_wipe),
            slots=SlotsPort(self.disk),
            images=ImagesPort(lambda: self.spool_dir, running),
            network=net.port, services=_Services(self), power=_Power(self),
            clock=SystemClock(), identity=self.identity,
            sinks=DirSinks(self._ca_pem, self._emit),
        )
        self.network_port = net.port
        self.seq = Sequencer(self.log, self.fsm, self.ports, runtime=Runtime())
        self.service = NodeService(
            self.seq, BootFacts(self.boot.boot_id, self.boot.slot, self.version_string, self.boot.digest), _Host(self),
            cluster=_EtcdGuard(self.etcd, self.seq), network=_LiveNetwork(net.port, net.platform))

    # -- the log and identity ------------------------------------------------------------------------------
    def _open_log(self) -> NodeLog:
        found = self.identity.signer() if self.disk.is_partitioned() else None
        if found is None:
            return NodeLog(boot_id=self.boot.boot_id, node="graven", clock=SystemClock())
        signer, cert_der = found
        durable = LmdbEventLog(self._log_dir(), signer, boot_id=self.boot.boot_id, cert_der=cert_der,
                               origin=f"graven/{_cert_cn(cert_der)}")
        return NodeLog(boot_id=self.boot.boot_id, node=_cert_cn(cert_der), durable=durable)

    def _log_boot(self) -> None:
        """Seal what a crashed boot left unsealed, and log the bootloader's decisions for this boot."""
        sealed = self.log.seal_tail()
        if sealed is not None:
            AGENT.warning(f"the previous boot ended without sealing its log: sealed seq 0..{sealed.seq - 1} "
                          f"with a checkpoint at seq {sealed.seq}")
        for ev in self.boot.events:
            payload = ev.get("payload")
            self.log.submit(str(ev["kind"]), payload if isinstance(payload, dict) else {}, BOOTLOADER)
        if self.boot.events:
            self.log.flush()
        self.boot.logged()

    def _log_dir(self) -> Path:
        return self.disk.path("EPHEMERAL") / "log"

    def _logs_dir(self) -> Path:
        return self.disk.path("EPHEMERAL") / "logs"

    def _promote(self, signer: Ed25519Signer, cert_der: bytes, name: str) -> None:
        every = self._config.machine.audit.checkpoint_every if self._config else 1024
        self.log.promote(self._log_dir(), signer, cert_der, origin=f"graven/{name}", checkpoint_every=every)
        self.logs.attach(self._logs_dir())
        self.service.forget_log()

    @property
    def _config(self) -> config.MachineConfig | None:
        return self.seq.runtime.config

    # -- running -------------------------------------------------------------------------------------------------
    async def run(self) -> int:
        mark("set-up")
        self._loop = asyncio.get_running_loop()
        if self.broken is not None:
            AGENT.error(f"the event log is read-only: {self.broken.message}")
            return EXIT_LOG_BROKEN
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

    def _brought_up(self, task: asyncio.Task[SequenceResult]) -> None:
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
        elif self._loop is not None:  # up and serving: what start-up freed goes back to the kernel (bench_rss)
            self._loop.call_later(1.0, _resources.release_startup_memory)

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

    def _graceful_reset(self) -> bool:
        return self.service.reset is not None and self.service.reset.graceful

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
            await self.witness.start_remote(cfg)  # a worker publishes its checkpoints through a controlplane node
        elif name == "etcd":
            await self.etcd.start()
            if self.etcd.service is not None:
                self._followers["etcd"] = FileFollower(self.etcd.service.log_path, "etcd", self.logs)
                await self.witness.start_on(self.etcd.service, self._config, self.spool_dir.parent)
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
            await self.witness.stop()
            await self.etcd.stop("the node stops its services",
                                 leave=self.fsm.stage is Stage.RESETTING and self._graceful_reset())
        server = self._servers.pop(name, None)
        if name == "api":
            await self.witness.stop(remote_only=True)
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
            return NodeView(stage=self.fsm.stage.value, boot_id=self.boot.boot_id, next_seq=self.log.next_seq(),
                            log_bytes=self.log.disk_bytes())

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
        sinks = list(cfg.machine.audit.sinks) if cfg is not None and self._graceful_reset() else []
        request_wipe(self.disk, labels, reason="reset", sinks=sinks, ca_pem=self._ca_pem())

    async def _shutdown_servers(self) -> None:
        for name in list(self._servers):
            await self.stop_service(name)

    # -- NodeApi ------------------------------------------------------------------------------------------------
    @property
    def maintenance(self) -> bool:
        return self.service.maintenance

    @property
    def spool_dir(self) -> Path:
        base = self.disk.path("EPHEMERAL") if self.disk.is_partitioned() else self.disk.path("STATE").parent
        return base / "spool"

    def _disk_file(self, label: str, name: str) -> Path | None:
        return self.disk.path(label) / name if self.disk.is_partitioned() else None

    def _emit(self, kind: str, payload: Mapping[str, object]) -> None:
        self.log.submit(kind, payload)

    def _ca_pem(self) -> bytes | None:
        cfg = self._config
        return cfg.machine.ca.crt_pem() if cfg else None

    def version(self) -> VersionInfo:
        return VersionInfo(version=self.version_string, image_digest=self.boot.digest, slot=self.boot.slot or "",
                           boot_id=self.boot.boot_id, node=node_name(self._config), **_resources.about())

    def resources(self, kind: str) -> list[dict[str, object]]:
        return _resources.read(kind)

    def status(self) -> Status:
        return self.service.status()

    async def apply_config(self, cmd: ApplyConfig, actor: Actor) -> Applied:
        return await self.service.apply_config(cmd, actor)

    def get_config(self, redact: bool) -> tuple[bytes, str]:
        return self.service.config_text(redact)

    async def request(self, cmd: Command, actor: Actor) -> Accepted:
        return await self.service.request(cmd, actor)

    def _adopt_folders(self, cfg: config.MachineConfig) -> None:
        if not self.disk.is_partitioned():
            self.disk.partition()
        self.identity.create(cfg)

    async def etcd_action(self, action: str, args: dict[str, object], actor: Actor, *,
                          manage: bool) -> dict[str, object]:
        return await self.etcd.action(action, args, actor, manage=manage, record=self.seq.record)

    async def etcd_snapshot(self) -> Path:
        return await self.etcd.snapshot(self.spool_dir)

    async def etcd_recover(self, snapshot: Path, actor: Actor) -> dict[str, object]:
        return await self.etcd.action("bootstrap", {"recover_from": str(snapshot)}, actor, manage=True,
                                      record=self.seq.record)

    async def record_denied(self, method: str, actor: Actor, reason: str) -> None:
        await self.seq.record(Kind.API_DENIED, api_denied(method, actor, reason), actor)

    def kernel_log(self, tail: int | None, follow: bool) -> Generator[bytes | None, None, None]:
        if not own_kernel():
            raise NotFound("this node shares its host's kernel (a process or container machine): it has no kernel "
                           "log of its own; the host's is read on the host (dmesg)")
        return kernel_records(tail=tail, follow=follow)

    def read_raw(self, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.log.read_raw(start, end)

    def next_seq(self) -> int:
        return self.log.next_seq()

    def wait_for(self, seq: int, timeout: float) -> bool:
        return self.log.wait_for(seq, timeout)

    def boot_trace(self, boot: int, boot_id: str, fmt: str) -> bytes:
        return self.service.boot_trace(boot, boot_id, fmt)

    def client_config(self, roles: list[str], ttl_seconds: int, name: str) -> tuple[bytes, bytes, bytes]:

        cfg = self._config
        if cfg is None or cfg.machine.ca.key_pem() is None:
            raise NotFound("this node holds no CA key to issue client certificates")
        ca_key = load_private_key(cfg.machine.ca.key_pem() or b"")
        ca_cert = load_certificate(cfg.machine.ca.crt_pem())
        crt, key = issue_client_certificate(ca_key, ca_cert, cn=name, roles=check_roles(roles),
                                            ttl=dt.timedelta(seconds=ttl_seconds))
        return cfg.machine.ca.crt_pem(), crt, key

    def network(self, what: str) -> list[dict[str, object]]:
        cfg = self._config
        return list(self.network_port.rows(what, cfg.machine.network if cfg is not None else None))


class _Services:
    """The sequencer's ``Services`` port: tasks call it from worker threads; the servers live on the loop."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def _on_loop(self, coro: Coroutine[object, object, None]) -> None:
        assert self.agent._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self.agent._loop).result(timeout=30)

    def start(self, name: str) -> None:
        self._on_loop(self.agent.start_service(name))

    def stop(self, name: str) -> None:
        self._on_loop(self.agent.stop_service(name))

    def healthy(self, name: str) -> bool:
        return self.agent.healthy(name)


class _Host:
    """The service's ``Host`` port."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def log_durable(self) -> bool:
        return self.agent.log.durable

    def adopt(self, cfg: config.MachineConfig) -> None:
        self.agent._adopt_folders(cfg)

    async def config_changed(self) -> None:
        await self.agent._sync_metrics()


class _EtcdGuard:
    """The service's ``Cluster`` port: etcd's quorum for the sequences that take the node down, and its lock."""

    def __init__(self, etcd: EtcdNode, seq: Sequencer) -> None:
        self.etcd, self.seq = etcd, seq

    async def check_quorum(self, sequence: SequenceName, actor: Actor, request_seq: int) -> None:
        """An upgrade takes the lock first (``EtcdNode.before_going_down``), so that while another node upgrades
        the refusal names it whatever that node's state; a lock taken by a request refused here is given back."""
        if sequence.value in QUORUM_SEQUENCES:
            await self.etcd.before_going_down(sequence.value, actor, request_seq, self.seq.record,
                                              lock=sequence is SequenceName.UPGRADE)

    async def take_upgrade_lock(self, actor: Actor, request_seq: int) -> None:
        await self.etcd.take_upgrade_lock(actor, request_seq, self.seq.record)  # taken already: its own, kept


class _LiveNetwork:
    """The service's ``NetworkView`` port: drift where the node owns its links (netlink), else none."""

    def __init__(self, port: NodeNetwork, platform: str) -> None:
        self.port, self.platform = port, platform

    def drift(self, cfg: config.MachineConfig) -> list[dict[str, object]] | None:
        rows = self.port.live_drift(cfg.machine.network)
        return None if rows is None else list(rows)


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
