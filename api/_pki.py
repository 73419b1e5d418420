"""Cluster secrets and certificates for the API, and what ``gravenctl gen config`` writes (its command is in
``cli._gen``).

The machine CA and the image signing key are Ed25519. TLS *leaf* keys (the node's serving certificate, client
certificates) are ECDSA P-256: gRPC's BoringSSL does not offer Ed25519 as a TLS handshake signature algorithm
(the handshake fails with ``NO_COMMON_SIGNATURE_ALGORITHMS``), while it verifies Ed25519 signatures on
certificates. So the chain is Ed25519 and the handshake is ECDSA.

``gen config NAME ENDPOINT -o DIR`` writes ``ca.crt``, ``ca.key`` (0600), ``image.key`` (0600), ``image.pub``,
``etcd-ca.crt``, ``etcd-ca.key`` (0600), ``controlplane.yaml`` (0600: it holds the CA keys) and
``gravenconfig`` (0600: an ``os:admin`` client key). ``gen etcd-client --secrets DIR -o OUT`` writes what
Debian's ``etcdctl`` takes (``--cacert``, ``--cert``, ``--key``) from ``DIR``'s etcd CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import config
from errors import InvalidRequest
from pki import issue_certificate, load_private_key, make_ca, private_key_pem, subject_alt_names

from ._clientconfig import ClientConfig, Context, atomic_write, split_endpoint
from ._etcd_pki import EtcdCA

__all__ = [
    "ADMIN_CERT_TTL",
    "ROLES",
    "SERVER_CERT_TTL",
    "ClusterSecrets",
    "cert_pem",
    "check_roles",
    "fingerprint",
    "gen_config",
    "gen_etcd_client",
    "issue_client_certificate",
    "issue_server_certificate",
    "key_pem",
    "new_tls_key",
    "self_signed_certificate",
]

ROLES = ("os:admin", "os:operator", "os:reader")
ADMIN_CERT_TTL = dt.timedelta(days=365)
SERVER_CERT_TTL = dt.timedelta(hours=24)


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the certificate's DER, lower-case hex (what the node prints in maintenance mode)."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert) if b"-----BEGIN" in cert else x509.load_der_x509_certificate(cert)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_roles(roles: Sequence[str]) -> list[str]:
    out = sorted({r.strip() for r in roles if r.strip()})
    if not out:
        raise InvalidRequest(f"no role given (roles: {', '.join(ROLES)})")
    unknown = [r for r in out if r not in ROLES]
    if unknown:
        raise InvalidRequest(f"unknown role(s) {', '.join(unknown)} (roles: {', '.join(ROLES)})", roles=unknown)
    return out


def issue_client_certificate(
    ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, *, cn: str = "admin",
    roles: Sequence[str] = ("os:admin",), ttl: dt.timedelta = ADMIN_CERT_TTL,
) -> tuple[bytes, bytes]:
    """A client certificate (ExtendedKeyUsage clientAuth only; roles as Organization): (crt PEM, key PEM)."""
    key = new_tls_key()
    cert = issue_certificate(ca_key, ca_cert, key.public_key(), cn=cn, orgs=check_roles(roles),
                             ttl=ttl, client=True)
    return cert_pem(cert), key_pem(key)


def issue_server_certificate(
    ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, *, cn: str, sans: Sequence[str],
    ttl: dt.timedelta = SERVER_CERT_TTL,
) -> tuple[bytes, bytes]:
    """The node's serving certificate (serverAuth, the node's addresses and certSANs): (crt PEM, key PEM)."""
    key = new_tls_key()
    cert = issue_certificate(ca_key, ca_cert, key.public_key(), cn=cn, ttl=ttl, server=True,
                             sans=list(dict.fromkeys(sans)))
    return cert_pem(cert), key_pem(key)


def self_signed_certificate(cn: str = "graven-maintenance", sans: Sequence[str] = (),
                            ttl: dt.timedelta = SERVER_CERT_TTL) -> tuple[bytes, bytes]:
    """A self-signed serving certificate for maintenance mode: (crt PEM, key PEM)."""
    key = new_tls_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(cn), *subject_alt_names(sans)]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


@dataclass(frozen=True)
class ClusterSecrets:
    """What ``gen config`` makes once per cluster: the machine CA and the image signing key."""

    name: str
    ca_key: Ed25519PrivateKey
    ca_cert: x509.Certificate
    image_key: Ed25519PrivateKey
    etcd_ca: EtcdCA | None = None

    @classmethod
    def generate(cls, name: str) -> ClusterSecrets:
        ca_key, ca_cert = make_ca(name)
        return cls(name, ca_key, ca_cert, Ed25519PrivateKey.generate(), EtcdCA.generate())

    @classmethod
    def load(cls, name: str, ca_crt_pem: bytes, ca_key_pem: bytes, image_key_pem: bytes,
             etcd_ca: tuple[bytes, bytes] | None = None) -> ClusterSecrets:
        return cls(name, load_private_key(ca_key_pem), x509.load_pem_x509_certificate(ca_crt_pem),
                   load_private_key(image_key_pem), None if etcd_ca is None else EtcdCA.load(*etcd_ca))

    @property
    def etcd_ca_pems(self) -> tuple[bytes, bytes] | None:
        return None if self.etcd_ca is None else (self.etcd_ca.crt_pem, self.etcd_ca.key_pem)

    @property
    def ca_crt_pem(self) -> bytes:
        return cert_pem(self.ca_cert)

    @property
    def ca_key_pem(self) -> bytes:
        return private_key_pem(self.ca_key)

    @property
    def image_key_pem(self) -> bytes:
        return private_key_pem(self.image_key)

    @property
    def image_pub_pem(self) -> bytes:
        return self.image_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    def client_context(self, endpoints: Sequence[str], *, cn: str = "admin", roles: Sequence[str] = ("os:admin",),
                       ttl: dt.timedelta = ADMIN_CERT_TTL) -> Context:
        crt, key = issue_client_certificate(self.ca_key, self.ca_cert, cn=cn, roles=roles, ttl=ttl)
        return Context(endpoints=list(endpoints), nodes=[], ca=self.ca_crt_pem, crt=crt, key=key)


def machine_config(secrets: ClusterSecrets, endpoint: str, *, install_disk: str = "/dev/sda",
                   install_image: str | None = None) -> str:
    """The controlplane machine config YAML; raises ``InvalidConfig`` with every problem."""
    cfg = config.default_config(secrets.name, endpoint, secrets.ca_crt_pem, secrets.ca_key_pem,
                                [secrets.image_pub_pem], install_disk=install_disk, install_image=install_image,
                                etcd_ca=secrets.etcd_ca_pems)
    text = config.dump_yaml(cfg)
    config.validate(text).unwrap("controlplane.yaml")
    return text


def gen_config(name: str, endpoint: str, out_dir: str | Path = ".", *, force: bool = False,
               install_disk: str = "/dev/sda", install_image: str | None = None) -> list[tuple[Path, int]]:
    """Generate a cluster's secrets, its machine config and an admin client config into ``out_dir``.

    Nothing is written if any file exists (unless ``force``) or the config would not validate.
    Returns (path, mode) of every file written.
    """
    split_endpoint(endpoint)  # refuse a malformed endpoint before anything is generated
    out = Path(out_dir)
    secrets = ClusterSecrets.generate(name)
    client = ClientConfig(context=name, contexts={name: secrets.client_context([_client_endpoint(endpoint)])})
    files: list[tuple[str, bytes, int]] = [
        ("ca.crt", secrets.ca_crt_pem, 0o644),
        ("ca.key", secrets.ca_key_pem, 0o600),
        ("image.key", secrets.image_key_pem, 0o600),
        ("image.pub", secrets.image_pub_pem, 0o644),
        *_etcd_ca_files(secrets),
        ("controlplane.yaml", machine_config(secrets, endpoint, install_disk=install_disk,
                                             install_image=install_image).encode(), 0o600),
        ("gravenconfig", client.dumps().encode(), 0o600),
    ]
    if not force:
        for fname, _, _ in files:
            if (out / fname).exists():
                raise InvalidRequest(f"{out / fname} exists; not overwriting it (use --force to replace it)",
                                     path=str(out / fname))
    written = []
    for fname, data, mode in files:
        atomic_write(out / fname, data, mode)
        written.append((out / fname, mode))
    return written


def _etcd_ca_files(secrets: ClusterSecrets) -> list[tuple[str, bytes, int]]:
    if secrets.etcd_ca is None:
        return []
    return [("etcd-ca.crt", secrets.etcd_ca.crt_pem, 0o644), ("etcd-ca.key", secrets.etcd_ca.key_pem, 0o600)]


def _client_endpoint(endpoint: str) -> str:
    """The machine config may say ``https://host:port``; the client config keeps ``host[:port]``."""
    return endpoint.split("://", 1)[1].rstrip("/") if "://" in endpoint else endpoint


def gen_etcd_client(secrets_dir: str | Path, out_dir: str | Path, *, cn: str = "graven-etcd-client",
                    force: bool = False) -> list[tuple[Path, int]]:
    """Issue an etcd client certificate from ``secrets_dir``'s etcd CA into ``out_dir``; (path, mode) written."""
    src, out = Path(secrets_dir), Path(out_dir)
    pems = []
    for fname in ("etcd-ca.crt", "etcd-ca.key"):
        try:
            pems.append((src / fname).read_bytes())
        except OSError as exc:
            raise InvalidRequest(f"{src / fname}: cannot read the etcd CA: {exc.strerror} (gen config writes it)",
                                 path=str(src / fname)) from None
    ca = EtcdCA.load(pems[0], pems[1])
    client = ca.client_cert(cn)
    files = [("ca.crt", ca.crt_pem, 0o644), ("client.crt", client.crt, 0o644), ("client.key", client.key, 0o600)]
    if not force:
        for fname, _, _ in files:
            if (out / fname).exists():
                raise InvalidRequest(f"{out / fname} exists; not overwriting it (use --force to replace it)",
                                     path=str(out / fname))
    for fname, data, mode in files:
        atomic_write(out / fname, data, mode)
    return [(out / fname, mode) for fname, _, mode in files]
