"""etcd as a service of a controlplane node: started at boot, supervised, health-checked, every change an event.

At boot the node issues its etcd certificates and then:

- with a member in its data folder, it starts etcd (it rejoins its cluster);
- with an empty data folder, it waits: ``gravenctl bootstrap`` makes it a new one-member cluster, or it joins on
  its own through ``cluster.etcd.endpoints`` (the other controlplane nodes): it adds itself as a learner, starts
  etcd as ``existing`` and asks a voting member to promote it once in sync. It retries every few seconds and says
  what it waits for in an ``etcd.waiting`` event each time that changes.

A process that exits is restarted (0.5 s, 1 s, 2 s, ... 30 s apart), each exit an ``etcd.exited`` event with etcd's
own last error; five exits within a few seconds of their start in a row (a port taken, a corrupt data folder)
make the service ``failed`` with that reason rather than a boot that hangs. Health is a quorum read every
``health_every`` seconds; each change of it is an ``etcd.health`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import storage
from api import EtcdCA
from errors import GravenError, InvalidRequest, TransitionRejected, Unavailable
from events import Kind

from ._etcd_args import CLIENT_PORT, PEER_PORT, EtcdFiles, client_url, etcd_argv, peer_url
from ._etcd_pki_files import issue_node_pki, node_client_tls

if TYPE_CHECKING:  # etcd's stubs load with the first client (storage's lazy table), not at rest
    from storage import EtcdClient, EtcdTLS
    from storage import EtcdMember as Member

__all__ = ["EtcdService", "EtcdSettings"]

HEALTH_KEY = b"/graven/health"
QUICK_EXIT = 5.0  # an exit this soon after the start counts towards "will not start"
QUICK_EXITS = 5
JOIN_EVERY = 1.0


@dataclass(frozen=True)
class EtcdSettings:
    name: str  # the member name: the node's name
    address: str  # the address etcd advertises (and its certificates name)
    ca: EtcdCA
    files: EtcdFiles
    binary: str
    join_through: tuple[str, ...] = ()  # other controlplane nodes' etcd endpoints
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT
    health_every: float = 5.0

    @property
    def client_url(self) -> str:
        return client_url(self.address, self.client_port)

    @property
    def peer_url(self) -> str:
        return peer_url(self.address, self.peer_port)


def _last_error(log: Path) -> str:
    """etcd's last fatal or error message in its log (zap JSON lines), else its last line."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 32768))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("fatal", "panic", "error"):
            return " ".join(str(entry[k]) for k in ("msg", "error") if entry.get(k))[:500]
    return (lines[-1] if lines else "no output")[:500]


@dataclass
class _Proc:
    proc: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)


class EtcdService:
    """One node's etcd. Create and use it on the agent's event loop."""

    def __init__(self, settings: EtcdSettings, emit: Callable[[str, dict[str, object]], None]) -> None:
        self.s = settings
        self._emit = emit
        self.state = "stopped"  # waiting | starting | running | failed | stopped
        self.reason = ""
        self.healthy = False
        self.member_id = 0
        self._proc: _Proc | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._quick_exits = 0
        self._waiting_for = ""
        self._lock = asyncio.Lock()

    # -- events --------------------------------------------------------------------------------------------------
    def _set(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason

    def _wait(self, what: str, reason: str) -> None:
        key = f"{what}: {reason}"
        if key != self._waiting_for:
            self._waiting_for = key
            self._emit(Kind.ETCD_WAITING, {"for": what, "reason": reason})

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # -- the client --------------------------------------------------------------------------------------------
    def tls(self) -> EtcdTLS:
        return node_client_tls(self.s.files)

    def local_client(self, timeout: float = 5.0) -> EtcdClient:
        return storage.EtcdClient([self.s.client_url], self.tls(), timeout=timeout)

    @property
    def log_path(self) -> Path:
        """etcd's own log (zap JSON lines), which the agent copies into the node's log ring."""
        return self.s.files.root / "etcd.log"

    def _has_data(self) -> bool:
        member = self.s.files.data / "member"
        return member.is_dir() and any(member.iterdir())

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Issue the certificates; start etcd when it has data, else wait for bootstrap and try to join."""
        self._stopping = False
        await asyncio.to_thread(issue_node_pki, self.s.ca, self.s.files, name=self.s.name,
                                addresses=[self.s.address])
        self.s.files.data.parent.mkdir(parents=True, exist_ok=True)
        if self._has_data():
            await self._launch("existing", {self.s.name: [self.s.peer_url]}, why="its data folder has a member")
        else:
            self._set("waiting", "no member in the data folder: run gravenctl bootstrap on one controlplane node, "
                                 "or let this node join through cluster.etcd.endpoints")
            self._wait("bootstrap", self.reason)
            if self.s.join_through:
                self._spawn(self._join_loop())
        self._spawn(self._health_loop())

    async def stop(self, reason: str = "stopped") -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        proc = self._proc
        self._proc = None
        if proc is not None and proc.proc.returncode is None:
            proc.proc.terminate()
            try:
                await asyncio.wait_for(proc.proc.wait(), 10)
            except TimeoutError:
                proc.proc.kill()
                await proc.proc.wait()
            self._emit(Kind.ETCD_STOPPED, {"reason": reason, "code": proc.proc.returncode})
        self.healthy = False
        self._set("stopped", reason)

    async def _launch(self, state: str, cluster: dict[str, list[str]], *, why: str) -> None:
        argv = etcd_argv(self.s.binary, name=self.s.name, files=self.s.files, address=self.s.address,
                         cluster=cluster, state=state, client_port=self.s.client_port, peer_port=self.s.peer_port)
        log = self.s.files.root / "etcd.log"
        try:
            with log.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(*_with_parent(argv), stdin=asyncio.subprocess.DEVNULL,
                                                            stdout=out, stderr=out)
        except OSError as exc:
            self._set("failed", f"cannot start {self.s.binary}: {exc.strerror}")
            self._emit(Kind.ETCD_FAILED, {"reason": self.reason})
            raise Unavailable(f"etcd: {self.reason}", service="etcd") from None
        self._proc = _Proc(proc)
        self._set("running", why)
        self._emit(Kind.ETCD_STARTED, {"pid": proc.pid, "initial_cluster_state": state, "why": why,
                                       "client_url": self.s.client_url, "peer_url": self.s.peer_url})
        self._spawn(self._supervise(self._proc, state, cluster))

    async def _supervise(self, p: _Proc, state: str, cluster: dict[str, list[str]]) -> None:
        code = await p.proc.wait()
        if self._stopping or self._proc is not p:
            return
        self._proc = None
        self.healthy = False
        quick = time.monotonic() - p.started < QUICK_EXIT
        self._quick_exits = self._quick_exits + 1 if quick else 0
        reason = await asyncio.to_thread(_last_error, self.s.files.root / "etcd.log")
        if "cannot fetch cluster info from peer urls" in reason:
            reason += (f"; the members refused this node's peer connection: its peer certificate names "
                       f"{self.s.address} and {self.s.name}, the members check it against the address they see "
                       "it connect from (their logs say 'rejected connection')")
        self._emit(Kind.ETCD_EXITED, {"code": code, "reason": reason, "quick_exits": self._quick_exits})
        if code == 0 and not self._has_data():  # removed from the cluster: it stops by itself and leaves no data
            self._set("waiting", "this member was removed from the cluster")
            self._wait("bootstrap", self.reason)
            return
        if self._quick_exits >= QUICK_EXITS:
            self._set("failed", f"etcd exits at once ({self._quick_exits} times in a row): {reason}")
            self._emit(Kind.ETCD_FAILED, {"reason": self.reason})
            return
        delay = min(30.0, 0.5 * 2.0 ** max(0, self._quick_exits - 1))
        self._set("starting", f"restarting in {delay:g} s after exit {code}: {reason}")
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._launch("existing" if self._has_data() else state, cluster, why=f"restart after exit {code}")

    async def _health_loop(self) -> None:
        while not self._stopping:
            ok, why = False, self.state
            if self._proc is not None:
                try:
                    async with self.local_client(timeout=max(1.0, self.s.health_every)) as c:
                        await c.get(HEALTH_KEY)  # linearizable: needs a quorum
                        self.member_id = (await c.status(self.s.client_url)).member_id
                    ok, why = True, "quorum read"
                except GravenError as exc:
                    why = exc.message
            if ok != self.healthy:
                self.healthy = ok
                self._emit(Kind.ETCD_HEALTH, {"healthy": ok, "reason": why, "member_id": f"{self.member_id:016x}"})
            await asyncio.sleep(self.s.health_every if ok else min(self.s.health_every, 1.0))

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy:
            if self.state == "failed":
                raise Unavailable(f"etcd failed: {self.reason}", service="etcd")
            if time.monotonic() > deadline:
                raise Unavailable(f"etcd is not healthy after {timeout:g} s ({self.state}: {self.reason})",
                                  service="etcd")
            await asyncio.sleep(0.1)

    # -- bootstrap and join --------------------------------------------------------------------------------------
    async def bootstrap(self, recover_from: Path | None = None) -> dict[str, object]:
        """Make this node a new one-member cluster, from a snapshot when ``recover_from`` is given; refused at once
        with the reason when it cannot be."""
        async with self._lock:
            if self._proc is not None or self.state in ("running", "starting"):
                raise TransitionRejected("etcd is already running on this node: the cluster exists (bootstrap "
                                         "once, on one controlplane node)", state=self.state)
            if self._has_data():
                raise TransitionRejected(f"etcd's data folder {self.s.files.data} is not empty: this node was a "
                                         "member already", path=str(self.s.files.data))
            if self.state == "stopped":
                raise Unavailable("etcd is not running on this node", state=self.state)
            digest = None
            if recover_from is not None:
                digest = await asyncio.to_thread(self._restore, recover_from)
            await self._launch("new", {self.s.name: [self.s.peer_url]},
                               why="bootstrap" if digest is None else "bootstrap from a snapshot")
        await self.wait_healthy(30)
        out: dict[str, object] = {"member_id": f"{self.member_id:016x}", "name": self.s.name,
                                  "client_url": self.s.client_url}
        if digest is not None:
            out["recovered_from"] = digest
        self._emit(Kind.ETCD_BOOTSTRAPPED, out)
        return out

    def _restore(self, snapshot: Path) -> str:
        """Check the snapshot's SHA-256 trailer, then restore it into the empty data folder as a one-member
        cluster of this node (``etcdctl snapshot restore``); the database's SHA-256."""
        check = storage.SnapshotCheck()
        with snapshot.open("rb") as f:
            while chunk := f.read(1 << 20):
                check.update(chunk)
        digest = check.verify()
        etcdctl = shutil.which("etcdctl")
        if etcdctl is None:
            raise Unavailable("etcdctl is not installed on this machine (Debian package etcd-client): it restores "
                              "snapshots")
        if self.s.files.data.exists():
            shutil.rmtree(self.s.files.data)
        done = subprocess.run(
            [etcdctl, "snapshot", "restore", str(snapshot), f"--name={self.s.name}",
             f"--initial-cluster={self.s.name}={self.s.peer_url}", f"--initial-advertise-peer-urls={self.s.peer_url}",
             f"--data-dir={self.s.files.data}"],
            env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "")}, capture_output=True, text=True,
            timeout=120, check=False)
        if done.returncode != 0:
            if self.s.files.data.exists():
                shutil.rmtree(self.s.files.data)
            raise InvalidRequest(f"the snapshot does not restore: {done.stderr.strip()[-500:]}")
        return digest

    async def _join_loop(self) -> None:
        endpoints = list(self.s.join_through)
        while not self._stopping and self._proc is None and not self._has_data():
            try:
                async with self._lock:
                    if self._proc is not None:
                        return
                    await self._join_once(endpoints)
                self._spawn(self._promote_loop(endpoints))
                return
            except GravenError as exc:
                self._wait("members", f"cannot join through {', '.join(endpoints)}: {exc.message}")
            await asyncio.sleep(JOIN_EVERY)

    async def _join_once(self, endpoints: Sequence[str]) -> None:
        async with storage.EtcdClient(endpoints, self.tls(), timeout=3.0) as c:
            members = await c.members()
            mine = [m for m in members if self.s.peer_url in m.peer_urls]
            for m in mine:  # a stale entry of this node (an earlier life): remove it before adding again
                if m.started:
                    await c.member_remove(m.id)
            if not [m for m in mine if not m.started]:
                added = await c.member_add_learner([self.s.peer_url])
                self.member_id = added.id
            else:
                self.member_id = next(m.id for m in mine if not m.started)
            members = await c.members()
        cluster: dict[str, list[str]] = {}
        for m in members:
            cluster[m.name or self.s.name if m.id == self.member_id else m.name] = list(m.peer_urls)
        cluster = {k: v for k, v in cluster.items() if k}
        self._emit(Kind.ETCD_JOINED, {"member_id": f"{self.member_id:016x}", "as": "learner",
                                      "through": list(endpoints)})
        await self._launch("existing", cluster, why="joined as a learner")

    async def _promote_loop(self, endpoints: Sequence[str]) -> None:
        """A learner cannot promote itself: ask the voting members until it is in sync and they do."""
        while not self._stopping:
            try:
                async with storage.EtcdClient(endpoints, self.tls(), timeout=3.0) as c:
                    members = await c.members()
                    me = next((m for m in members if m.id == self.member_id), None)
                    if me is None:
                        self._wait("promotion", "this node is no longer a member")
                        return
                    if me.is_learner:
                        await c.member_promote(self.member_id)
                    self._emit(Kind.ETCD_PROMOTED, {"member_id": f"{self.member_id:016x}"})
                    return
            except GravenError as exc:
                self._wait("promotion", exc.message)
            await asyncio.sleep(0.5)

    # -- queries and management ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, object]:
        return {"name": self.s.name, "state": self.state, "reason": self.reason, "healthy": self.healthy,
                "member_id": f"{self.member_id:016x}", "client_url": self.s.client_url, "peer_url": self.s.peer_url,
                "pid": self._proc.proc.pid if self._proc else None}

    def _need_running(self) -> None:
        if self._proc is None:
            raise Unavailable(f"etcd is not running on this node ({self.state}: {self.reason})", state=self.state)

    async def members(self) -> list[Member]:
        self._need_running()
        async with self.local_client() as c:
            return await c.members()

    async def leave(self, retry_for: float = 60.0) -> dict[str, object]:
        """Remove this member from the cluster (retried for ``retry_for`` seconds while the cluster is briefly
        unhealthy), stop etcd and empty its data folder."""
        self._need_running()
        deadline = time.monotonic() + retry_for
        while True:
            try:
                async with self.local_client() as c:
                    me = (await c.status(self.s.client_url)).member_id
                    others = [m for m in await c.members() if m.id != me and not m.is_learner]
                    if not others:
                        raise TransitionRejected("this is the last voting member: leaving would destroy the cluster")
                    await c.member_remove(me)
                break
            except (Unavailable, storage.EtcdRefused) as exc:  # "unhealthy cluster" for a few seconds after a change
                if time.monotonic() > deadline:
                    raise
                self._wait("leave", exc.message)
                await asyncio.sleep(1.0)
        self._emit(Kind.ETCD_LEFT, {"member_id": f"{me:016x}"})
        await self.stop("left the cluster")
        await asyncio.to_thread(_empty, self.s.files.data)
        self._set("waiting", "left the cluster: its data folder is empty")
        return {"member_id": f"{me:016x}", "left": True}


def _with_parent(argv: list[str]) -> list[str]:
    """etcd dies with its agent (a crashed agent leaves no etcd holding the next boot's ports): util-linux's
    ``setpriv --pdeathsig`` sets that and execs etcd, as a ``preexec_fn`` cannot safely do in a threaded agent."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else argv


def _empty(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
