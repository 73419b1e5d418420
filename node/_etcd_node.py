"""The agent's side of etcd: which nodes run it, with what settings, and the API's etcd actions.

A controlplane node whose config has ``cluster.etcd.ca`` runs etcd from ``PATH``: container and virtual machines
from their own root (the OS image carries Debian's etcd, ``image._runtime.etcd_layer``; their ``PATH`` is the
image's ``/usr/bin`` alone), process and netns machines the host's binary; its data and certificates are under
EPHEMERAL's ``etcd/`` folder, as Talos keeps ``/var/lib/etcd`` on EPHEMERAL: a reset that wipes EPHEMERAL
leaves no member behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import config
import storage
from api import EtcdCA
from errors import (
    GravenError,
    InvalidRequest,
    Locked,
    NotFound,
    PermissionDenied,
    QuorumAtRisk,
    TransitionRejected,
    Unavailable,
)
from events import WITNESS_PREFIX, Actor, Event, Kind, Published
from events.payloads import api_denied, api_refused

from ._etcd_args import CLIENT_PORT, EtcdFiles, client_url
from ._etcd_service import EtcdService, EtcdSettings
from ._identity import node_name
from ._witness import EtcdStore, read_witnessed

__all__ = ["MANAGE", "QUERIES", "QUORUM_SEQUENCES", "EtcdNode", "node_address", "settings_for"]

QUERIES = ("members", "status", "witnessed")
MANAGE = ("bootstrap", "leave", "forfeit-leadership", "remove-member", "publish-checkpoint", "witness-forget")
QUORUM_SEQUENCES = ("upgrade", "reboot", "shutdown", "reset")  # each takes the node down
UPGRADE_LOCK = b"/graven/locks/upgrade"
UPGRADE_LOCK_TTL = 120  # seconds: long enough for an upgrade's reboot, short after a crash


def _routable(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified)


def node_address(cfg: config.MachineConfig, listen: str) -> str:
    """The address etcd advertises: the API's listen address when routable, else the first routable address in
    ``certSANs`` or the interfaces, else loopback (a lone sandbox node)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if _routable(host):
        return host
    for san in cfg.machine.cert_sans:
        if _routable(san):
            return san
    for iface in cfg.machine.network.interfaces:
        for addr in iface.addresses:
            if _routable(addr.split("/", 1)[0]):
                return addr.split("/", 1)[0]
    return "127.0.0.1"


def _etcd_endpoint(endpoint: str) -> str:
    """``HOST[:PORT]`` or ``https://HOST[:PORT]`` of a controlplane node: its etcd client URL (port 2379 unless
    given)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    host = parts.hostname or endpoint
    return client_url(host, CLIENT_PORT)


def settings_for(cfg: config.MachineConfig | None, *, ephemeral: Path, listen: str) -> EtcdSettings:
    """The etcd settings of this node; ``TransitionRejected`` naming why it runs no etcd."""
    if cfg is None:
        raise TransitionRejected("this node is not configured yet (maintenance mode): apply a config first")
    if cfg.machine.type != "controlplane":
        raise TransitionRejected("this node is a worker: only controlplane nodes run etcd")
    etcd = cfg.cluster.etcd
    if etcd is None:
        raise TransitionRejected("cluster.etcd.ca is not set in this node's config: it runs no etcd")
    key = etcd.ca.key_pem()
    if key is None:
        raise TransitionRejected("cluster.etcd.ca.key is not set: this node cannot issue its etcd certificates")
    binary = shutil.which("etcd")
    if binary is None:
        raise Unavailable("etcd is not installed on this machine: a container or virtual machine runs the etcd of "
                          "its OS image (built with etcd: gravenctl image build --with-etcd), a process machine the "
                          "host's (Debian package etcd-server)")
    address = node_address(cfg, listen)
    mine = client_url(address, CLIENT_PORT)
    targets = etcd.endpoints or (cfg.cluster.endpoint,)
    join = tuple(u for u in dict.fromkeys(_etcd_endpoint(e) for e in targets) if u != mine)
    return EtcdSettings(name=node_name(cfg), address=address, ca=EtcdCA.load(etcd.ca.crt_pem(), key),
                        files=EtcdFiles(ephemeral / "etcd"), binary=binary, join_through=join)


class EtcdNode:
    """Holds the node's etcd service between its start and its stop; answers the API's etcd actions."""

    def __init__(self, emit: Callable[[str, dict[str, object]], None], settings: Callable[[], EtcdSettings]) -> None:
        self._emit = emit
        self._settings = settings
        self.service: EtcdService | None = None
        self._release: asyncio.Task[None] | None = None
        self.upgrade_lock_ttl = UPGRADE_LOCK_TTL
        self.forget_witnessed: Callable[[str, str], Awaitable[dict[str, object]]] | None = None

    async def start(self) -> None:
        self.service = EtcdService(self._settings(), self._emit)
        await self.service.start()
        self._release = asyncio.create_task(self._release_upgrade_lock(self.service))

    # -- the upgrade lock -----------------------------------------------------------------------------------------
    async def before_going_down(self, what: str, actor: Actor, request_seq: int,
                                record: Callable[[str, dict[str, object], Actor], Awaitable[Event]], *,
                                lock: bool) -> None:
        """The checks before a request takes this node down: with ``lock`` (an upgrade), the upgrade lock first, as
        Talos takes it around its pre-checks, so that while another node upgrades the refusal names it (``Locked``)
        whatever that node's state; then the quorum (``QuorumAtRisk``), which releases a lock just taken."""
        held, lock_error = False, None
        if lock:
            try:
                held = await self.take_upgrade_lock(actor, request_seq, record)
            except Locked:
                raise
            except GravenError as exc:  # etcd cannot answer: the quorum check below says why, else this is raised
                lock_error = exc
        if what in QUORUM_SEQUENCES:
            try:
                await self.check_quorum(what, actor, request_seq, record)
            except GravenError:
                if held:
                    await self.release_upgrade_lock()
                raise
        if lock_error is not None:
            raise lock_error

    async def release_upgrade_lock(self) -> bool:
        """Drop the upgrade lock if this node holds it (a request refused after it took it)."""
        svc = self.service
        if svc is None:
            return False
        async with svc.local_client() as c:
            held = await c.get(UPGRADE_LOCK)
            if held is None or _holder(held.value).get("holder") != svc.s.name or \
                    not await c.delete_if_mod_revision(UPGRADE_LOCK, held.mod_revision):
                return False
        self._emit(Kind.ETCD_UNLOCKED, {"lock": UPGRADE_LOCK.decode(), "holder": svc.s.name})
        return True

    async def take_upgrade_lock(self, actor: Actor, request_seq: int,
                                record: Callable[[str, dict[str, object], Actor], Awaitable[Event]]) -> bool:
        """Before a controlplane node upgrades: take ``/graven/locks/upgrade`` under a lease of
        ``UPGRADE_LOCK_TTL`` seconds, so that two controlplane nodes never upgrade at once. Held by another node:
        refused (``Locked``, recorded) naming the holder. Released by this node once its etcd is healthy again
        after the upgrade's reboot; a holder that crashed loses it when its lease expires."""
        svc = self.service
        if svc is None or svc.describe()["pid"] is None:
            return False
        me = svc.s.name
        value = json.dumps({"holder": me, "actor": actor.id, "request_seq": request_seq, "since": time.time()})
        async with svc.local_client() as c:
            lease = await c.lease_grant(self.upgrade_lock_ttl)
            if await c.put_if_mod_revision(UPGRADE_LOCK, value.encode(), 0, lease=lease):
                self._emit(Kind.ETCD_LOCKED, {"lock": UPGRADE_LOCK.decode(), "holder": me,
                                              "ttl": self.upgrade_lock_ttl})
                return True
            await c.lease_revoke(lease)
            held = await c.get(UPGRADE_LOCK)
        holder = _holder(held.value if held else b"")
        if holder.get("holder") == me:
            return False  # this node's own upgrade, asked again: the lock stays with that one
        who = holder.get("holder", "another node")
        exc = Locked(f"another controlplane node is upgrading: {who} holds the etcd upgrade lock (asked by "
                     f"{holder.get('actor', '?')}); it is released when {who} is healthy again, or when its lease "
                     f"expires ({self.upgrade_lock_ttl} s) if {who} crashed", holder=who, lock=UPGRADE_LOCK.decode())
        await record(Kind.API_REFUSED, api_refused("upgrade", request_seq, exc, holder=who), actor)
        raise exc

    async def _release_upgrade_lock(self, svc: EtcdService) -> None:
        """Once this node's etcd is healthy (after an upgrade's reboot), drop the upgrade lock if it holds it."""
        while not svc.healthy:
            if svc.state in ("failed", "stopped"):
                return
            await asyncio.sleep(0.5)
        with contextlib.suppress(GravenError):
            async with svc.local_client() as c:
                held = await c.get(UPGRADE_LOCK)
                if held is not None and _holder(held.value).get("holder") == svc.s.name and \
                        await c.delete_if_mod_revision(UPGRADE_LOCK, held.mod_revision):
                    self._emit(Kind.ETCD_UNLOCKED, {"lock": UPGRADE_LOCK.decode(), "holder": svc.s.name})

    async def stop(self, reason: str, *, leave: bool = False) -> None:
        """Stop etcd; with ``leave`` (a graceful reset) remove this member from the cluster first. A leave that
        fails is raised after etcd is stopped, so the reset goes on and its task says why it did not leave."""
        svc = self.service
        if svc is None:
            return
        if self._release is not None:
            self._release.cancel()
        if leave and svc.describe()["pid"] is not None:
            try:
                await svc.leave(retry_for=20.0)
            except GravenError:
                await svc.stop(reason)
                raise
            return
        await svc.stop(reason)

    def _svc(self) -> EtcdService:
        if self.service is None:
            self._settings()  # raises why this node runs no etcd (a worker, no config, no etcd CA)
            raise TransitionRejected("etcd has not started on this node yet (it starts at boot)")
        return self.service

    async def action(self, action: str, args: dict[str, object], actor: Actor, *, manage: bool,
                     record: Callable[[str, dict[str, object], Actor], Awaitable[Event]]) -> dict[str, object]:
        """``gravenctl bootstrap`` and ``gravenctl etcd ...``; a management action is recorded (``record``, the
        sequencer's), and so is its refusal with the reason."""
        if not manage:
            return await self.query(action, args)
        method = f"etcd.{action}"
        if action == "publish-checkpoint":  # a worker's checkpoint: its own origin only; not an event each time
            pub = Published.from_json(str(args.get("value", "")))  # (each would call for a checkpoint of this log)
            if pub.origin != f"graven/{actor.id}":
                exc = PermissionDenied(f"{actor.id} may publish its own checkpoints only (graven/{actor.id}), not "
                                       f"those of {pub.origin}", origin=pub.origin)
                await record(Kind.API_DENIED, api_denied(method, actor, exc.message), actor)
                raise exc
            return await self.manage(action, args)
        event = await record(Kind.API_REQUEST, {"method": method, "args": dict(args)}, actor)
        if action == "witness-forget":  # the witness beside this node's etcd: the agent wires it (forget_witnessed)
            try:
                if self.forget_witnessed is None:
                    raise NotFound("this node runs no witness")
                return await self.forget_witnessed(str(args.get("origin", "")), actor.id)
            except GravenError as exc:
                await record(Kind.API_REFUSED, api_refused(method, event.seq, exc), actor)
                raise
        try:
            return await self.manage(action, args)
        except GravenError as exc:
            await record(Kind.API_REFUSED, api_refused(method, event.seq, exc), actor)
            raise

    async def check_quorum(self, what: str, actor: Actor, request_seq: int,
                           record: Callable[[str, dict[str, object], Actor], Awaitable[Event]]) -> None:
        """Refuse (``QuorumAtRisk``, recorded with the reason) a request that takes this node down when the voting
        members that would stay up and healthy are fewer than a quorum."""
        svc = self.service
        if svc is None or svc.describe()["pid"] is None:
            return  # not a running member: its going down changes nothing
        try:
            problem = await _quorum_problem(svc, what)
        except GravenError as exc:
            problem = QuorumAtRisk(f"{what} refused: etcd's quorum cannot be checked ({exc.message}); use --force "
                                   "to go ahead anyway", down=[], reason=exc.message)
        if problem is None:
            return
        await record(Kind.API_REFUSED, api_refused(what, request_seq, problem, **problem.details), actor)
        raise problem

    async def query(self, action: str, args: dict[str, object]) -> dict[str, object]:
        svc = self._svc()
        if action == "members":
            return {"members": [m.to_dict() for m in await svc.members()]}
        if action == "status":
            out: dict[str, object] = {"service": svc.describe()}
            if svc.describe()["pid"] is not None:
                async with svc.local_client() as c:
                    out["status"] = (await c.status(svc.s.client_url)).to_dict()
            return out
        if action == "witnessed":  # {"origin": O} reads that origin's records only
            self._need_healthy(svc)
            origin = args.get("origin")
            async with svc.local_client() as c:
                return read_witnessed(await c.range(f"{WITNESS_PREFIX}{origin}/".encode() if origin
                                                    else WITNESS_PREFIX.encode()))
        raise InvalidRequest(f"unknown etcd query {action!r} (queries: {', '.join(QUERIES)})", action=action)

    @staticmethod
    def _need_healthy(svc: EtcdService) -> None:
        if svc.describe()["pid"] is None:
            raise Unavailable(f"etcd is not running on this node ({svc.state}: {svc.reason})", state=svc.state)

    async def manage(self, action: str, args: dict[str, object]) -> dict[str, object]:
        svc = self._svc()
        if action == "bootstrap":
            recover = args.get("recover_from")
            return await svc.bootstrap(Path(str(recover)) if recover else None)
        if action == "leave":
            return await svc.leave()
        if action == "remove-member":
            return await self._remove(svc, args)
        if action == "forfeit-leadership":
            return await self._forfeit(svc)
        if action == "publish-checkpoint":
            self._need_healthy(svc)
            pub = Published.from_json(str(args.get("value", "")))
            async with svc.local_client() as c:
                await EtcdStore(c).publish(pub.origin, str(args["value"]).encode())
            return {"published": pub.origin}
        raise InvalidRequest(f"unknown etcd action {action!r} (actions: {', '.join(MANAGE)})", action=action)

    async def _remove(self, svc: EtcdService, args: dict[str, object]) -> dict[str, object]:
        raw = str(args.get("member_id", ""))
        try:
            member_id = int(raw, 16)
        except ValueError:
            raise InvalidRequest(f"member id {raw!r} is not hexadecimal (as etcd members lists it)") from None
        async with svc.local_client() as c:
            members = await c.members()
            if member_id not in {m.id for m in members}:
                raise NotFound(f"no etcd member {member_id:016x}", member_id=f"{member_id:016x}")
            if member_id == (await c.status(svc.s.client_url)).member_id:
                raise TransitionRejected("this is the node's own member: use gravenctl etcd leave on it instead")
            left = await c.member_remove(member_id)
        return {"removed": f"{member_id:016x}", "members": [m.to_dict() for m in left]}

    async def _forfeit(self, svc: EtcdService) -> dict[str, object]:
        async with svc.local_client() as c:
            st = await c.status(svc.s.client_url)
            if st.leader != st.member_id:
                return {"leader": f"{st.leader:016x}", "moved": False, "why": "this member is not the leader"}
            voters = [m for m in await c.members() if not m.is_learner and m.id != st.member_id and m.started]
            if not voters:
                raise TransitionRejected("this is the only voting member: there is no one to hand leadership to")
            await c.move_leader(svc.s.client_url, voters[0].id)
        return {"leader": f"{voters[0].id:016x}", "moved": True}

    async def snapshot(self, folder: Path) -> Path:
        """A snapshot of the local member, written to a file in ``folder`` (the caller streams and deletes it)."""
        svc = self._svc()
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="etcd-", suffix=".snapshot", dir=folder)
        path = Path(name)
        try:
            with open(fd, "wb") as f:
                async with storage.EtcdClient([svc.s.client_url], svc.tls(), timeout=30.0) as c:
                    await c.snapshot(f)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


async def _member_healthy(svc: EtcdService, url: str) -> bool:
    try:
        async with storage.EtcdClient([url], svc.tls(), timeout=2.0) as c:
            await c.get(b"/graven/health")  # linearizable: answered only with a quorum behind it
        return True
    except GravenError:
        return False


async def _quorum_problem(svc: EtcdService, what: str) -> QuorumAtRisk | None:
    async with svc.local_client(timeout=2.0) as c:
        me = (await c.status(svc.s.client_url)).member_id
        members = await c.members()
    voters = [m for m in members if not m.is_learner]
    if me not in {m.id for m in voters} or len(voters) == 1:
        return None  # a learner does not count towards quorum; a lone member is the whole cluster (as in Talos)
    others = [m for m in voters if m.id != me]
    up = await asyncio.gather(*(_member_healthy(svc, m.client_urls[0]) if m.client_urls else _false()
                                for m in others))
    down = [m.name or f"{m.id:016x}" for m, ok in zip(others, up, strict=True) if not ok]
    needed = len(voters) // 2 + 1
    staying = len(others) - len(down)
    if staying >= needed:
        return None
    why = f"; down or unhealthy: {', '.join(down)}" if down else ""
    return QuorumAtRisk(f"{what} would leave etcd without quorum: {staying} of {len(voters)} voting members would "
                        f"stay up and {needed} are needed{why}; use --force to go ahead anyway",
                        down=down, voting=len(voters), needed=needed)


def _holder(value: bytes) -> dict[str, object]:
    try:
        out = json.loads(value)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


async def _false() -> bool:
    return False
