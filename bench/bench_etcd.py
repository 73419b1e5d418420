"""etcd on the controlplane against its physical limits, measured in the same run on loopback ports:

1. bootstrap to three healthy voting members: Graven's way (one node bootstraps, two join on their own as
   learners and are promoted, node._etcd_service) against the limit, three bare etcd processes started at once
   with a static three-member initial cluster (no learners, no promotion), each timed until every member
   answers a quorum read;
2. a quorum read and a put through the adapter (storage._etcd, mutual TLS) against the same call on a bare
   grpc.aio stub over the same channel kind (p50 of ROUNDS calls).

Run: ``.venv/bin/python bench/bench_etcd.py`` (needs Debian's etcd-server).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from etcdkit import EtcdKit, free_port

from api._etcd_pki import EtcdCA
from node._etcd_args import EtcdFiles
from node._etcd_service import EtcdService, EtcdSettings
from storage._etcd import EtcdClient

ROUNDS = 500


async def _all_quorum(kit: EtcdKit, urls: list[str]) -> None:
    tls = kit.client_tls()
    while True:
        try:
            for url in urls:
                async with EtcdClient([url], tls, timeout=1.0) as c:
                    await c.get(b"/probe")
            return
        except Exception:
            await asyncio.sleep(0.02)


def static_three(root: Path) -> float:
    """The limit: three bare members of a static initial cluster, started together, until all read by quorum."""
    kit = EtcdKit(root)
    members = [kit.member(f"m{i}") for i in range(3)]
    cluster = {m.name: [m.peer_url] for m in members}
    t0 = time.perf_counter()
    try:
        for m in members:
            m.start(cluster)
        asyncio.run(asyncio.wait_for(_all_quorum(kit, [m.client_url for m in members]), 60))
        return time.perf_counter() - t0
    finally:
        kit.stop_all()


def graven_three(root: Path) -> float:
    """Graven's way: bootstrap one, the two others join through it as learners and get promoted."""
    ca = EtcdCA.generate()
    binary = shutil.which("etcd") or "etcd"

    def settings(name: str, join: tuple[str, ...] = ()) -> EtcdSettings:
        return EtcdSettings(name=name, address="127.0.0.1", ca=ca, files=EtcdFiles(root / name), binary=binary,
                            join_through=join, client_port=free_port(), peer_port=free_port(), health_every=0.2)

    async def run() -> float:
        first = settings("cp1")
        services = [EtcdService(first, lambda k, p: None)]
        services += [EtcdService(settings(n, (first.client_url,)), lambda k, p: None) for n in ("cp2", "cp3")]
        try:
            for s in services:
                await s.start()
            t0 = time.perf_counter()
            await services[0].bootstrap()
            while True:
                members = await services[0].members()
                if len(members) == 3 and not any(m.is_learner for m in members) and all(s.healthy for s in services):
                    return time.perf_counter() - t0
                await asyncio.sleep(0.02)
        finally:
            for s in services:
                await s.stop()

    return asyncio.run(asyncio.wait_for(run(), 120))


def call_latency(root: Path) -> tuple[float, float, float]:
    """p50 of a quorum read through the adapter, through a bare stub, and of a put through the adapter."""
    from etcd.api.etcdserverpb import rpc_pb2 as pb
    from etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

    kit = EtcdKit(root)
    m = kit.bootstrap("solo")
    try:
        async def run() -> tuple[float, float, float]:
            async with EtcdClient([m.client_url], kit.client_tls()) as c:
                await c.put(b"/bench", b"x")
                ours, bare, puts = [], [], []
                stub = pb_grpc.KVStub(next(iter(c._channels.values())))
                for _ in range(ROUNDS):
                    t = time.perf_counter()
                    await c.get(b"/bench")
                    ours.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    await stub.Range(pb.RangeRequest(key=b"/bench"))
                    bare.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    await c.put(b"/bench", b"y")
                    puts.append(time.perf_counter() - t)
                return statistics.median(ours), statistics.median(bare), statistics.median(puts)

        return asyncio.run(run())
    finally:
        kit.stop_all()


def main() -> int:
    if shutil.which("etcd") is None:
        print("bench_etcd: Debian's etcd-server is not installed (make system installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
        root = Path(tmp)
        limit = static_three(root / "static")
        ours = graven_three(root / "graven")
        read, bare, put = call_latency(root / "latency")
    print("etcd benchmark (Debian etcd 3.4, loopback, mutual TLS)")
    print(f"  three members, static initial cluster (limit):        {limit:6.2f} s")
    print(f"  bootstrap + two learner joins + promotions (graven):  {ours:6.2f} s   {ours / limit:5.1f}x the limit")
    print(f"  quorum read, bare grpc stub (limit):                  {bare * 1e3:6.2f} ms")
    print(f"  quorum read, storage._etcd adapter:                   {read * 1e3:6.2f} ms   "
          f"{read / bare:5.2f}x the limit")
    print(f"  put (fsync'd by etcd), storage._etcd adapter:         {put * 1e3:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
