"""The etcd service of controlplane nodes, three of them on loopback ports, with Debian's etcd: bootstrap and its
refusals, learners that join on their own and are promoted, a killed etcd restarted, a port taken is a failure
with etcd's reason, a member that leaves."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from etcdkit import ETCD, MISSING, free_port

from api._etcd_pki import EtcdCA
from errors import (
    InvalidRequest,
    Locked,
    NotFound,
    QuorumAtRisk,
    TransitionRejected,
    Unavailable,
    VerificationError,
)
from events import Actor, Kind
from node._etcd_args import EtcdFiles
from node._etcd_node import EtcdNode
from node._etcd_service import EtcdService, EtcdSettings

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)


class Node:
    def __init__(self, name: str, root: Path, ca: EtcdCA, join: tuple[str, ...] = (), port: int | None = None):
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.settings = EtcdSettings(name=name, address="127.0.0.1", ca=ca, files=EtcdFiles(root / name),
                                     binary=str(ETCD), join_through=join, client_port=port or free_port(),
                                     peer_port=free_port(), health_every=0.5)
        self.svc = EtcdService(self.settings, lambda k, p: self.events.append((k, p)))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    async def until(self, what: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"{self.settings.name}: {self.svc.describe()} {self.events[-5:]}"
            await asyncio.sleep(0.1)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(_await(coro), 120))


async def _await(coro: Awaitable[None]) -> None:
    await coro


def test_three_controlplanes_bootstrap_join_restart_leave(tmp_path: Path) -> None:
    ca = EtcdCA.generate()

    async def body() -> None:
        cp1 = Node("cp1", tmp_path, ca)
        join = (cp1.settings.client_url,)
        cp2, cp3 = Node("cp2", tmp_path, ca, join), Node("cp3", tmp_path, ca, join)
        nodes = [cp1, cp2, cp3]
        try:
            for n in nodes:
                await n.svc.start()
            assert cp1.svc.state == "waiting" and cp1.kinds() == [Kind.ETCD_WAITING]
            t0 = time.monotonic()
            out = await cp1.svc.bootstrap()
            assert out["name"] == "cp1" and cp1.svc.healthy
            with pytest.raises(TransitionRejected, match="already running"):
                await cp1.svc.bootstrap()
            for n in (cp2, cp3):
                await n.until(lambda n=n: Kind.ETCD_PROMOTED in n.kinds() and n.svc.healthy)
            elapsed = time.monotonic() - t0
            members = await cp1.svc.members()
            assert sorted((m.name, m.is_learner) for m in members) == [("cp1", False), ("cp2", False), ("cp3", False)]
            print(f"bootstrap to three healthy voting members: {elapsed:.2f} s")
            k2 = cp2.kinds()
            assert k2.index(Kind.ETCD_JOINED) < k2.index(Kind.ETCD_STARTED) < k2.index(Kind.ETCD_PROMOTED)
            with pytest.raises(TransitionRejected, match=r"not empty|already running"):
                await cp2.svc.bootstrap()

            # a killed etcd is restarted and healthy again
            pid = cp2.svc.describe()["pid"]
            os.kill(pid, signal.SIGKILL)
            await cp2.until(lambda: Kind.ETCD_EXITED in cp2.kinds())
            await cp2.until(lambda: cp2.svc.healthy and cp2.svc.describe()["pid"] not in (None, pid))
            exited = next(p for k, p in cp2.events if k == Kind.ETCD_EXITED)
            assert exited["code"] == -signal.SIGKILL

            # three healthy voting members: any one may go down
            refusals: list[dict[str, Any]] = []

            async def record(kind: str, payload: dict[str, Any], actor: Actor) -> None:
                refusals.append({"kind": kind, **payload})

            def node_of(n: Node) -> EtcdNode:
                en = EtcdNode(lambda k, p: None, lambda: n.settings)
                en.service = n.svc
                return en

            await node_of(cp1).check_quorum("reboot", Actor("test"), 1, record)
            assert refusals == []

            # the upgrade lock: one holder at a time, named in the refusal; released when healthy; a lease
            n1, n2 = node_of(cp1), node_of(cp2)
            await n1.take_upgrade_lock(Actor("alice"), 3, record)
            await n1.take_upgrade_lock(Actor("alice"), 4, record)  # its own upgrade asked again
            with pytest.raises(Locked, match=r"cp1 holds the etcd upgrade lock \(asked by alice\)"):
                await n2.take_upgrade_lock(Actor("bob"), 5, record)
            assert refusals[-1]["holder"] == "cp1" and refusals[-1]["code"] == "LOCKED"
            await n1._release_upgrade_lock(cp1.svc)
            quick = node_of(cp3)
            quick.upgrade_lock_ttl = 1
            await quick.take_upgrade_lock(Actor("carol"), 6, record)
            with pytest.raises(Locked, match="cp3 holds"):
                await n2.take_upgrade_lock(Actor("bob"), 7, record)
            deadline = time.monotonic() + 10
            while True:  # cp3 "crashed" while holding it: its lease expires
                try:
                    await n2.take_upgrade_lock(Actor("bob"), 8, record)
                    break
                except Locked:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.5)
            await n2._release_upgrade_lock(cp2.svc)
            refusals.clear()

            # the leader hands leadership over; a follower has nothing to hand
            async with cp1.svc.local_client() as c:
                leader = (await c.status(cp1.settings.client_url)).leader
            by_id = {n.svc.member_id: n for n in nodes}
            moved = await node_of(by_id[leader]).manage("forfeit-leadership", {})
            assert moved["moved"] is True and int(moved["leader"], 16) != leader
            follower = next(n for n in nodes if n.svc.member_id not in (leader, int(moved["leader"], 16)))
            assert (await node_of(follower).manage("forfeit-leadership", {}))["moved"] is False
            # remove-member refuses the node's own member and an unknown id, by name
            with pytest.raises(TransitionRejected, match="etcd leave"):
                await node_of(cp1).manage("remove-member", {"member_id": f"{cp1.svc.member_id:x}"})
            with pytest.raises(NotFound, match="no etcd member"):
                await node_of(cp1).manage("remove-member", {"member_id": "abc"})
            with pytest.raises(InvalidRequest, match="not hexadecimal"):
                await node_of(cp1).manage("remove-member", {"member_id": "xyz"})

            # a member leaves: the others keep quorum, but now neither may go down
            await cp3.svc.leave()
            assert Kind.ETCD_LEFT in cp3.kinds() and cp3.svc.state == "waiting"
            assert not (cp3.settings.files.data).exists()
            assert sorted(m.name for m in await cp1.svc.members()) == ["cp1", "cp2"]
            await node_of(cp3).check_quorum("reboot", Actor("test"), 1, record)  # not a member: nothing to keep
            with pytest.raises(QuorumAtRisk, match=r"1 of 2 voting members would stay up and 2 are needed") as r:
                await node_of(cp2).check_quorum("upgrade", Actor("test"), 7, record)
            assert r.value.code.name == "QUORUM_AT_RISK" and r.value.details["down"] == []
            assert refusals[-1]["kind"] == Kind.API_REFUSED and refusals[-1]["request_seq"] == 7
            # an upgrade takes the lock before its quorum check: while cp1 upgrades, cp2's refusal names cp1 ...
            assert await node_of(cp1).take_upgrade_lock(Actor("alice"), 9, record) is True
            with pytest.raises(Locked, match="cp1 holds the etcd upgrade lock"):
                await node_of(cp2).before_going_down("upgrade", Actor("bob"), 10, record, lock=True)
            assert await node_of(cp1).release_upgrade_lock() is True
            # ... and a lock taken by a request the quorum check refuses is given back at once
            with pytest.raises(QuorumAtRisk):
                await node_of(cp2).before_going_down("upgrade", Actor("bob"), 11, record, lock=True)
            async with cp1.svc.local_client() as c:
                assert await c.get(b"/graven/locks/upgrade") is None
            await cp1.svc.stop()
            with pytest.raises(QuorumAtRisk, match=r"down or unhealthy: cp1"):
                await node_of(cp2).check_quorum("reboot", Actor("test"), 8, record)
        finally:
            for n in nodes:
                await n.svc.stop()

    run(body())


def test_a_port_taken_is_a_failure_with_the_reason(tmp_path: Path) -> None:
    ca = EtcdCA.generate()

    async def body() -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            n = Node("cp1", tmp_path, ca, port=squatter.getsockname()[1])
            try:
                await n.svc.start()
                with pytest.raises(Unavailable, match=r"not healthy|failed"):
                    await n.svc.bootstrap()
                await n.until(lambda: n.svc.state == "failed", timeout=90)
                failed = next(p for k, p in n.events if k == Kind.ETCD_FAILED)
                assert "address already in use" in failed["reason"], failed
            finally:
                await n.svc.stop()

    run(body())


def test_bootstrap_recovers_from_a_snapshot_and_refuses_a_corrupt_one(tmp_path: Path) -> None:
    ca = EtcdCA.generate()

    async def body() -> None:
        old = Node("old", tmp_path, ca)
        try:
            await old.svc.start()
            await old.svc.bootstrap()
            async with old.svc.local_client() as c:
                await c.put(b"/kept", b"across the recovery")
                with (tmp_path / "snap.db").open("wb") as f:
                    await c.snapshot(f)
        finally:
            await old.svc.stop()
        data = (tmp_path / "snap.db").read_bytes()
        (tmp_path / "bad.db").write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        new = Node("new", tmp_path, ca)
        try:
            await new.svc.start()
            with pytest.raises(VerificationError, match="checksum"):
                await new.svc.bootstrap(tmp_path / "bad.db")
            assert new.svc.state == "waiting" and not new.settings.files.data.exists()
            out = await new.svc.bootstrap(tmp_path / "snap.db")
            assert out["recovered_from"] == hashlib.sha256(data[:-32]).hexdigest()
            async with new.svc.local_client() as c:
                kv = await c.get(b"/kept")
                assert kv is not None and kv.value == b"across the recovery"
                (m,) = await c.members()
                assert m.name == "new" and m.peer_urls == (new.settings.peer_url,)
        finally:
            await new.svc.stop()

    run(body())


def test_a_peer_certificate_that_does_not_name_its_address_is_refused_and_says_so(tmp_path: Path) -> None:
    """cp2 advertises 127.0.0.2 (its certificates name that) but reaches cp1 from 127.0.0.1: cp1 refuses it."""
    ca = EtcdCA.generate()

    async def body() -> None:
        cp1 = Node("cp1", tmp_path, ca)
        cp2 = Node("cp2", tmp_path, ca, (cp1.settings.client_url,))
        cp2.settings = dataclasses.replace(cp2.settings, address="127.0.0.2")
        cp2.svc = EtcdService(cp2.settings, lambda k, p: cp2.events.append((k, p)))
        try:
            await cp1.svc.start()
            await cp1.svc.bootstrap()
            await cp2.svc.start()
            await cp2.until(lambda: cp2.svc.state == "failed", timeout=60)
            failed = next(p for k, p in cp2.events if k == Kind.ETCD_FAILED)
            assert "refused this node's peer connection" in failed["reason"], failed
            log = (cp1.settings.files.root / "etcd.log").read_text()
            assert "rejected connection" in log and "127.0.0.1" in log
            members = await cp1.svc.members()
            assert [m.name for m in members if m.started] == ["cp1"]  # never got in
        finally:
            await cp2.svc.stop()
            await cp1.svc.stop()

    run(body())
