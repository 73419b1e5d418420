"""The node's log key on STATE, certified by the machine CA from the config (``Identity`` port)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import config
from errors import InvalidConfig, StorageError
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, load_certificate, load_private_key, private_key_pem
from service import node_name
from storage import write_durably

__all__ = ["FileIdentity", "node_name"]

KEY, CERT = "identity/log.key", "identity/log.crt"
_TEN_YEARS = dt.timedelta(days=3650)


class FileIdentity:
    """``load``/``create`` as the sequencer's ``Identity`` port; ``on_created`` lets the agent promote its log."""

    def __init__(self, state_dir: Callable[[], Path], on_created: Callable[[Ed25519Signer, bytes, str], None]) -> None:
        self._state_dir = state_dir
        self._on_created = on_created

    def _paths(self) -> tuple[Path, Path]:
        d = self._state_dir()
        return d / KEY, d / CERT

    def signer(self) -> tuple[Ed25519Signer, bytes] | None:
        try:
            key_path, cert_path = self._paths()
        except StorageError:  # no STATE yet (an empty disk)
            return None
        if not key_path.exists() or not cert_path.exists():
            return None
        return Ed25519Signer(load_private_key(key_path.read_bytes())), cert_path.read_bytes()

    def load(self) -> str | None:
        found = self.signer()
        return found[0].key_id if found else None

    def create(self, cfg: config.MachineConfig) -> str:
        existing = self.signer()
        if existing is not None:
            signer, cert_der = existing
        else:
            ca_crt, ca_key = cfg.machine.ca.crt_pem(), cfg.machine.ca.key_pem()
            if not ca_key:
                raise InvalidConfig("machine.ca.key is needed to certify the node's log key", path="machine.ca.key")
            ca_cert = load_certificate(ca_crt)
            signer = Ed25519Signer(Ed25519PrivateKey.generate())
            cert = issue_certificate(load_private_key(ca_key), ca_cert, signer.private_key.public_key(),
                                     cn=node_name(cfg), unit=LOG_KEY_UNIT, ttl=_TEN_YEARS)
            cert_der = cert.public_bytes(serialization.Encoding.DER)
            key_path, cert_path = self._paths()
            key_path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(key_path, private_key_pem(signer.private_key), mode=0o600)
            write_durably(cert_path, cert_der)
        self._on_created(signer, cert_der, node_name(cfg))
        return signer.key_id
