"""The API issue end to end: a real agent process, real TCP, real certificates, driven by the client."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agentproc import AgentProc, env

from api._client import GravenClient
from api._pki import ClusterSecrets, issue_client_certificate
from errors import BadImage, GravenError, InvalidRequest, Locked, PermissionDenied, Unavailable, UntrustedKey

ADMIN, OPERATOR, READER = ("os:admin",), ("os:operator",), ("os:reader",)


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate("e2e")


@pytest.fixture
def node(tmp_path: Path, secrets: ClusterSecrets):
    agent = AgentProc(tmp_path / "machine", secrets).start()
    try:
        agent.configure()
        yield agent
    finally:
        agent.kill()


def events_of(agent: AgentProc, kind: str) -> list:
    with agent.client() as c:
        return [e for e in c.events(since=0) if e.kind == kind]


READS = {
    "Version": lambda c: c.version(),
    "MachineStatus": lambda c: c.status(),
    "GetConfiguration": lambda c: c.get_configuration(),
    "Events": lambda c: list(c.events(since=0)),
    "BootTrace": lambda c: c.boot_trace(),
}


def test_roles_against_every_rpc(node: AgentProc) -> None:
    for roles in (ADMIN, OPERATOR, READER):
        with node.client(roles, cn=f"user-{roles[0]}") as c:
            for call in READS.values():
                call(c)  # every role reads
            cfg = c.get_configuration()
            assert cfg["redacted"] is (roles != ADMIN)
            assert ("sha256:" in cfg["data"]) is (roles != ADMIN)
    denied = [
        (OPERATOR, "ApplyConfiguration", lambda c: c.apply_configuration(node.config_yaml(), dry_run=True)),
        (OPERATOR, "Reset", lambda c: c.reset(force=True)),
        (OPERATOR, "GenerateClientConfiguration", lambda c: c.generate_client_configuration(["os:admin"], 60)),
        (READER, "Reboot", lambda c: c.reboot()),
        (READER, "Shutdown", lambda c: c.shutdown()),
        (READER, "Upgrade", lambda c: c.upgrade("file:///nonexistent.img")),
        (READER, "Rollback", lambda c: c.rollback()),
        (READER, "ApplyConfiguration", lambda c: c.apply_configuration(node.config_yaml(), dry_run=True)),
    ]
    for roles, _method, call in denied:
        with node.client(roles, cn="mallory") as c, pytest.raises(PermissionDenied):
            call(c)
    logged = {(e.payload["method"], e.actor.id) for e in events_of(node, "api.denied")}
    assert {(m, "mallory") for _, m, _ in denied} <= logged
    # The allowed side of the same calls: authorized, then judged on their merits.
    with node.client(ADMIN) as c:
        diff = c.apply_configuration(node.config_yaml(), dry_run=True)
        assert diff["diff"] == []
        with pytest.raises(InvalidRequest, match="never shipped"):
            c.reset()  # admin may reset, but not destroy unshipped events without --force
        issued = c.generate_client_configuration(["os:reader"], 600, "bob")
        assert b"BEGIN CERTIFICATE" in issued["crt"]
    with node.client(OPERATOR) as c, pytest.raises(BadImage, match="no trusted image keys"):
        c.upgrade("file:///nonexistent.img")  # operator may ask; the image is verified before acceptance
    assert [e for e in events_of(node, "api.refused") if "never shipped" in e.payload["reason"]]


def test_refused_certificates(node: AgentProc, secrets: ClusterSecrets) -> None:
    other = ClusterSecrets.generate("other")
    crt, key = issue_client_certificate(other.ca_key, other.ca_cert, roles=ADMIN)
    with GravenClient(node.endpoint, secrets.ca_crt_pem, crt, key, timeout=5) as c, pytest.raises(GravenError):
        c.version()
    expired = node.client(ADMIN, ttl=dt.timedelta(seconds=1))
    time.sleep(1.5)
    with expired, pytest.raises(GravenError, match=r"(?i)expired|refused|certificate"):
        expired.version()
    # A server-auth-only certificate from the right CA used as a client certificate.
    from api._pki import issue_server_certificate

    crt, key = issue_server_certificate(secrets.ca_key, secrets.ca_cert, cn="impostor", sans=["127.0.0.1"])
    with GravenClient(node.endpoint, secrets.ca_crt_pem, crt, key, timeout=5) as c, pytest.raises(GravenError):
        c.version()
    with GravenClient(node.endpoint, secrets.ca_crt_pem, None, None, timeout=5) as c, pytest.raises(GravenError):
        c.version()
    with node.client(ADMIN) as c:
        assert c.version()["node"] == "e2e"  # and the node still serves the right client


def test_two_concurrent_reboots_one_is_locked(node: AgentProc) -> None:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def ask() -> None:
        with node.client(OPERATOR, cn="op") as c:
            barrier.wait()
            try:
                results.append(c.reboot())
            except GravenError as exc:
                results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    locked = [r for r in results if isinstance(r, Locked)]
    accepted = [r for r in results if not isinstance(r, GravenError)]
    assert len(locked) == 1 and len(accepted) == 1, results
    assert "reboot" in locked[0].message and "op" in locked[0].message
    assert node.wait_exit() == 10  # the agent ends the boot with "reboot"


def test_events_follow_across_a_reboot(node: AgentProc) -> None:
    with node.client() as c:
        start = c.status()["log_next_seq"]
    seen: list[int] = []

    def follow() -> None:
        with node.client() as c:
            for event in c.follow(since=0, deadline=time.monotonic() + 40, retry_for=30):
                seen.append(event.seq)
                if event.kind == "sequence.stopped" and event.payload.get("sequence") == "boot" and \
                        event.seq > start:
                    return

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)
    with node.client() as c:
        c.reboot()
    assert node.wait_exit() == 10
    node.start()  # what the supervisor does after exit 10: boot again
    t.join(60)
    assert not t.is_alive()
    assert seen == list(range(seen[-1] + 1)), "every seq exactly once, in order"


def test_sigkill_during_apply_configuration(tmp_path: Path, secrets: ClusterSecrets) -> None:
    agent = AgentProc(tmp_path / "machine", secrets).start()
    try:
        agent.configure()
        rng = random.Random(7)
        for round_ in range(6):
            yaml_bytes = agent.config_yaml().replace(b"hostname: e2e", f"hostname: e2e-{round_}".encode())
            acked = threading.Event()

            def apply(yaml_bytes: bytes = yaml_bytes, acked: threading.Event = acked) -> None:
                try:
                    with agent.client() as c:
                        c.apply_configuration(yaml_bytes, mode="no-reboot")
                    acked.set()
                except (GravenError, Unavailable):
                    pass

            t = threading.Thread(target=apply)
            t.start()
            time.sleep(rng.uniform(0.0, 0.05))
            agent.kill()
            t.join(15)
            agent.start()
            agent.wait_stage("running")
            with agent.client() as c:
                st = c.get_configuration()
                evs = [e for e in c.events(since=0) if e.kind == "config.applied"]
            has_config = f"hostname: e2e-{round_}" in st["data"]
            has_event = any(any(ch.get("new") == f"e2e-{round_}" for ch in e.payload.get("changes", []))
                            for e in evs)
            if acked.is_set():
                assert has_config and has_event, f"round {round_}: acknowledged but lost"
            assert has_config == has_event, f"round {round_}: config and event disagree"
        out = subprocess.run([sys.executable, "-m", "cli", "audit", "verify",
                              str(agent.root), "--ca", str(_ca(tmp_path, secrets))],
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        agent.kill()


def _ca(tmp_path: Path, secrets: ClusterSecrets) -> Path:
    p = tmp_path / "ca.pem"
    p.write_bytes(secrets.ca_crt_pem)
    return p


def test_maintenance_mode_refuses_everything_but_apply(tmp_path: Path, secrets: ClusterSecrets) -> None:
    agent = AgentProc(tmp_path / "m", secrets).start()
    try:
        with GravenClient.insecure(agent.endpoint, quiet=True) as c:
            assert c.status()["stage"] == "maintenance"
            with pytest.raises(PermissionDenied, match="maintenance"):
                c.reboot()
            with pytest.raises(GravenError):
                c.apply_configuration(b"version: v1alpha1\nmachine: {type: nope}\n")
        with pytest.raises(UntrustedKey):
            GravenClient.insecure(agent.endpoint, fingerprint="00" * 32, quiet=True)
    finally:
        agent.kill()


def test_try_mode_reverts_unless_confirmed(node: AgentProc) -> None:
    tried = node.config_yaml().replace(b"hostname: e2e", b"hostname: on-trial")
    with node.client() as c:
        c.apply_configuration(tried, mode="try", try_timeout=1)
        assert "on-trial" in c.get_configuration()["data"]
        time.sleep(2.0)
        assert "on-trial" not in c.get_configuration()["data"], "not confirmed: reverted after the timeout"
        reverted = [e for e in c.events(since=0) if e.kind == "config.reverted"]
        assert reverted and reverted[-1].payload["reason"] == "try timed out"
        c.apply_configuration(tried, mode="try", try_timeout=2)
        confirmed = c.apply_configuration(tried, mode="no-reboot")  # the same config again confirms it
        assert any("confirmed" in w for w in confirmed["warnings"])
        time.sleep(2.5)
        assert "on-trial" in c.get_configuration()["data"], "confirmed: kept past the timeout"
        assert [e for e in c.events(since=0) if e.kind == "config.confirmed"]
    node.kill()
    node.start()
    node.wait_stage("running")
    with node.client() as c:
        assert "on-trial" in c.get_configuration()["data"], "confirmed: persisted across a restart"


def test_health_and_reflection_answer_standard_tools(node: AgentProc, secrets: ClusterSecrets) -> None:
    """What grpcurl and a health probe ask, with any certificate from the cluster's CA."""
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    crt, key = issue_client_certificate(secrets.ca_key, secrets.ca_cert, cn="probe", roles=READER)
    with grpc.secure_channel(node.endpoint, grpc.ssl_channel_credentials(secrets.ca_crt_pem, key, crt)) as ch:
        check = health_pb2_grpc.HealthStub(ch).Check
        for service in ("", "graven.machine.v1.MachineService"):
            assert check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        assert set(db.get_services()) == {"graven.machine.v1.MachineService", "grpc.health.v1.Health",
                                          "grpc.reflection.v1.ServerReflection",
                                          "grpc.reflection.v1alpha.ServerReflection"}
        methods = {m.name for m in DescriptorPool(db).FindServiceByName("graven.machine.v1.MachineService").methods}
        assert {"Version", "MachineStatus", "ApplyConfiguration", "Upgrade", "Events", "AuditExport"} <= methods
