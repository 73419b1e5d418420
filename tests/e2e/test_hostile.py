"""Hostile input at the API (issue 10): a client holding a valid certificate sends what an attacker would, to a
real agent over real TLS. Each refusal is checked for its gRPC status, its ErrorDetail code, the limit it names
and its time; other clients keep being served; the node verifies its log afterwards and its memory comes back."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentproc import env
from machinekit import Images, Machine, Machines, Secrets

from api._client import GravenClient, error_detail
from api._clientconfig import ClientConfig, Context
from api._pb import machine_pb2 as pb
from api._pki import ClusterSecrets, issue_client_certificate
from config.limits import LIMITS
from image._build import build_image

pytestmark = [pytest.mark.timeout(300)]
SERVICE = "/graven.machine.v1.MachineService"
OK = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def cluster(secrets: Secrets) -> ClusterSecrets:
    d = secrets.dir
    return ClusterSecrets.load(secrets.name, (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes(),
                               (d / "image.key").read_bytes())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, secrets: Secrets, images: Images) -> Iterator[Machine]:
    """A node as ``gravenctl cluster create`` makes one: installed from v1, trusting the cluster's image key."""
    ms = Machines(tmp_path_factory.mktemp("hostile"), secrets, images)
    try:
        yield ms.installed("hostile")
    finally:
        ms.cleanup()


def client(node: Machine, cluster: ClusterSecrets, cn: str = "tester") -> GravenClient:
    crt, key = issue_client_certificate(cluster.ca_key, cluster.ca_cert, cn=cn, roles=("os:admin",))
    return GravenClient(node.endpoint, cluster.ca_crt_pem, crt, key, timeout=10)


def config_yaml(node: Machine) -> bytes:
    return (node.root / "config.yaml").read_bytes()


@pytest.fixture(scope="module")
def channel(node: Machine, cluster: ClusterSecrets) -> Iterator[grpc.Channel]:
    """A plain grpcio channel with grpcio's defaults (16 KiB metadata hard limit), as any client has."""
    crt, key = issue_client_certificate(cluster.ca_key, cluster.ca_cert, cn="mallory", roles=("os:admin",))
    creds = grpc.ssl_channel_credentials(cluster.ca_crt_pem, key, crt)
    with grpc.secure_channel(node.endpoint, creds, [("grpc.max_send_message_length", 128 << 20)]) as ch:
        yield ch


class Outcome:
    def __init__(self, code: grpc.StatusCode, detail: pb.ErrorDetail | None, seconds: float, trailer: int,
                 message: str) -> None:
        self.code, self.detail, self.seconds, self.trailer, self.message = code, detail, seconds, trailer, message

    @property
    def details(self) -> dict[str, Any]:
        return json.loads(self.detail.details_json) if self.detail and self.detail.details_json else {}

    def expect(self, code: grpc.StatusCode, detail: str, within: float = 2.0, **details: Any) -> Outcome:
        got = pb.Code.Name(self.detail.code) if self.detail else None
        assert (self.code, got) == (code, detail), f"{self.code} {got}: {self.message}"
        assert self.seconds < within, f"took {self.seconds:.2f}s"
        assert self.trailer < LIMITS.status_bytes, f"trailer of {self.trailer} bytes"
        for k, v in details.items():
            assert self.details.get(k) == v, (k, self.details)
        return self


def call(ch: grpc.Channel, method: str, body: bytes | list[bytes], kind: str = "unary", timeout: float = 20
         ) -> Outcome:
    """``method`` with ``body`` sent as is (raw bytes, no serializer), timed."""
    started = time.monotonic()
    path = method if method.startswith("/") else f"{SERVICE}/{method}"
    try:
        if kind == "unary":
            ch.unary_unary(path)(body, timeout=timeout)
        elif kind == "client-stream":
            ch.stream_unary(path)(iter(body if isinstance(body, list) else [body]), timeout=timeout)
        else:
            list(ch.unary_stream(path)(body, timeout=timeout))
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        trailer = sum(len(k) + len(v) for k, v in exc.trailing_metadata() or ())
        return Outcome(exc.code(), error_detail(exc), time.monotonic() - started, trailer, exc.details() or "")
    return Outcome(OK, None, time.monotonic() - started, 0, "")


def apply(ch: grpc.Channel, data: bytes) -> Outcome:
    return call(ch, "ApplyConfiguration", pb.ApplyConfigurationRequest(data=data, dry_run=True).SerializeToString())


def laughs(levels: int = 9) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- the config -------------------------------------------------------------------------------------------
def test_billion_laughs_is_refused_at_its_first_alias(channel: grpc.Channel) -> None:
    assert len(laughs()) < 700
    apply(channel, laughs()).expect(INVALID, "LIMIT_EXCEEDED", within=0.5, limit="yaml_aliases", max=0)


def test_deep_nesting_is_a_limit_not_a_recursion_error(channel: grpc.Channel) -> None:
    apply(channel, b"a: " + b"[" * 990 + b"]" * 990).expect(INVALID, "LIMIT_EXCEEDED", within=0.5,
                                                            limit="yaml_depth", max=32)


def test_a_50_mb_flow_list_is_refused_before_it_is_read(channel: grpc.Channel) -> None:
    out = apply(channel, b"a: [" + b"0," * (25 << 20) + b"0]")
    assert out.code == EXHAUSTED and out.seconds < 5, (out.code, out.message)
    assert str(LIMITS.message_bytes) in out.message  # gRPC's own refusal names the limit and the size


def test_a_document_over_the_config_size_is_too_large(channel: grpc.Channel) -> None:
    doc = b"a: [" + b"0," * (1 << 20) + b"0]"
    apply(channel, doc).expect(EXHAUSTED, "TOO_LARGE", limit="config_bytes", value=len(doc), max=LIMITS.config_bytes)


def test_many_nodes_are_refused(channel: grpc.Channel) -> None:
    apply(channel, b"a: [" + b"0," * 100_000 + b"0]").expect(INVALID, "LIMIT_EXCEEDED", limit="yaml_nodes")


def test_hundreds_of_unknown_keys_fit_one_status(channel: grpc.Channel, node: Machine) -> None:
    """grpcio's own client (16 KiB metadata hard limit) gets INVALID_CONFIG, not RESOURCE_EXHAUSTED."""
    doc = config_yaml(node) + "".join(f"unknown_key_number_{i}_{'é' * 40}: {i}\n" for i in range(500)).encode()
    out = apply(channel, doc).expect(INVALID, "INVALID_CONFIG")
    assert len(out.details["errors"]) + out.details.get("errors_omitted", 0) == LIMITS.reported_errors
    assert out.details["more_errors"] == 500 - LIMITS.reported_errors
    big_map = config_yaml(node) + b"".join(b"k%d: %s\n" % (i, b"v" * 20) for i in range(8_000))
    apply(channel, big_map).expect(INVALID, "INVALID_CONFIG")


# -- bodies that are not their message, out-of-range fields ------------------------------------------------
def kind(m: Any) -> str:
    return "client-stream" if m.client_streaming else "server-stream" if m.server_streaming else "unary"


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff\xff", b"\x0a\x05abc", b"\x08" + b"\xff" * 11])
def test_every_rpc_refuses_a_body_that_is_not_its_message(channel: grpc.Channel, body: bytes) -> None:
    for m in pb.DESCRIPTOR.services_by_name["MachineService"].methods:
        call(channel, m.name, body, kind(m)).expect(INVALID, "INVALID_REQUEST", within=1.0)


def test_health_refuses_a_body_that_is_not_its_message_too(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2

    call(channel, "/grpc.health.v1.Health/Check", b"\xff\xff\xff").expect(INVALID, "INVALID_REQUEST")
    call(channel, "/grpc.health.v1.Health/Watch", b"\xff\xff\xff", "server-stream").expect(
        INVALID, "INVALID_REQUEST")
    ok = call(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest().SerializeToString())
    assert ok.code == OK


def test_another_message_is_not_taken_for_this_one(channel: grpc.Channel) -> None:
    other = pb.ApplyConfigurationRequest(data=b"version: x", dry_run=True).SerializeToString()
    out = call(channel, "Version", other).expect(INVALID, "INVALID_REQUEST")
    assert "unknown field" in out.message
    call(channel, "Reboot", other).expect(INVALID, "INVALID_REQUEST")  # and nothing reboots


def test_out_of_range_fields_are_refused(channel: grpc.Channel) -> None:
    call(channel, "Events", pb.EventsRequest(since_seq=-2).SerializeToString(), "server-stream").expect(
        INVALID, "INVALID_REQUEST", field="since_seq", value=-2)
    call(channel, "AuditExport", pb.AuditExportRequest(to_seq=-2).SerializeToString(), "server-stream").expect(
        INVALID, "INVALID_REQUEST", field="to_seq", value=-2)
    call(channel, "BootTrace", pb.BootTraceRequest(boot=-5).SerializeToString()).expect(INVALID, "INVALID_REQUEST")
    call(channel, "Events", pb.EventsRequest(kinds=["x"] * 1000).SerializeToString(), "server-stream").expect(
        INVALID, "LIMIT_EXCEEDED", limit="list_items")
    call(channel, "Network", pb.NetworkRequest(what="x" * 100_000).SerializeToString()).expect(
        INVALID, "LIMIT_EXCEEDED", limit="name_bytes")
    ok = call(channel, "Events", pb.EventsRequest(since_seq=-1, tail_events=1).SerializeToString(), "server-stream")
    assert ok.code == OK  # -1 with tail_events: documented, accepted


# -- upgrade: verified before it is accepted ----------------------------------------------------------------
def upload(data: bytes, total: int | None = None) -> list[bytes]:
    size = len(data) if total is None else total
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)] or [b""]
    return [pb.UpgradeRequest(chunk=c, total_size=size if i == 0 else 0).SerializeToString()
            for i, c in enumerate(chunks)]


def spool(node: Machine) -> list[Path]:
    return [p for p in node.root.rglob("spool/*") if p.is_file()]


def test_bad_images_are_refused_before_acceptance_and_not_kept(channel: grpc.Channel, node: Machine,
                                                               images: Images, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    good = images.v1.read_bytes()
    other = tmp_path / "other.img"
    build_image("v1", Ed25519PrivateKey.generate(), other, created=1_700_000_000)
    before = len(events(node, "api.refused"))
    cases = [
        ("random blob", upload(os.urandom(300_000)), "BAD_IMAGE", "not a Graven image"),
        ("truncated", upload(good[: len(good) // 2]), "BAD_IMAGE", "truncated"),
        ("unknown key", upload(other.read_bytes()), "UNTRUSTED_KEY", "not trusted"),
        ("short upload", upload(good[:1000], total=len(good)), "INVALID_REQUEST", "truncated"),
    ]
    for name, msgs, code, words in cases:
        out = call(channel, "Upgrade", msgs, "client-stream").expect(INVALID, code, within=5.0)
        assert words in out.message, (name, out.message)
        assert not spool(node), f"{name}: the refused upload stays in the spool"
    for url in ("gopher://example.com/evil.img", "http://example.com/x.img", "ftp://x/y"):
        out = call(channel, "Upgrade", [pb.UpgradeRequest(url=url).SerializeToString()], "client-stream")
        out.expect(INVALID, "LIMIT_EXCEEDED", within=1.0, limit="url_schemes", max=["file", "https"])
    out = call(channel, "Upgrade", [pb.UpgradeRequest(url="file:///nonexistent.img").SerializeToString()],
               "client-stream").expect(INVALID, "BAD_IMAGE", within=1.0)
    refused = events(node, "api.refused")[before:]
    assert [e["payload"]["code"] for e in refused] == ["BAD_IMAGE", "BAD_IMAGE", "UNTRUSTED_KEY", "BAD_IMAGE"]
    assert not [e for e in events(node, "sequence.started") if e["payload"]["sequence"] == "upgrade"]
    assert node.status()["version"] == "v1"


def test_upload_size_and_free_space_are_checked_before_writing(channel: grpc.Channel, node: Machine) -> None:
    first = [pb.UpgradeRequest(chunk=b"x" * 1000, total_size=LIMITS.upload_bytes + 1).SerializeToString()]
    call(channel, "Upgrade", first, "client-stream").expect(EXHAUSTED, "TOO_LARGE", limit="upload_bytes",
                                                            value=LIMITS.upload_bytes + 1)
    st = os.statvfs(node.root)
    free = st.f_bavail * st.f_frsize
    if free < LIMITS.upload_bytes:
        first = [pb.UpgradeRequest(chunk=b"x" * 1000, total_size=free - 1000).SerializeToString()]
        call(channel, "Upgrade", first, "client-stream").expect(EXHAUSTED, "DISK_FULL", limit="upload_free_bytes")
    assert not spool(node)


def gravenctl(node: Machine, cluster: ClusterSecrets, tmp_path: Path, *args: str,
              crt_key: tuple[bytes, bytes] | None = None) -> subprocess.CompletedProcess[str]:
    crt, key = crt_key or issue_client_certificate(cluster.ca_key, cluster.ca_cert, cn="ctl", roles=("os:admin",))
    cfg = ClientConfig(context="h", contexts={"h": Context([node.endpoint], [node.endpoint], cluster.ca_crt_pem,
                                                          crt, key)})
    path = cfg.save(tmp_path / "gravenconfig")
    return subprocess.run([sys.executable, "-m", "cli", "--gravenconfig", str(path), *args],
                          capture_output=True, text=True, env=env(), timeout=60)


def test_gravenctl_upgrade_of_a_bad_image_exits_non_zero_without_wait(node: Machine, cluster: ClusterSecrets,
                                                                      tmp_path: Path) -> None:
    evil = tmp_path / "evil.img"
    evil.write_bytes(os.urandom(100_000))
    r = gravenctl(node, cluster, tmp_path, "upgrade", "-i", str(evil))
    assert r.returncode != 0 and "not a Graven image" in r.stderr, r.stdout + r.stderr
    assert not spool(node)


def test_a_client_certificate_from_another_ca_is_named_as_such(node: Machine, cluster: ClusterSecrets,
                                                               tmp_path: Path) -> None:
    other = ClusterSecrets.generate("elsewhere")
    crt, key = issue_client_certificate(other.ca_key, other.ca_cert, cn="stranger", roles=("os:admin",))
    r = gravenctl(node, cluster, tmp_path, "version", crt_key=(crt, key))
    assert r.returncode != 0
    assert "the node rejected this client certificate (issued by" in r.stderr, r.stderr
    assert "CN=elsewhere" in r.stderr and f"the node trusts {cluster.ca_cert.subject.rfc4514_string()}" in r.stderr
    assert "failed to connect" not in r.stderr


# -- the node keeps serving, and comes back -------------------------------------------------------------------
STORM: list[tuple[str, Callable[[Machine], bytes]]] = [
    ("laughs", lambda n: laughs()),
    ("deep", lambda n: b"a: " + b"[" * 990 + b"]" * 990),
    ("nodes", lambda n: b"a: [" + b"0," * 200_000 + b"0]"),
    ("unknown keys", lambda n: config_yaml(n) + b"".join(b"k%d: 1\n" % i for i in range(3000))),
    ("big", lambda n: b"a: [" + b"0," * (3 << 19) + b"0]"),
]


def storm(node: Machine, ch: grpc.Channel, stop: threading.Event, seen: list[str]) -> None:
    i = 0
    while not stop.is_set():
        name, make = STORM[i % len(STORM)]
        out = apply(ch, make(node))
        seen.append(f"{name}:{out.code.name}")
        call(ch, "Version", b"\xff\xff\xff")
        i += 1


def events(node: Machine, kind: str) -> list[dict[str, Any]]:
    return node.events(kind)


def test_version_answers_during_a_storm_and_memory_comes_back(node: Machine, channel: grpc.Channel,
                                                              cluster: ClusterSecrets, tmp_path: Path) -> None:
    pid = node.pid1() or node.agent_pid()  # the agent itself: a container machine's PID 1, not its launcher
    assert pid is not None
    with client(node, cluster) as c:
        c.version()
    resting = rss_kib(pid)
    stop, seen, peak = threading.Event(), [], resting
    workers = [threading.Thread(target=storm, args=(node, channel, stop, seen)) for _ in range(2)]
    for w in workers:
        w.start()
    latencies = []
    try:
        with client(node, cluster, cn="bystander") as c:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                started = time.monotonic()
                c.version()
                latencies.append(time.monotonic() - started)
                peak = max(peak, rss_kib(pid))
                time.sleep(0.02)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert len(seen) >= 10 and not [s for s in seen if s.endswith(("UNKNOWN", "OK"))], seen
    median, worst = statistics.median(latencies), max(latencies)
    print(f"Version during the storm: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms, "
          f"{len(seen)} hostile requests; RSS resting {resting >> 10} MiB, peak {peak >> 10} MiB")
    assert median < 0.05 and worst < 1.0, (median, worst)
    time.sleep(6.0)  # the agent trims its heap when it grew (every 5 s) and after each large request
    after = rss_kib(pid)
    print(f"RSS after the storm: {after >> 10} MiB")
    assert after - resting < 50 << 10, (resting, peak, after)
    # and the node still verifies its log
    r = node.audit_verify()
    assert r.returncode == 0, r.stdout + r.stderr


def test_reflection_answers_v1_as_current_grpcurl_asks(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2 as r

    for version in ("v1", "v1alpha"):
        info = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=r.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=r.ServerReflectionResponse.FromString)
        replies = list(info(iter([r.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"graven.machine.v1.MachineService", "grpc.reflection.v1.ServerReflection"} <= names, version
        described = list(info(iter([r.ServerReflectionRequest(
            file_containing_symbol="graven.machine.v1.MachineService")]), timeout=5))
        assert described[0].file_descriptor_response.file_descriptor_proto, version
