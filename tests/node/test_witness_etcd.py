"""Witnessed logs over a real etcd (Debian's etcd-server, mutual TLS): a node publishes its checkpoints with
compare-and-swap, a witness cosigns those that extend what it accepted, refuses a rewritten or truncated history
(signed events, once each) even after a restart, and an auditor catches a log cut or forked after a cosigned
checkpoint, naming the checkpoint, the witness and the seq."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcdkit import ETCD, MISSING, EtcdKit

from errors import NotFound, PermissionDenied, TamperedLog, Unavailable, UntrustedKey, VerificationError
from events import MemoryEventLog, verify_items
from events._since import Seen
from events._verify import ChainVerifier
from events._witnessed import (
    Cosigned,
    Published,
    checkpoint_key,
    cosigned_key,
    verify_against_witnesses,
    verify_witness_certificate,
)
from node import _witness
from node._witness import EtcdStore, Publisher, Witness, WitnessKey, WitnessNode, read_witnessed
from pki import load_certificate, private_key_pem
from storage._etcd import EtcdClient

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)
ORIGIN = "graven/node1"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdKit]:
    k = EtcdKit(tmp_path_factory.mktemp("etcd"))
    k.bootstrap("cp1")
    yield k
    k.stop_all()


def aw(coro: Any) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def run(kit: EtcdKit, fn: Any) -> Any:
    async def main() -> Any:
        async with EtcdClient([kit.members[0].client_url], kit.client_tls(), timeout=3.0) as c:
            return await fn(c)

    return asyncio.run(main())


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.seen.append((kind, payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.seen if k == kind]


def publish(kit: EtcdKit, pub: Publisher) -> int | None:
    out: int | None = run(kit, lambda c: pub.step(EtcdStore(c)))
    return out


def _log(pki: Any, n: int, tag: str = "x") -> MemoryEventLog:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin=ORIGIN, boot_id="b0")
    for i in range(n):
        log.append("test.event", {"i": i, "tag": tag})
    return log


def _seen(log: MemoryEventLog, ca: Any) -> Seen:
    v = ChainVerifier(ca)
    report = v.feed_all(log.read_raw())
    return Seen.of(report, v)


def test_publish_cosign_refuse_and_audit(kit: EtcdKit, pki: Any, tmp_path: Path) -> None:
    ca_pem = pki.ca_pem
    ca_key = private_key_pem(pki.ca_key)
    run(kit, lambda c: c.delete(b"/graven/witness/", prefix=True))
    wev, nev = Events(), Events()
    key = WitnessKey(tmp_path / "w", "cp1", ca_pem, ca_key)
    assert key.name == "graven-witness/cp1"
    witness = Witness(key, ca_pem, wev, own_origin="graven/cp1")

    genuine = _log(pki, 20)
    genuine.checkpoint("witness")
    pub = Publisher(genuine, nev)
    assert publish(kit, pub) == 21  # genesis and 20 events: the checkpoint stands at seq 21
    assert run(kit, witness.step) == [ORIGIN]
    assert run(kit, witness.step) == []  # nothing new: nothing written
    assert [p["origin"] for p in wev.of("witness.adopted")] == [ORIGIN]

    # the log grows: the next checkpoint is published with a proof from the size the witness holds
    for i in range(33):
        genuine.append("test.event", {"i": 100 + i})
    genuine.checkpoint("witness")
    assert publish(kit, pub) == 55
    stored = Published.from_json(run(kit, lambda c: c.get(checkpoint_key(ORIGIN))).value)
    assert sorted(stored.proofs) == [21]
    assert run(kit, witness.step) == [ORIGIN]
    entry = Cosigned.from_json(run(kit, lambda c: c.get(cosigned_key(ORIGIN, key.name))).value)
    assert (entry.size, entry.witness) == (55, "graven-witness/cp1")

    # the auditor: the genuine log extends every cosigned checkpoint
    rows = verify_against_witnesses(_seen(genuine, pki.ca_cert), ORIGIN, [entry], pki.ca_cert)
    assert rows[0]["size"] == 55 and rows[0]["witness"] == key.name
    # a copy cut after the cosigned checkpoint: truncated, naming the checkpoint, the witness and the seq
    cut_raw = list(genuine.read_raw())[:40]
    with pytest.raises(TamperedLog) as t:
        verify_against_witnesses(_seen_raw(cut_raw, pki.ca_cert), ORIGIN, [entry], pki.ca_cert)
    assert t.value.reason == "truncated" and t.value.seq == 40
    assert "witness graven-witness/cp1 cosigned checkpoint graven/node1 size 55 (seq 55)" in t.value.message
    assert t.value.details["witness"] == key.name
    # a rewritten history (same key, other events) is forked
    forged = _log(pki, 70, tag="forged")
    forged.checkpoint("witness")
    with pytest.raises(TamperedLog) as t:
        verify_against_witnesses(_seen(forged, pki.ca_cert), ORIGIN, [entry], pki.ca_cert)
    assert t.value.reason == "forked" and t.value.seq == 54 and "before seq 55 differs" in t.value.message
    # a forged witness record is refused, not trusted
    bad = Cosigned.from_json({**entry.to_dict(), "root": "00" * 32})
    with pytest.raises(VerificationError):
        verify_against_witnesses(_seen(genuine, pki.ca_cert), ORIGIN, [bad], pki.ca_cert)

    # the node rewrites its log and publishes it: the witness refuses it, once, and keeps its cosignature
    pub2 = Publisher(forged, nev)
    assert publish(kit, pub2) == 71
    assert run(kit, witness.step) == []
    assert run(kit, witness.step) == []
    refused = wev.of("witness.refused")
    assert len(refused) == 1 and refused[0]["reason"] == "inconsistent" and refused[0]["witnessed_size"] == 55
    assert refused[0]["code"] == "WITNESS_REFUSED"
    for i in range(5):  # the rewritten log grows on: still refused, and said once, not at each checkpoint
        forged.append("test.event", {"i": 500 + i})
    forged.checkpoint("witness")
    assert publish(kit, pub2) == 77
    assert run(kit, witness.step) == [] and len(wev.of("witness.refused")) == 1
    again = Cosigned.from_json(run(kit, lambda c: c.get(cosigned_key(ORIGIN, key.name))).value)
    assert again.size == 55

    # a truncated log published: refused (rollback), also by the witness restarted from its state file
    short = _log(pki, 10)
    short.checkpoint("witness")
    assert publish(kit, Publisher(short, nev)) == 11
    restarted = Witness(WitnessKey(tmp_path / "w", "cp1", ca_pem, None), ca_pem, wev, own_origin="graven/cp1")
    assert restarted.held[ORIGIN].size == 55
    assert run(kit, restarted.step) == []
    assert wev.of("witness.refused")[-1]["reason"] == "rollback"

    # the genuine log publishes again (its next checkpoint): cosigned, the proof is from size 55
    for i in range(5):
        genuine.append("test.event", {"i": 200 + i})
    genuine.checkpoint("witness")
    assert publish(kit, Publisher(genuine, nev)) == 61
    assert run(kit, restarted.step) == [ORIGIN]

    # the node is reset (a new log, same origin): refused as a rollback until an operator makes the witness forget
    reset = _log(pki, 4, tag="after reset")
    reset.checkpoint("witness")
    assert publish(kit, Publisher(reset, nev)) == 5
    assert run(kit, restarted.step) == [] and wev.of("witness.refused")[-1]["reason"] == "rollback"
    node = WitnessNode(wev, genuine)
    node.witness = restarted
    forgot = aw(node.forget(ORIGIN, "alice"))
    assert forgot["size"] == 61 and wev.of("witness.forgotten")[-1]["actor"] == "alice"
    assert run(kit, restarted.step) == [ORIGIN] and wev.of("witness.adopted")[-1]["size"] == 5
    with pytest.raises(NotFound, match="holds nothing for graven/nobody"):
        aw(node.forget("graven/nobody", "alice"))

    # what gravenctl audit witnessed returns
    doc = read_witnessed(run(kit, lambda c: c.range(b"/graven/witness/")))
    assert [d["origin"] for d in doc["published"]] == [ORIGIN]
    assert [(d["witness"], d["size"]) for d in doc["cosigned"]] == [(key.name, 5)]
    json.dumps(doc)


def _seen_raw(raw: list[tuple[int, bytes]], ca: Any) -> Seen:
    v = ChainVerifier(ca)
    return Seen.of(v.feed_all(raw), v)


def test_publisher_checkpoints_a_waiting_tail(kit: EtcdKit, pki: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_witness, "CHECKPOINT_AFTER", 0.0)
    run(kit, lambda c: c.delete(b"/graven/witness/", prefix=True))
    ev = Events()
    log = _log(pki, 7)
    pub = Publisher(log, ev)

    class Nowhere:  # a worker of a cluster without etcd: its publisher asks nothing of its log, says nothing
        async def held_sizes(self, origin: str) -> set[int]:
            raise Unavailable("this node is a worker: only controlplane nodes run etcd")

        async def publish(self, origin: str, value: bytes) -> None:
            raise AssertionError("not reached")

    assert aw(pub.step(Nowhere())) is None
    assert log.next_seq() == 8 and ev.seen == []
    pub._retry_at = 0.0  # (it backs off after a failure; the test does not wait)
    assert publish(kit, pub) == 8  # with etcd: the waiting tail is checkpointed (unsealed, "witness"), published
    last = list(log.read())[-1]
    assert last.kind == "log.checkpoint" and last.payload["reason"] == "witness" and not last.payload["sealed"]
    assert publish(kit, pub) is None and publish(kit, pub) is None  # nothing new: no checkpoint, no write
    assert log.next_seq() == 9
    verify_items(log.read_raw(), pki.ca_cert)


def test_a_witness_key_needs_the_ca_key(tmp_path: Path, pki: Any) -> None:
    with pytest.raises(VerificationError, match=r"machine\.ca\.key"):
        WitnessKey(tmp_path / "w", "cp1", pki.ca_pem, None)
    k = WitnessKey(tmp_path / "w2", "cp2", pki.ca_pem, private_key_pem(pki.ca_key))
    assert (tmp_path / "w2" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert verify_witness_certificate(load_certificate(k.cert_der), pki.ca_cert) == k.signer.public_raw
    with pytest.raises(UntrustedKey, match="not a witness certificate"):
        verify_witness_certificate(load_certificate(pki.cert_der), pki.ca_cert)  # a log certificate


def test_a_node_publishes_its_own_checkpoints_only(pki: Any) -> None:
    from events import Actor
    from node._etcd_node import EtcdNode

    def no_settings() -> Any:
        raise AssertionError("not reached: refused before etcd is asked")

    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(kind: str, payload: dict[str, Any], actor: Actor) -> Any:
        recorded.append((kind, payload))
        return types.SimpleNamespace(seq=len(recorded) - 1)

    log = _log(pki, 3)
    log.checkpoint("witness")
    note = str(list(log.read())[-1].payload["note"])
    value = Published(ORIGIN, note, pki.cert_der, {}, 1).to_json().decode()
    node = EtcdNode(lambda k, p: None, no_settings)
    with pytest.raises(PermissionDenied, match="worker2 may publish its own checkpoints only"):
        aw(node.action("publish-checkpoint", {"value": value}, Actor("worker2", ("os:admin",)), manage=True,
                       record=record))
    assert recorded[-1][0] == "api.denied" and "graven/node1" in recorded[-1][1]["reason"]
    # etcd witness-forget on a node that runs no witness: refused, recorded
    with pytest.raises(NotFound, match="runs no witness"):
        aw(node.action("witness-forget", {"origin": ORIGIN}, Actor("alice", ("os:admin",)), manage=True,
                       record=record))
    assert [k for k, _ in recorded[-2:]] == ["api.request", "api.refused"]
