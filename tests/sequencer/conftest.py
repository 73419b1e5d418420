from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from seqkit import PATHS, Pki

import config
from config import MachineConfig
from events import MemoryEventLog
from fsm import NodeFSM, Stage
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca
from sequencer import Ports, Runtime, Sequencer
from sequencer.memory import MemoryImage, memory_ports


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca_key, ca = make_ca("test-ca")
    signer = Ed25519Signer.generate()
    cert = issue_certificate(ca_key, ca, signer.private_key.public_key(), cn="node1", unit=LOG_KEY_UNIT)
    image_key = Ed25519PrivateKey.generate().public_key()
    return Pki(
        ca=ca,
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        ca_key_pem=ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        signer=signer,
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        image_key_pem=image_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo),
    )


@pytest.fixture
def make_config(pki: Pki) -> Callable[..., MachineConfig]:
    def make(**kw: Any) -> MachineConfig:
        kw.setdefault("hostname", "node1")
        kw.setdefault("install_image", "v1.img")
        return config.default_config("lab", "https://10.0.0.2:50000", pki.ca_pem, pki.ca_key_pem, [pki.image_key_pem],
                                     **kw)

    return make


@dataclass
class Node:
    log: MemoryEventLog
    fsm: NodeFSM
    ports: Ports
    seq: Sequencer


@pytest.fixture
def make_node(pki: Pki) -> Callable[..., Node]:
    def make(*, stage: Stage = Stage.BOOTING, cfg: MachineConfig | None = None, log: MemoryEventLog | None = None,
             takeover_timeout: float = 5.0, **ports: Any) -> Node:
        log = log or MemoryEventLog(pki.signer, pki.cert_der, origin="graven/test", checkpoint_every=32)
        ports.setdefault("images", None)
        if ports["images"] is None:
            from sequencer.memory import MemoryImages

            ports["images"] = MemoryImages(catalog={f"v{i}.img": MemoryImage.of(f"v{i}") for i in range(1, 4)})
        p = memory_ports(**ports)
        machine = NodeFSM(log)
        for trigger in PATHS[stage]:  # reach the stage through the log, so replay agrees with the live FSM
            machine.fire(trigger)
        seq = Sequencer(log, machine, p, runtime=Runtime(config=cfg, persisted=cfg),
                        takeover_timeout=takeover_timeout)
        return Node(log, machine, p, seq)

    return make
