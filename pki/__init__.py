"""Ed25519 keys, key ids, and X.509 certificates issued by the machine CA.

The node's log key is certified by the CA with ``OU=graven-log``; a verifier trusts a log key only when
its certificate chains to the CA it was given and carries that unit.

The keys' half is here; the certificates' half (``_certs``: PEM, X.509) loads on first use, so that a process that
only signs or checks signatures (the supervisor checking an image at every boot) never imports
``cryptography.x509``.
"""

from __future__ import annotations

import hashlib
import typing
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import lazy

if typing.TYPE_CHECKING:
    from ._certs import (
        cert_public_raw,
        cert_subject,
        issue_certificate,
        load_certificate,
        load_private_key,
        make_ca,
        private_key_pem,
        subject_alt_names,
        verify_log_certificate,
    )

__all__ = [
    "LOG_KEY_UNIT",
    "Ed25519Signer",
    "Signer",
    "cert_public_raw",
    "cert_subject",
    "issue_certificate",
    "key_id_for",
    "load_certificate",
    "load_private_key",
    "make_ca",
    "private_key_pem",
    "public_raw",
    "subject_alt_names",
    "verify_log_certificate",
    "verify_signature",
]

LOG_KEY_UNIT = "graven-log"


class Signer(Protocol):
    """The port through which the core signs: one Ed25519 key."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_raw(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def key_id_for(public: bytes) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex: short, stable, collision-safe enough."""
    return hashlib.sha256(public).hexdigest()[:16]


class Ed25519Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = public_raw(key.public_key())
        self._key_id = key_id_for(self._public)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_raw(self) -> bytes:
        return self._public

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify_signature(public: bytes, sig: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, data)
    except (InvalidSignature, ValueError):
        return False
    return True


_LAZY = {name: "_certs" for name in ("cert_public_raw", "cert_subject", "issue_certificate", "load_certificate",
                                     "load_private_key", "make_ca", "private_key_pem", "subject_alt_names",
                                     "verify_log_certificate")}

__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())
