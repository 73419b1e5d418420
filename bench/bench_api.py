"""The API against its physical limit: a bare grpcio mutual-TLS echo server measured in the same run.

Prints: unary Version p50/p99 (target within 1.3x of the echo), ApplyConfiguration dry-run p50, Events stream
throughput (target >= 100,000 events/s), agent start to serving (target < 400 ms), agent RSS at rest
(target < 60 MiB).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from agentproc import AgentProc

import config
from api._pki import ClusterSecrets, issue_client_certificate, issue_server_certificate
from events import Kind
from node._identity import FileIdentity
from pki import LOG_KEY_UNIT
from storage import LmdbEventLog, SandboxDisk

CALLS = 2000
PREFILL = 200_000


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def echo_server(secrets: ClusterSecrets, port: int, ready: threading.Event, stop: threading.Event) -> None:
    crt, key = issue_server_certificate(secrets.ca_key, secrets.ca_cert, cn="echo", sans=["127.0.0.1"])

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
        server.add_generic_rpc_handlers((handler,))
        creds = grpc.ssl_server_credentials([(key, crt)], root_certificates=secrets.ca_crt_pem,
                                            require_client_auth=True)
        server.add_secure_port(f"127.0.0.1:{port}", creds)
        await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(0)

    asyncio.run(main())


async def _echo(request: bytes, context: object) -> bytes:
    return request


def time_calls(fn: object, n: int = CALLS) -> list[float]:
    call = fn  # type: ignore[assignment]
    for _ in range(100):
        call()  # type: ignore[operator]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def prefill(root: Path, agent: AgentProc, n: int) -> None:
    """A configured node whose log already holds ``n`` events, signed with its own key."""
    disk = SandboxDisk(root)
    disk.partition()
    cfg = config.load(agent.config_yaml())
    (disk.path("STATE") / "config.yaml").write_bytes(agent.config_yaml())
    made: list[tuple[object, bytes]] = []
    FileIdentity(lambda: disk.path("STATE"), lambda s, c, name: made.append((s, c))).create(cfg)
    signer, cert = made[0]
    log = LmdbEventLog(disk.path("EPHEMERAL") / "log", signer, boot_id="prefill", origin="graven/e2e",  # type: ignore[arg-type]
                       cert_der=cert)

    async def fill() -> None:
        pending = []
        for i in range(n):
            pending.append(log.append_async(Kind.TASK_STARTED, {"sequence": "bench", "phase": "p", "task": f"t{i}"}))
            if len(pending) >= 4096:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)

    asyncio.run(fill())
    log.seal("prefill")
    log.close()
    disk.close()
    assert LOG_KEY_UNIT


def main() -> None:
    secrets = ClusterSecrets.generate("bench")
    tmp = Path(tempfile.mkdtemp(prefix="graven-bench-api-"))
    rows: list[tuple[str, str, str]] = []

    # -- the limit: a bare mutual-TLS echo ------------------------------------------------------------
    from agentproc import free_port

    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=echo_server, args=(secrets, port, ready, stop), daemon=True)
    t.start()
    ready.wait(10)
    crt, key = issue_client_certificate(secrets.ca_key, secrets.ca_cert, roles=("os:admin",))
    ch = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(secrets.ca_crt_pem, key, crt))
    echo = ch.unary_unary("/bench.Echo/Echo")
    echo_t = time_calls(lambda: echo(b"x" * 64, timeout=5))
    ch.close()
    stop.set()
    e50, e99 = percentile(echo_t, 0.5), percentile(echo_t, 0.99)
    rows.append(("mTLS echo unary p50 / p99 (limit)", f"{e50 * 1e3:.3f} / {e99 * 1e3:.3f} ms", "-"))

    # -- the agent ------------------------------------------------------------------------------------------
    agent = AgentProc(tmp / "node", secrets)
    print(f"prefilling a node log with {PREFILL:,} events ...", file=sys.stderr)
    prefill(agent.root, agent, PREFILL)
    t0 = time.perf_counter()
    agent.start()
    with agent.client() as c:
        while True:
            try:
                c.version()
                break
            except Exception:
                time.sleep(0.005)
    start_s = time.perf_counter() - t0
    time.sleep(1.0)
    assert agent.proc is not None
    rss, anon = _rss_mib(agent.proc.pid)  # at rest after boot, before anything reads the whole history
    agent.wait_stage("running")
    try:
        with agent.client() as c:
            v = time_calls(c.version)
            v50, v99 = percentile(v, 0.5), percentile(v, 0.99)
            rows.append(("Version unary p50 / p99", f"{v50 * 1e3:.3f} / {v99 * 1e3:.3f} ms",
                         f"{v50 / e50:.2f}x / {v99 / e99:.2f}x of echo (target <= 1.3x)"))
            data = agent.config_yaml()
            a = time_calls(lambda: c.apply_configuration(data, dry_run=True), 300)
            rows.append(("ApplyConfiguration dry-run p50", f"{statistics.median(a) * 1e3:.3f} ms",
                         f"{statistics.median(a) / e50:.1f}x of echo"))
            n0 = time.perf_counter()
            count = sum(1 for _ in c.events(since=0))
            ev_s = count / (time.perf_counter() - n0)
            rows.append(("Events stream", f"{ev_s:,.0f} events/s ({count:,} events)",
                         f"{ev_s / 100_000:.2f}x of target 100,000/s"))
        rows.append(("agent start to serving (mTLS, log of "
                     f"{PREFILL // 1000}k events)", f"{start_s * 1e3:.0f} ms", "target < 400 ms"))
        rows.append(("agent RSS at rest", f"{rss:.1f} MiB ({anon:.1f} MiB anonymous)",
                     "target < 60 MiB; the rest is shared libraries mapped from disk (grpc, cryptography, libpython)"))
    finally:
        agent.kill()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'figure':32}  ratio")
    for name, fig, ratio in rows:
        print(f"{name.ljust(width)}  {fig:32}  {ratio}")


def _rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
