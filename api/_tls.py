"""The node's serving certificate: issued from the machine CA for 24 h and renewed at half-life, handed to
grpc through dynamic credentials so new handshakes get the new certificate and open connections stay."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from events._pki import issue_certificate, private_key_pem

__all__ = ["MaintenanceCredentials", "ServingCredentials", "fingerprint"]

LIFETIME = dt.timedelta(hours=24)


def fingerprint(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


class ServingCredentials:
    """Mutual TLS: the client must present a certificate from the same CA."""

    def __init__(self, ca_cert: x509.Certificate, ca_key: Ed25519PrivateKey, *, node: str, sans: Sequence[str],
                 lifetime: dt.timedelta = LIFETIME) -> None:
        self._ca_cert, self._ca_key = ca_cert, ca_key
        self._node, self._sans, self._lifetime = node, list(sans), lifetime
        self._lock = threading.Lock()
        self._issued_at = 0.0
        self._config = self._issue()
        self.renewals = 0

    @property
    def ca_pem(self) -> bytes:
        return self._ca_cert.public_bytes(serialization.Encoding.PEM)

    def _issue(self) -> grpc.ServerCertificateConfiguration:
        key = Ed25519PrivateKey.generate()
        cert = issue_certificate(self._ca_key, self._ca_cert, key.public_key(), cn=self._node, server=True,
                                 sans=self._sans, ttl=self._lifetime)
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._issued_at = time.monotonic()
        return grpc.ssl_server_certificate_configuration([(private_key_pem(key), self.cert_pem)],
                                                         root_certificates=self.ca_pem)

    def _fetch(self) -> Any:  # a new configuration, or None to keep the current one
        with self._lock:
            if time.monotonic() - self._issued_at < self._lifetime.total_seconds() / 2:
                return None  # keep the current certificate
            self._config = self._issue()
            self.renewals += 1
            return self._config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._config, self._fetch, require_client_authentication=True)


class MaintenanceCredentials:
    """Server-only TLS with a self-signed certificate made for this boot; clients pin its fingerprint (TOFU)."""

    def __init__(self, node: str, sans: Sequence[str]) -> None:
        key = Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node} (maintenance)")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
            .sign(key, None)
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._key_pem = private_key_pem(key)
        self.fingerprint = fingerprint(self.cert_pem)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self._key_pem, self.cert_pem)], require_client_auth=False)


def _general_names(sans: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for san in sans:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            out.append(x509.DNSName(san))
    return out
