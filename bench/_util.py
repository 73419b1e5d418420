"""Helpers shared by the log benchmarks: a CA and certified log keys, the agent's gc settings, timing, tables."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca, private_key_pem

__all__ = ["AGENT_GC", "Pki", "agent_gc", "key_pem", "write_private"]


@dataclass
class Pki:
    ca_key: Ed25519PrivateKey
    ca_cert: x509.Certificate

    @classmethod
    def new(cls, name: str = "graven-bench-ca") -> Pki:
        return cls(*make_ca(name))

    def log_key(self, cn: str = "node1") -> tuple[Ed25519Signer, bytes]:
        """A fresh log key and its DER certificate (``OU=graven-log``) from this CA."""
        signer = Ed25519Signer.generate()
        cert = issue_certificate(self.ca_key, self.ca_cert, signer.private_key.public_key(), cn=cn,
                                 unit=LOG_KEY_UNIT)
        return signer, cert.public_bytes(serialization.Encoding.DER)

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def key_pem(signer: Ed25519Signer) -> bytes:
    return private_key_pem(signer.private_key)


AGENT_GC = "gc.freeze() after start-up, gc.set_threshold(50_000, 50, 100)"


def agent_gc() -> str:
    """The collector settings the agent runs with: long-lived start-up objects frozen, young generation large."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    return AGENT_GC
