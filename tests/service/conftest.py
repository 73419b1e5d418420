"""An in-memory node for the service's tests: the memory ports, a memory log and FSM, the sequencer, and the
service over them with the fakes of ``servicekit``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from servicekit import PATHS, FakeCluster, FakeHost, FakeNetwork, Node

import config
from config import MachineConfig
from events import MemoryEventLog
from fsm import NodeFSM, Stage
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca
from sequencer import Runtime, Sequencer
from sequencer.memory import MemoryImage, MemoryImages, memory_ports
from service import BootFacts, NodeService


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    ca_key_pem: bytes
    signer: Ed25519Signer
    cert_der: bytes
    image_key_pem: bytes


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca_key, ca = make_ca("test-ca")
    signer = Ed25519Signer.generate()
    cert = issue_certificate(ca_key, ca, signer.private_key.public_key(), cn="node1", unit=LOG_KEY_UNIT)
    return Pki(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        ca_key_pem=ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        signer=signer, cert_der=cert.public_bytes(serialization.Encoding.DER),
        image_key_pem=Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


@pytest.fixture
def make_config(pki: Pki) -> Callable[..., MachineConfig]:
    def make(**kw: Any) -> MachineConfig:
        kw.setdefault("hostname", "node1")
        kw.setdefault("install_image", "v1.img")
        return config.default_config("lab", "https://10.0.0.2:50000", pki.ca_pem, pki.ca_key_pem, [pki.image_key_pem],
                                     **kw)

    return make


@pytest.fixture
def make_node(pki: Pki) -> Callable[..., Node]:
    def make(*, stage: Stage = Stage.RUNNING, cfg: MachineConfig | None = None, slot: str | None = "A",
             durable: bool = True, **ports: Any) -> Node:
        log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/test", checkpoint_every=1000)
        ports.setdefault("images", MemoryImages(catalog={f"v{i}.img": MemoryImage.of(f"v{i}") for i in range(1, 4)}))
        p = memory_ports(**ports)
        fsm = NodeFSM(log)
        for trigger in PATHS[stage]:
            fsm.fire(trigger)
        seq = Sequencer(log, fsm, p, runtime=Runtime(config=cfg, persisted=cfg), takeover_timeout=5.0)
        host, cluster = FakeHost(durable=durable), FakeCluster()
        service = NodeService(seq, BootFacts("boot-1", slot, "v1", "ab" * 32), host, cluster=cluster,
                              network=FakeNetwork())
        return Node(log, fsm, p, seq, service, host, cluster)

    return make
