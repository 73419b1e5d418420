"""Fixtures shared by every test package.

- ``pki``: a real machine CA and a log key certified by it (session-wide: key generation is not free).
- ``make_lmdb_log`` / ``make_memory_log``: factories for a fresh log of one backend; every LMDB log a test
  opens is closed after it.
- ``make_log``: the same factory, parametrized over every backend; a test that takes it runs once per
  backend (``tests/contract`` is built on it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import MemoryEventLog
from image._build import COMPRESSION_ENV
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca

# The suite builds dozens of full images and times none of their power-ons: zstd squashes one in ~0.6 s where
# the release's lz4 high-compression mode takes ~7 s. The image tests that measure the release image (its size,
# its listing) ask for lz4 themselves; bench/ and `make run` build lz4. Subprocesses inherit it.
os.environ.setdefault(COMPRESSION_ENV, "zstd")


@dataclass(frozen=True)
class Pki:
    """A machine CA and one log key it certified (``signer`` + ``cert_der``)."""

    ca_key: Ed25519PrivateKey
    ca_cert: x509.Certificate
    signer: Ed25519Signer
    cert_der: bytes

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def certify(self, signer: Ed25519Signer, cn: str = "node1", unit: str | None = LOG_KEY_UNIT) -> bytes:
        """DER certificate for ``signer`` issued by this CA (a log-signing one unless ``unit`` says otherwise)."""
        cert = issue_certificate(self.ca_key, self.ca_cert, signer.private_key.public_key(), cn=cn, unit=unit)
        return cert.public_bytes(serialization.Encoding.DER)

    def new_signer(self, cn: str = "node1") -> tuple[Ed25519Signer, bytes]:
        """A fresh log key and its certificate from this CA."""
        signer = Ed25519Signer.generate()
        return signer, self.certify(signer, cn)


def new_pki(name: str = "test-ca") -> Pki:
    ca_key, ca_cert = make_ca(name)
    signer = Ed25519Signer.generate()
    cert = issue_certificate(ca_key, ca_cert, signer.private_key.public_key(), cn="node1", unit=LOG_KEY_UNIT)
    return Pki(ca_key, ca_cert, signer, cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture(scope="session")
def pki() -> Pki:
    return new_pki("test-ca")


@pytest.fixture(scope="session")
def other_pki() -> Pki:
    """A second, unrelated CA with its own log key (another cluster, or a forger)."""
    return new_pki("other-ca")


class LogFactory:
    """``factory(path=None, **kwargs)``: a new log; keyword arguments go to the backend's constructor.

    Defaults: the ``pki`` log key and certificate, boot id ``boot-0``, origin ``graven/test``.
    ``path`` (LMDB only) reopens or shares a directory; by default each call gets a new one.
    """

    def __init__(self, backend: str, pki: Pki, tmp_path: Path) -> None:
        self.backend = backend
        self._pki = pki
        self._tmp = tmp_path
        self._opened: list[Any] = []

    def __call__(self, path: Path | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("boot_id", "boot-0")
        kwargs.setdefault("origin", "graven/test")
        signer = kwargs.pop("signer", self._pki.signer)
        cert_der = kwargs.pop("cert_der", self._pki.cert_der)
        if self.backend == "memory":
            log: Any = MemoryEventLog(signer, cert_der, **kwargs)
        else:
            from storage import LmdbEventLog

            if path is None:
                path = self._tmp / f"log-{len(self._opened)}"
            log = LmdbEventLog(path, signer, cert_der=cert_der, **kwargs)
        self._opened.append(log)
        return log

    def close_all(self) -> None:
        for log in reversed(self._opened):
            log.close()
        self._opened.clear()


def _factory(backend: str, pki: Pki, tmp_path: Path) -> Iterator[LogFactory]:
    factory = LogFactory(backend, pki, tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def make_memory_log(pki: Pki, tmp_path: Path) -> Iterator[LogFactory]:
    yield from _factory("memory", pki, tmp_path)


@pytest.fixture
def make_lmdb_log(pki: Pki, tmp_path: Path) -> Iterator[LogFactory]:
    yield from _factory("lmdb", pki, tmp_path)


@pytest.fixture(params=["memory", "lmdb"])
def make_log(request: pytest.FixtureRequest, pki: Pki, tmp_path: Path) -> Iterator[LogFactory]:
    yield from _factory(request.param, pki, tmp_path)
