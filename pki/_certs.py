"""The machine CA's X.509 certificates and PEM keys (loaded by ``pki`` on first use of one of these names)."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from errors import UntrustedKey

from . import LOG_KEY_UNIT, public_raw

__all__ = ["cert_public_raw", "cert_subject", "issue_certificate", "load_certificate", "load_private_key", "make_ca",
           "private_key_pem", "subject_alt_names", "verify_log_certificate"]


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise UntrustedKey("only Ed25519 private keys are supported")
    return key


def load_certificate(data: bytes) -> x509.Certificate:
    if not isinstance(data, bytes):
        raise UntrustedKey(f"not an X.509 certificate: {type(data).__name__}, not bytes")
    try:
        with warnings.catch_warnings():
            # what cryptography only warns about today (a non-positive serial) it will refuse; refuse it now
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning) as exc:
        raise UntrustedKey(f"not an X.509 certificate: {exc}") from exc


def cert_public_raw(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise UntrustedKey("certificate key is not Ed25519")
    return public_raw(key)


def cert_subject(cert: x509.Certificate) -> tuple[str, tuple[str, ...]]:
    """(common name, organizations): the organizations are the roles, as in Talos."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cns[0].value) if cns else "", tuple(sorted(str(o.value) for o in orgs)))


def _name(cn: str, orgs: Sequence[str] = (), unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(name: str, *, days: int = 3650) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, None)
    )
    return key, cert


def issue_certificate(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    *,
    cn: str,
    orgs: Sequence[str] = (),
    unit: str | None = None,
    ttl: dt.timedelta = dt.timedelta(days=365),
    server: bool = False,
    client: bool = False,
    sans: Sequence[str] = (),
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs, unit))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    )
    usages = [u for flag, u in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                                (client, ExtendedKeyUsageOID.CLIENT_AUTH)) if flag]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(subject_alt_names(sans)), critical=False)
    return builder.sign(ca_key, None)


def subject_alt_names(sans: Sequence[str]) -> list[x509.GeneralName]:
    """A certificate's alternative names, in order: an IP address as one, anything else as a DNS name."""
    import ipaddress

    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def verify_log_certificate(cert: x509.Certificate, ca: x509.Certificate) -> bytes:
    """Check that ``cert`` is a log-signing certificate issued by ``ca``; return its raw public key."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise UntrustedKey(f"log certificate {_subject(cert)} was not issued by the CA") from exc
    try:
        units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
        public = cert_public_raw(cert)
    except ValueError as exc:  # fields are parsed lazily: a malformed one shows up only here
        raise UntrustedKey(f"log certificate {_subject(cert)} is malformed: {exc}") from exc
    if LOG_KEY_UNIT not in units:
        raise UntrustedKey(f"certificate {_subject(cert)} is not a log-signing certificate")
    return public


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return "(with an unparseable subject)"
