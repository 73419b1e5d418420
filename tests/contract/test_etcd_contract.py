"""The etcd adapter against a real etcd (Debian's etcd-server 3.4) with mutual TLS on loopback ports."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from etcdkit import ETCD, ETCDCTL, MISSING, EtcdKit, EtcdMember
from hypothesis import given, settings
from hypothesis import strategies as st

from api._etcd_pki import EtcdCA
from api._pki import gen_config, gen_etcd_client
from errors import Unavailable, VerificationError
from storage._etcd import EtcdClient, EtcdRefused, EtcdTLS, SnapshotCheck, prefix_end

pytestmark = pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason=MISSING)
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdKit]:
    k = EtcdKit(tmp_path_factory.mktemp("etcd"))
    k.bootstrap("cp1")
    yield k
    k.stop_all()


@pytest.fixture
def cp1(kit: EtcdKit) -> EtcdMember:
    return kit.members[0]


def with_client(kit: EtcdKit, endpoints: list[str], fn: Callable[[EtcdClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with EtcdClient(endpoints, kit.client_tls(), timeout=3.0) as c:
            return await fn(c)

    return asyncio.run(main())


def test_put_get_range_delete(kit: EtcdKit, cp1: EtcdMember) -> None:
    async def body(c: EtcdClient) -> None:
        rev1 = await c.put(b"/t/a", b"1")
        rev2 = await c.put(b"/t/b", b"2")
        await c.put(b"/u/c", b"3")
        assert rev2 > rev1
        kv = await c.get(b"/t/a")
        assert kv is not None and kv.value == b"1" and kv.mod_revision == rev1 and kv.version == 1
        assert await c.get(b"/t/missing") is None
        assert [k.key for k in await c.range(b"/t/")] == [b"/t/a", b"/t/b"]
        assert await c.delete(b"/t/", prefix=True) == 2
        assert await c.range(b"/t/") == []
        assert (await c.get(b"/u/c", serializable=True)) is not None

    with_client(kit, [cp1.client_url], body)


def test_compare_and_swap(kit: EtcdKit, cp1: EtcdMember) -> None:
    async def body(c: EtcdClient) -> None:
        assert await c.put_if_mod_revision(b"/cas", b"first", 0)
        assert not await c.put_if_mod_revision(b"/cas", b"again", 0)
        kv = await c.get(b"/cas")
        assert kv is not None
        assert not await c.put_if_mod_revision(b"/cas", b"stale", kv.mod_revision - 1)
        assert await c.put_if_mod_revision(b"/cas", b"second", kv.mod_revision)
        after = await c.get(b"/cas")
        assert after is not None and after.value == b"second"

    with_client(kit, [cp1.client_url], body)


def test_lease_expires_its_keys(kit: EtcdKit, cp1: EtcdMember) -> None:
    async def body(c: EtcdClient) -> None:
        lease = await c.lease_grant(60)
        await c.put(b"/leased", b"x", lease=lease)
        assert 0 < await c.lease_keepalive(lease) <= 60
        await c.lease_revoke(lease)
        assert await c.get(b"/leased") is None
        assert await c.lease_keepalive(lease) <= 0
        short = await c.lease_grant(1)
        await c.put(b"/short", b"y", lease=short)
        deadline = time.monotonic() + 8
        while await c.get(b"/short") is not None:
            assert time.monotonic() < deadline, "a 1 s lease did not expire its key"
            await asyncio.sleep(0.2)

    with_client(kit, [cp1.client_url], body)


def test_status_and_members(kit: EtcdKit, cp1: EtcdMember) -> None:
    async def body(c: EtcdClient) -> None:
        st_ = await c.status(cp1.client_url)
        assert st_.leader == st_.member_id != 0
        assert st_.version.startswith("3.") and not st_.is_learner and st_.db_size > 0
        (m,) = await c.members()
        assert m.id == st_.member_id and m.name == "cp1" and not m.is_learner
        assert m.peer_urls == (cp1.peer_url,) and m.client_urls == (cp1.client_url,)

    with_client(kit, [cp1.client_url], body)


def test_snapshot_checksum_and_etcdctl_restore(kit: EtcdKit, cp1: EtcdMember, tmp_path: Path) -> None:
    async def body(c: EtcdClient) -> tuple[int, str, bytes]:
        await c.put(b"/snap/key", b"kept")
        buf = io.BytesIO()
        seen: list[int] = []
        size, digest = await c.snapshot(buf, progress=seen.append)
        assert seen and seen[-1] == size
        return size, digest, buf.getvalue()

    size, digest, data = with_client(kit, [cp1.client_url], body)
    assert size == len(data) and hashlib.sha256(data[:-32]).hexdigest() == digest
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    snap = tmp_path / "snap.db"
    snap.write_bytes(data)
    out = subprocess.run([str(ETCDCTL), "snapshot", "status", str(snap), "-w", "json"],
                         env={"ETCDCTL_API": "3"}, capture_output=True, text=True, check=True)
    assert '"totalKey"' in out.stdout
    restored = tmp_path / "restored"
    subprocess.run([str(ETCDCTL), "snapshot", "restore", str(snap), f"--data-dir={restored}"],
                   env={"ETCDCTL_API": "3"}, capture_output=True, check=True)
    assert (restored / "member" / "snap" / "db").exists()


def test_unknown_ca_is_refused_and_dead_endpoint_fails_over(kit: EtcdKit, cp1: EtcdMember) -> None:
    other = EtcdCA.generate().client_cert()
    wrong = EtcdTLS(kit.ca.crt_pem, other.crt, other.key)

    async def stranger() -> None:
        async with EtcdClient([cp1.client_url], wrong, timeout=2.0) as c:
            await c.get(b"/x")

    with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
        run(stranger())

    async def body(c: EtcdClient) -> bytes | None:
        kv = await c.get(b"/u/c")
        return kv.value if kv else None

    dead = "https://127.0.0.1:1"
    assert with_client(kit, [dead, cp1.client_url], body) == b"3"

    async def only_dead() -> None:
        async with EtcdClient([dead], kit.client_tls(), timeout=1.0) as c:
            await c.members()

    with pytest.raises(Unavailable, match="no etcd endpoint answered"):
        run(only_dead())


def test_learner_join_promote_remove(kit: EtcdKit, cp1: EtcdMember) -> None:
    cp2 = kit.member("cp2")

    async def add(c: EtcdClient) -> int:
        learner = await c.member_add_learner([cp2.peer_url])
        assert learner.is_learner and not learner.started
        with pytest.raises(EtcdRefused, match="learner"):
            await c.member_promote(learner.id)  # not started: not in sync
        return learner.id

    learner_id = with_client(kit, [cp1.client_url], add)
    members = {"cp1": [cp1.peer_url], "cp2": [cp2.peer_url]}
    cp2.start(members, state="existing")
    cp2.wait_ready()

    async def promote(c: EtcdClient) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                after = await c.member_promote(learner_id)
                break
            except EtcdRefused as exc:  # "can only promote a learner member which is in sync with leader"
                assert time.monotonic() < deadline, exc.message
                await asyncio.sleep(0.3)
        assert {m.name: m.is_learner for m in after} == {"cp1": False, "cp2": False}
        deadline = time.monotonic() + 10
        while (st2 := await c.status(cp2.client_url)).is_learner:  # until it applies its own promotion
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert st2.member_id == learner_id
        # a linearizable read through the new voting member
        await c.put(b"/two", b"members")
        kv = await c.get(b"/two")
        assert kv is not None and kv.value == b"members"
        deadline = time.monotonic() + 20
        while True:
            try:
                left = await c.member_remove(learner_id)
                break
            except EtcdRefused as exc:  # "unhealthy cluster" for a few seconds after a promotion
                assert time.monotonic() < deadline, exc.message
                await asyncio.sleep(0.5)
        assert [m.name for m in left] == ["cp1"]

    with_client(kit, [cp1.client_url, cp2.client_url], promote)
    assert cp2.proc is not None
    cp2.proc.wait(20)  # a removed member stops by itself


def test_etcdctl_accepts_the_certificates_gen_etcd_client_writes(tmp_path: Path) -> None:
    gen_config("prod", "10.0.0.2", tmp_path / "secrets")
    ca = EtcdCA.load((tmp_path / "secrets/etcd-ca.crt").read_bytes(), (tmp_path / "secrets/etcd-ca.key").read_bytes())
    own = EtcdKit(tmp_path / "etcd", ca)
    try:
        m = own.bootstrap("solo")
        gen_etcd_client(tmp_path / "secrets", tmp_path / "client")
        c = tmp_path / "client"
        base = [str(ETCDCTL), f"--cacert={c / 'ca.crt'}", f"--cert={c / 'client.crt'}", f"--key={c / 'client.key'}",
                f"--endpoints={m.client_url}", "--command-timeout=5s"]

        def etcdctl(*args: str) -> str:
            done = subprocess.run([*base, *args], env={"ETCDCTL_API": "3"}, capture_output=True, text=True,
                                  timeout=20)
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert etcdctl("put", "/from/etcdctl", "hello").strip() == "OK"
        assert etcdctl("get", "/from/etcdctl", "--print-value-only").strip() == "hello"
        assert '"name":"solo"' in etcdctl("member", "list", "-w", "json")
        # and etcd refuses etcdctl without a client certificate
        bare = subprocess.run([str(ETCDCTL), f"--cacert={c / 'ca.crt'}", f"--endpoints={m.client_url}",
                               "--command-timeout=3s", "get", "/from/etcdctl"], env={"ETCDCTL_API": "3"},
                              capture_output=True, text=True, timeout=20)
        assert bare.returncode != 0
    finally:
        own.stop_all()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10), st.integers(0, 231))
def test_snapshot_check_over_any_chunking(db: bytes, cuts: list[int], flip: int) -> None:
    stream = db + hashlib.sha256(db).digest()
    chunks, rest = [], stream
    for n in cuts:
        chunks.append(rest[:n])
        rest = rest[n:]
    chunks.append(rest)
    good = SnapshotCheck()
    for c in chunks:
        good.update(c)
    assert good.verify() == hashlib.sha256(db).hexdigest() and good.size == len(stream)
    bad = SnapshotCheck()
    i = flip % len(stream)
    bad.update(stream[:i] + bytes([stream[i] ^ 1]) + stream[i + 1:])
    with pytest.raises(VerificationError, match="checksum"):
        bad.verify()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=8), st.binary(max_size=8))
def test_prefix_end_bounds_exactly_the_prefixed_keys(prefix: bytes, suffix: bytes) -> None:
    end = prefix_end(prefix)
    key = prefix + suffix
    assert prefix <= key and (end == b"\0" or key < end)
    if end != b"\0":
        assert not end.startswith(prefix)
