"""Why a TLS handshake with a node failed, told from the client's side: the node's certificate and the client's
own, probed once more with Python's ``ssl`` after grpc reported only that the connection failed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from errors import (
    GravenError,
    PermissionDenied,
    UntrustedKey,
)

from ._clientconfig import split_endpoint

__all__ = ["cert_names", "probe_tls"]


def cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    names = [str(v) for v in san.get_values_for_type(x509.DNSName)] if san else []
    names += [str(v) for v in san.get_values_for_type(x509.IPAddress)] if san else []
    return names


def _name_matches(host: str, names: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                continue
        elif name.lower() == host.lower() or (name.startswith("*.") and host.lower().endswith(name[1:].lower())
                                              and host.count(".") == name.count(".")):
            return True
    return False


def _own_cert_problems(crt_pem: bytes | None) -> list[str]:
    if not crt_pem:
        return []
    try:
        cert = x509.load_pem_x509_certificate(crt_pem)
    except ValueError:
        return ["our client certificate does not parse"]
    problems = []
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        problems.append(f"our client certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")
    if cert.not_valid_before_utc > now:
        problems.append(f"our client certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%SZ}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            problems.append("our certificate is not a client certificate (no clientAuth usage)")
    except x509.ExtensionNotFound:
        pass
    return problems


def _issuer(cert: x509.Certificate | bytes | None) -> str:
    try:
        c = x509.load_pem_x509_certificate(cert) if isinstance(cert, bytes) else cert
    except ValueError:
        return ""
    return c.issuer.rfc4514_string() if c is not None else ""


def _ed25519_leaf(peer: x509.Certificate | None, crt_pem: bytes | None) -> str | None:
    if peer is not None and isinstance(peer.public_key(), Ed25519PublicKey):
        return "its serving certificate has an Ed25519 key"
    try:
        own = x509.load_pem_x509_certificate(crt_pem) if crt_pem else None
    except ValueError:
        return None
    if own is not None and isinstance(own.public_key(), Ed25519PublicKey):
        return "our client certificate has an Ed25519 key"
    return None


def probe_tls(node: str, ca_pem: bytes, crt_pem: bytes | None, key_pem: bytes | None,
              server_name: str | None = None, timeout: float = 5.0) -> GravenError | None:
    """Handshake with ``node`` as gRPC would and say who refused what; None when TLS is not the problem."""
    host, port = split_endpoint(node)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # checked below, against the name gRPC checks
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a pinned leaf is a root of its own
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        if crt_pem and key_pem:
            with tempfile.TemporaryDirectory() as tmp:
                crt, key = Path(tmp) / "crt.pem", Path(tmp) / "key.pem"
                crt.write_bytes(crt_pem)
                key.touch(mode=0o600)
                key.write_bytes(key_pem)
                ctx.load_cert_chain(crt, key)
    except (ssl.SSLError, ValueError) as exc:
        return UntrustedKey(f"the client config's certificates do not load: {exc}", node=node)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=server_name or host) as tls:
                peer = tls.getpeercert(binary_form=True)
                peer_cert = x509.load_der_x509_certificate(peer) if peer else None
                names = cert_names(peer_cert) if peer_cert else []
                tls.settimeout(timeout)
                try:
                    data = tls.recv(1)
                except TimeoutError:
                    data = b"?"
                except (ssl.SSLError, OSError):
                    data = b""
        except ssl.SSLCertVerificationError as exc:
            return UntrustedKey(
                f"the certificate of node {node} does not verify against the CA in the client config "
                f"({exc.verify_message}): is the node from another cluster, or in maintenance mode (--insecure)?",
                node=node)
        except (ssl.SSLError, OSError) as exc:
            return PermissionDenied(f"the TLS handshake with node {node} failed: {exc}", node=node)
    ed25519 = _ed25519_leaf(peer_cert, crt_pem)
    if ed25519:
        return UntrustedKey(f"the TLS handshake with node {node} cannot succeed: {ed25519}; gRPC's TLS (BoringSSL) "
                            "offers no Ed25519 handshake signature, so TLS keys must be ECDSA P-256 (the CA may stay "
                            "Ed25519)", node=node)
    if not data:
        if not crt_pem:
            return PermissionDenied(f"node {node} requires a client certificate and none was presented "
                                    "(--insecure works only while the node is in maintenance mode)", node=node)
        ours, theirs = _issuer(crt_pem), _issuer(peer_cert)
        if ours and theirs and ours != theirs:
            # gRPC's server closes TLS without an alert: the probe's handshake is what tells this from a node down
            return PermissionDenied(f"node {node}: the node rejected this client certificate (issued by {ours}, the "
                                    f"node trusts {theirs})", node=node, issuer=ours, node_ca=theirs)
        why = "; ".join(_own_cert_problems(crt_pem)) or "it was not issued by the node's CA"
        return PermissionDenied(f"node {node}: the node rejected this client certificate (it closed the connection "
                                f"after the TLS handshake): {why}", node=node)
    want = server_name or host
    if names and not _name_matches(want, names):
        return UntrustedKey(f"the certificate of node {node} is not valid for {want!r} (it names {', '.join(names)}); "
                            "add the name to machine.certSANs", node=node)
    return None
