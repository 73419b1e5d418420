"""The etcd PKI: a CA of its own (``cluster.etcd.ca``), and the certificates each party issues from it.

As in Talos, the etcd CA is ECDSA P-256 with ``O=etcd`` for ten years, apart from the machine CA (Ed25519):
Debian's etcd 3.4 and ``etcdctl`` are Go 1.19 programs whose TLS stacks, like gRPC's BoringSSL, want ECDSA
handshakes, and one compromised key should not open both the API and the cluster's store. Each controlplane node
issues, at boot, its own

- server certificate (serverAuth and clientAuth, CN the node's name, SANs its addresses, its name and
  ``localhost``/``127.0.0.1``): etcd serves clients on 2379 with it and the agent uses it as its client
  certificate;
- peer certificate (serverAuth and clientAuth, SANs its addresses and name): etcd's raft traffic on 2380, where
  each member checks the other's certificate against the address it dials.

``gravenctl gen etcd-client`` issues a client certificate (clientAuth) for ``etcdctl``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from errors import InvalidRequest
from pki import subject_alt_names

__all__ = [
    "ETCD_CA_DAYS",
    "ETCD_CERT_TTL",
    "EtcdCA",
    "EtcdCert",
    "check_etcd_ca",
]

ETCD_CA_DAYS = 3650
ETCD_CERT_TTL = dt.timedelta(days=365)


@dataclass(frozen=True)
class EtcdCert:
    """A certificate and its key, both PEM."""

    crt: bytes
    key: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class EtcdCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(cls, days: int = ETCD_CA_DAYS) -> EtcdCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "etcd")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, crt_pem: bytes, key_pem: bytes) -> EtcdCA:
        check_etcd_ca(crt_pem, key_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # check_etcd_ca said so
        return cls(key, x509.load_pem_x509_certificate(crt_pem))

    @property
    def crt_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def issue(self, cn: str, *, sans: Sequence[str] = (), server: bool = False, client: bool = False,
              orgs: Sequence[str] = (), ttl: dt.timedelta = ETCD_CERT_TTL) -> EtcdCert:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        usages = [u for flag, u in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                                    (client, ExtendedKeyUsageOID.CLIENT_AUTH)) if flag]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(min(now + ttl, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names = subject_alt_names(list(dict.fromkeys(s for s in sans if s)))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return EtcdCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server_cert(self, name: str, addresses: Sequence[str]) -> EtcdCert:
        """The client-facing (2379) certificate of node ``name``; also the agent's client certificate."""
        return self.issue(name, sans=[*addresses, name, "localhost", "127.0.0.1", "::1"], server=True, client=True)

    def peer_cert(self, name: str, addresses: Sequence[str]) -> EtcdCert:
        """The raft (2380) certificate of node ``name``: the others check it against the address they dial."""
        return self.issue(name, sans=[*addresses, name], server=True, client=True)

    def client_cert(self, cn: str = "graven-etcd-client") -> EtcdCert:
        return self.issue(cn, client=True)


def check_etcd_ca(crt_pem: bytes, key_pem: bytes | None = None) -> None:
    """Refuse (``InvalidRequest`` naming the problem) anything but a CA certificate with an ECDSA key, and a key
    that does not match it."""
    try:
        cert = x509.load_pem_x509_certificate(crt_pem)
    except ValueError as exc:
        raise InvalidRequest(f"etcd CA certificate is not a PEM certificate: {exc}") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InvalidRequest("etcd CA certificate is not a CA (basicConstraints CA:TRUE is missing)")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        kind = type(pub).__name__.removesuffix("PublicKey").lstrip("_")
        raise InvalidRequest(f"etcd CA key must be ECDSA (etcd's TLS handshakes need it), not {kind}")
    if key_pem is None:
        return
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"etcd CA key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != pub:
        raise InvalidRequest("etcd CA key does not match the etcd CA certificate")
