"""The node's serving certificate: issued from the machine CA for 24 h and renewed at half-life, handed to
grpc through dynamic credentials so new handshakes get the new certificate and open connections stay.

TLS keys are ECDSA P-256 (BoringSSL offers no Ed25519 handshake signatures); the CA itself is Ed25519.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._pki import fingerprint, issue_server_certificate, self_signed_certificate

__all__ = ["MaintenanceCredentials", "ServingCredentials"]

LIFETIME = dt.timedelta(hours=24)


class ServingCredentials:
    """Mutual TLS: the client must present a certificate from the same CA."""

    def __init__(self, ca_cert: x509.Certificate, ca_key: Ed25519PrivateKey, *, node: str, sans: Sequence[str],
                 lifetime: dt.timedelta = LIFETIME) -> None:
        self._ca_cert, self._ca_key = ca_cert, ca_key
        self._node, self._sans, self._lifetime = node, list(sans), lifetime
        self._lock = threading.Lock()
        self._issued_at = 0.0
        self.renewals = 0
        self.ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self._config = self._issue()

    def _issue(self) -> object:
        self.cert_pem, key_pem = issue_server_certificate(self._ca_key, self._ca_cert, cn=self._node,
                                                          sans=self._sans, ttl=self._lifetime)
        self._issued_at = time.monotonic()
        return grpc.ssl_server_certificate_configuration([(key_pem, self.cert_pem)], root_certificates=self.ca_pem)

    def _fetch(self) -> object:  # a new configuration, or None to keep the current one
        with self._lock:
            if time.monotonic() - self._issued_at < self._lifetime.total_seconds() / 2:
                return None
            self._config = self._issue()
            self.renewals += 1
            return self._config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._config, self._fetch, require_client_authentication=True)


class MaintenanceCredentials:
    """Server-only TLS with a self-signed certificate made for this boot; clients pin its fingerprint (TOFU)."""

    def __init__(self, node: str, sans: Sequence[str]) -> None:
        self.cert_pem, self._key_pem = self_signed_certificate(f"{node}-maintenance", sans, LIFETIME)
        self.fingerprint = fingerprint(self.cert_pem)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self._key_pem, self.cert_pem)], require_client_auth=False)
