"""A storm of hostile requests against a real agent: its memory and a bystander's Version latency.

Prints the agent's RSS at rest, at its peak during the storm and after it (target: within 50 MiB of rest), and
Version latency for a second client before and during the storm (median, p99, max), against the physical
limit measured in the same run: Version on the idle agent.

    .venv/bin/python bench/bench_hostile.py [--seconds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from agentproc import AgentProc

from api._pb import machine_pb2 as pb
from api._pki import ClusterSecrets, issue_client_certificate

SERVICE = "/graven.machine.v1.MachineService"


def laughs(levels: int = 9) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


def storm_bodies(config_yaml: bytes) -> list[tuple[str, str, bytes]]:
    def apply(data: bytes) -> bytes:
        return pb.ApplyConfigurationRequest(data=data, dry_run=True).SerializeToString()

    return [
        ("billion laughs", "ApplyConfiguration", apply(laughs())),
        ("nested 990 deep", "ApplyConfiguration", apply(b"a: " + b"[" * 990 + b"]" * 990)),
        ("200k-item flow list", "ApplyConfiguration", apply(b"a: [" + b"0," * 200_000 + b"0]")),
        ("3 MiB flow list", "ApplyConfiguration", apply(b"a: [" + b"0," * (3 << 19) + b"0]")),
        ("50 MB flow list", "ApplyConfiguration", apply(b"a: [" + b"0," * (25 << 20) + b"0]")),
        ("3000 unknown keys", "ApplyConfiguration",
         apply(config_yaml + b"".join(b"unknown_%d: 1\n" % i for i in range(3000)))),
        ("garbage body", "Version", b"\xff" * 64),
        ("garbage body", "Events", b"\xff" * 64),
    ]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def channel(agent: AgentProc, secrets: ClusterSecrets, cn: str) -> grpc.Channel:
    crt, key = issue_client_certificate(secrets.ca_key, secrets.ca_cert, cn=cn, roles=("os:admin",))
    creds = grpc.ssl_channel_credentials(secrets.ca_crt_pem, key, crt)
    return grpc.secure_channel(agent.endpoint, creds, [("grpc.max_send_message_length", 128 << 20)])


def versions(ch: grpc.Channel, seconds: float, sample: Callable[[], None] = lambda: None) -> list[float]:
    call = ch.unary_unary(f"{SERVICE}/Version", request_serializer=pb.Empty.SerializeToString,
                          response_deserializer=pb.VersionResponse.FromString)
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        call(pb.Empty(), timeout=10)
        out.append(time.perf_counter() - started)
        sample()
        time.sleep(0.01)
    return out


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
    return f"median {statistics.median(xs) * 1e3:6.2f} ms  p99 {p99 * 1e3:7.2f} ms  max {xs[-1] * 1e3:7.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the storm")
    ap.add_argument("--workers", type=int, default=2, help="hostile clients sending at once")
    ap.add_argument("--only", default="", help="only the requests whose name contains this")
    args = ap.parse_args()
    secrets = ClusterSecrets.generate("bench-hostile")
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProc(Path(tmp) / "machine", secrets).start()
        try:
            agent.configure()
            assert agent.proc is not None
            pid = agent.proc.pid
            bodies = [b for b in storm_bodies(agent.config_yaml()) if args.only in b[0]]
            with channel(agent, secrets, "bystander") as bystander:
                versions(bystander, 1.0)  # warm: the connection, the first calls
                idle = versions(bystander, 2.0)
                time.sleep(0.5)
                resting = rss_kib(pid)
                stop, counts = threading.Event(), [0]
                statuses: dict[str, str] = {}

                def hostile() -> None:
                    with channel(agent, secrets, "mallory") as ch:
                        i = 0
                        while not stop.is_set():
                            name, method, body = bodies[i % len(bodies)]
                            i += 1
                            try:
                                if method == "Events":
                                    list(ch.unary_stream(f"{SERVICE}/{method}")(body, timeout=30))
                                else:
                                    ch.unary_unary(f"{SERVICE}/{method}")(body, timeout=30)
                                statuses[name] = "OK"
                            except grpc.RpcError as exc:
                                statuses[name] = exc.code().name if isinstance(exc, grpc.Call) else str(exc)
                            counts[0] += 1

                peak = [resting]
                workers = [threading.Thread(target=hostile) for _ in range(args.workers)]
                for w in workers:
                    w.start()
                try:
                    during = versions(bystander, args.seconds, lambda: peak.__setitem__(0, max(peak[0], rss_kib(pid))))
                finally:
                    stop.set()
                    for w in workers:
                        w.join()
                time.sleep(2.0)
                soon = rss_kib(pid)
                time.sleep(6.0)  # the agent trims when it grew (every 5 s)
                after = rss_kib(pid)
                versions(bystander, 0.5)
                print(f"hostile requests: {counts[0]} in {args.seconds:.0f} s from {args.workers} clients")
                for name, status in sorted(statuses.items()):
                    print(f"  {name:22s} -> {status}")
                print(f"Version idle (physical limit): {summary(idle)}")
                print(f"Version during the storm     : {summary(during)}  "
                      f"({statistics.median(during) / statistics.median(idle):.1f}x idle median)")
                grew = (after - resting) / 1024
                print(f"agent RSS: resting {resting / 1024:.1f} MiB, peak {peak[0] / 1024:.1f} MiB, "
                      f"2 s after {soon / 1024:.1f} MiB, 8 s after {after / 1024:.1f} MiB (+{grew:.1f} MiB; "
                      f"target < 50 MiB: "
                      f"{'met' if grew < 50 else 'MISSED'})")
        finally:
            agent.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
