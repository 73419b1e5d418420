from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from events import MemoryEventLog
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca


@pytest.fixture(scope="session")
def ca_pair() -> tuple[object, x509.Certificate]:
    return make_ca("test-ca")


@pytest.fixture
def make_log(ca_pair) -> Callable[[], MemoryEventLog]:
    ca_key, ca = ca_pair
    signer = Ed25519Signer.generate()
    cert = issue_certificate(ca_key, ca, signer.private_key.public_key(), cn="node1", unit=LOG_KEY_UNIT)
    der = cert.public_bytes(serialization.Encoding.DER)
    return lambda: MemoryEventLog(signer, der, origin="graven/test", checkpoint_every=16)
