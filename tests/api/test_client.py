"""``GravenClient`` against a real grpc server over real mutual TLS: error mapping from ``google.rpc.Status``,
refused certificates, maintenance mode (pinned certificate), the resuming event follower, upgrade chunks."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from pathlib import Path

import grpc
import pytest
from fakenode import ADMIN, Cluster, FakeNode

from api._client import CHUNK_SIZE, GravenClient
from api._pki import ClusterSecrets, issue_client_certificate
from errors import (
    InvalidConfig,
    InvalidRequest,
    Locked,
    NotFound,
    PermissionDenied,
    TamperedLog,
    Unavailable,
    UntrustedKey,
)
from events import Kind
from events._bundle import read_bundle, verify_bundle


@pytest.fixture
def client(fake_node: FakeNode, cluster: Cluster):
    with GravenClient.from_context(cluster.context, fake_node.endpoint, timeout=5) as c:
        yield c


def test_version_and_status_over_mutual_tls(client: GravenClient, fake_node: FakeNode) -> None:
    v = client.version()
    assert v == {"version": "v1", "image_digest": "ab" * 32, "slot": "A", "boot_id": "boot-0", "node": "node1",
                 "kernel": "6.1.0-test", "os_image": "Graven v1", "provisioner": "container"}
    s = client.status()
    assert (s["stage"], s["ready"], s["slot"], s["sequence"], s["last_fallback"]) == ("running", True, "A", None, None)


def test_error_detail_becomes_the_error_of_its_code(client: GravenClient, fake_node: FakeNode) -> None:
    fake_node.fail("Reboot", Locked.code, "upgrade is running, started by admin", sequence="upgrade",
                   actor="admin[os:admin]")
    with pytest.raises(Locked) as info:
        client.reboot()
    assert info.value.message == "upgrade is running, started by admin"
    assert info.value.details == {"sequence": "upgrade", "actor": "admin[os:admin]", "node": fake_node.endpoint}

    problems = [{"path": "machine.type", "message": "unknown", "line": 3}]
    fake_node.fail("ApplyConfiguration", InvalidConfig.code, "invalid config: 1 error",
                   grpc.StatusCode.INVALID_ARGUMENT, errors=problems)
    with pytest.raises(InvalidConfig) as info2:
        client.apply_configuration(b"version: v1alpha1\n")
    assert info2.value.details["errors"] == problems

    fake_node.fail("Events", TamperedLog.code, "bad signature", grpc.StatusCode.DATA_LOSS, seq=12, reason="signature")
    with pytest.raises(TamperedLog) as info3:
        list(client.events())
    assert (info3.value.seq, info3.value.reason) == (12, "signature")

    fake_node.fail("GetConfiguration", NotFound.code, "no config yet", grpc.StatusCode.NOT_FOUND)
    with pytest.raises(NotFound, match="no config yet"):
        client.get_configuration()


def test_status_without_detail_is_mapped_by_grpc_code(client: GravenClient, fake_node: FakeNode) -> None:
    fake_node.failures["Version"] = lambda ctx: ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "os:reader may not")
    with pytest.raises(PermissionDenied, match="os:reader may not"):
        client.version()
    fake_node.failures["Version"] = lambda ctx: ctx.abort(grpc.StatusCode.UNIMPLEMENTED, "not in maintenance")
    with pytest.raises(InvalidRequest, match="not in maintenance"):
        client.version()


def test_unreachable_node_is_unavailable_naming_it(cluster: Cluster) -> None:
    node = FakeNode(cluster.secrets).start()
    node.stop()
    start = time.monotonic()
    with GravenClient.from_context(cluster.context, node.endpoint, timeout=5) as c, \
            pytest.raises(Unavailable) as info:
        c.version()
    assert node.endpoint in info.value.message and "not reachable" in info.value.message
    assert time.monotonic() - start < 5


def test_certificate_from_another_ca_is_refused(fake_node: FakeNode, cluster: Cluster) -> None:
    other = ClusterSecrets.generate("other")
    crt, key = issue_client_certificate(other.ca_key, other.ca_cert)
    with GravenClient(fake_node.endpoint, cluster.secrets.ca_crt_pem, crt, key, timeout=5) as c, \
            pytest.raises(PermissionDenied) as info:
        c.version()
    assert f"node {fake_node.endpoint}: the node rejected this client certificate (issued by CN=other" \
        in info.value.message
    assert f"the node trusts {cluster.secrets.ca_cert.subject.rfc4514_string()})" in info.value.message
    assert "Version" not in fake_node.calls


def test_expired_certificate_is_refused_and_says_so(fake_node: FakeNode, cluster: Cluster) -> None:
    s = cluster.secrets
    crt, key = issue_client_certificate(s.ca_key, s.ca_cert, ttl=dt.timedelta(seconds=1))
    # issue_certificate backdates by 5 minutes, so a 1 s lifetime has long ended
    with GravenClient(fake_node.endpoint, s.ca_crt_pem, crt, key, timeout=5) as c, \
            pytest.raises(PermissionDenied, match="expired"):
        c.version()


def test_no_client_certificate_is_refused(fake_node: FakeNode) -> None:
    c = GravenClient.insecure(fake_node.endpoint, out=io.StringIO())
    with c, pytest.raises(PermissionDenied, match="requires a client certificate and none was presented"):
        c.version()
    assert "Version" not in fake_node.calls


def test_server_from_another_ca_is_not_trusted(fake_node: FakeNode, cluster: Cluster) -> None:
    other = ClusterSecrets.generate("other")
    ctx = other.client_context([fake_node.endpoint])
    with GravenClient.from_context(ctx, fake_node.endpoint, timeout=5) as c, pytest.raises(UntrustedKey) as info:
        c.version()
    assert f"the certificate of node {fake_node.endpoint} does not verify" in info.value.message


def test_maintenance_mode_pins_the_certificate(maintenance_node: FakeNode) -> None:
    out = io.StringIO()
    with GravenClient.insecure(maintenance_node.endpoint, out=out) as c:
        assert c.version()["version"] == "v1"
        assert c.fingerprint and c.fingerprint in out.getvalue()
        fp = c.fingerprint
    with GravenClient.insecure(maintenance_node.endpoint, fingerprint=fp.upper(), quiet=True) as c:
        assert c.status()["stage"] == "running"
    with pytest.raises(UntrustedKey, match="not the expected"):
        GravenClient.insecure(maintenance_node.endpoint, fingerprint="00" * 32, quiet=True)


def test_follow_resumes_across_restarts_exactly_once(fake_node: FakeNode, cluster: Cluster) -> None:
    fake_node.batch = 3  # several batches per burst, so a restart can fall between them
    seen: list[int] = []
    disconnects: list[str] = []
    total = 120

    def writer() -> None:
        for i in range(total):
            fake_node.log.append(Kind.TASK_STARTED, {"i": i}, ADMIN)
            if i in (30, 70, 100):
                fake_node.restart(down_for=0.4 if i == 70 else 0.05)
            time.sleep(0.002)

    with GravenClient.from_context(cluster.context, fake_node.endpoint, timeout=5) as c:
        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 30
        for event in c.follow(0, deadline=deadline, retry_for=10,
                              on_disconnect=lambda e: disconnects.append(e.message) or True):
            seen.append(event.seq)
            if event.seq == total:  # seq 0 is the genesis
                break
        t.join()
    assert seen == list(range(total + 1))
    assert len(disconnects) >= 3


def test_follow_with_filters_and_tail(fake_node: FakeNode, client: GravenClient) -> None:
    for i in range(10):
        fake_node.log.append(Kind.CONFIG_APPLIED if i % 2 else Kind.TASK_STARTED, {"i": i}, ADMIN)
    kinds = [e.kind for e in client.events(kinds=["config.*"])]
    assert kinds == [Kind.CONFIG_APPLIED] * 5
    assert [e.seq for e in client.events(tail=3)] == [8, 9, 10]
    got = []
    for e in client.follow(tail=2, deadline=time.monotonic() + 5):
        got.append(e.seq)
        if len(got) == 2:
            break
    assert got == [9, 10]


def test_follow_ends_at_its_deadline(client: GravenClient) -> None:
    start = time.monotonic()
    assert [e.seq for e in client.follow(0, deadline=start + 1.0)] == [0]
    assert 0.9 < time.monotonic() - start < 3


def test_follow_gives_up_after_retry_for(cluster: Cluster) -> None:
    node = FakeNode(cluster.secrets).start()
    node.stop()
    with GravenClient.from_context(cluster.context, node.endpoint) as c, \
            pytest.raises(Unavailable, match="stayed unreachable"):
        list(c.follow(0, retry_for=0.5))


def test_upgrade_streams_chunks_with_progress(tmp_path: Path, client: GravenClient, fake_node: FakeNode) -> None:
    image = tmp_path / "v2.img"
    image.write_bytes(b"x" * (2 * CHUNK_SIZE + 123))
    progress: list[tuple[int, int]] = []
    accepted = client.upgrade(image, progress=lambda sent, total: progress.append((sent, total)))
    assert accepted.sequence == "upgrade" and accepted.actor == "admin" and accepted.roles == ("os:admin",)
    msgs = fake_node.upgrade_messages
    assert [len(m.chunk) for m in msgs] == [CHUNK_SIZE, CHUNK_SIZE, 123]
    assert msgs[0].total_size == image.stat().st_size and not msgs[0].stage
    assert progress[-1] == (image.stat().st_size, image.stat().st_size) and len(progress) == 3

    assert client.upgrade("https://example.invalid/v2.img", stage=True).sequence == "stage-upgrade"
    assert fake_node.upgrade_messages[0].url == "https://example.invalid/v2.img"
    with pytest.raises(NotFound, match="no such file"):
        client.upgrade(tmp_path / "missing.img")


def test_audit_export_is_a_verifiable_bundle(client: GravenClient, fake_node: FakeNode, cluster: Cluster) -> None:
    for i in range(5):
        fake_node.log.append(Kind.TASK_STARTED, {"i": i})
    buf = io.BytesIO()
    size = client.audit_export(buf)
    assert size == len(buf.getvalue()) > 0
    buf.seek(0)
    report, _ = verify_bundle(read_bundle(buf), cluster.secrets.ca_cert)
    assert report.last_seq == 5


def test_generate_client_configuration(client: GravenClient, cluster: Cluster) -> None:
    r = client.generate_client_configuration(["os:reader"], 3600, name="carol")
    assert r["ca"] == cluster.secrets.ca_crt_pem
    assert b"BEGIN CERTIFICATE" in r["crt"] and b"PRIVATE KEY" in r["key"]


def test_an_ed25519_serving_key_is_named_as_the_cause(cluster: Cluster) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from api._pki import cert_pem
    from pki import issue_certificate, private_key_pem

    s = cluster.secrets
    node = FakeNode(s)
    key = Ed25519PrivateKey.generate()
    node.crt = cert_pem(issue_certificate(s.ca_key, s.ca_cert, key.public_key(), cn="node1", server=True,
                                          sans=["127.0.0.1"]))
    node.key = private_key_pem(key)
    node.start()
    try:
        with GravenClient.from_context(cluster.context, node.endpoint, timeout=5) as c, \
                pytest.raises(UntrustedKey, match=r"serving certificate has an Ed25519 key.*ECDSA P-256"):
            c.version()
    finally:
        node.stop()
