"""Checks of single values (addresses, names, PEM blocks, keys), each ``str -> error message | None``.

Fields name their check in their ``msgspec.Meta(extra={"check": NAME})``; the validator runs it on every
value of the right type, so one bad value never hides another.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["CHECKS", "decode_pem", "ed25519_public_raw", "etcd_ca_problem", "pem_blocks"]

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


def pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """Every PEM block of ``text`` as (label, DER); raises ``ValueError`` on a bad base64 body."""
    blocks = []
    for m in _PEM.finditer(text):
        body = "".join(line.strip() for line in m.group(2).splitlines() if ":" not in line)
        try:
            blocks.append((m.group(1), base64.b64decode(body, validate=True)))
        except binascii.Error as exc:
            raise ValueError(f"has a {m.group(1)} PEM block whose base64 body is corrupt") from exc
    return blocks


def decode_pem(value: str) -> bytes:
    """A PEM field's PEM bytes: the value is either PEM text or base64 of PEM text (as in Talos)."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode("".join(text.split()), validate=True).decode("ascii")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, or non-ASCII input
            raise ValueError("is neither PEM nor base64-encoded PEM") from exc
        if "-----BEGIN" not in text:
            raise ValueError("is base64 but does not decode to PEM")
    if not text.isascii():
        raise ValueError("holds characters that PEM never has (non-ASCII)")
    return text.encode("ascii")


def _pem_check(want: Callable[[str], bool], what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            blocks = pem_blocks(decode_pem(value).decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"not {what}: the value {exc}"
        if not blocks:
            return f"not {what}: no PEM block found"
        label, der = blocks[0]
        if not want(label):
            return f"not {what}: found a {label} PEM block"
        if not der:
            return f"not {what}: the {label} PEM block is empty"
        return None

    return check


def ed25519_public_raw(value: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM, base64 PEM, or base64 of the raw bytes."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except ValueError as exc:
            raise ValueError("is neither PEM nor base64") from exc
        if len(raw) == 32:
            return raw
        if b"-----BEGIN" not in raw:
            raise ValueError(f"decodes to {len(raw)} bytes, not the 32 of a raw Ed25519 public key")
    blocks = pem_blocks(decode_pem(text).decode("ascii"))
    if not blocks or blocks[0][0] != "PUBLIC KEY":
        raise ValueError("holds no PUBLIC KEY PEM block")
    der = blocks[0][1]
    if len(der) != 44 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise ValueError("is a public key, but not an Ed25519 one")
    return der[len(_ED25519_SPKI_PREFIX) :]


def _ed25519(value: str) -> str | None:
    try:
        ed25519_public_raw(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not an Ed25519 public key (PEM, or base64 of the 32 raw bytes): the value {exc}"
    return None


def _interface_address(value: str) -> str | None:
    if "/" not in value:
        return f"{value!r} has no prefix length (write it as an address in CIDR notation, e.g. 10.0.0.2/24)"
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return f"{value!r} is not a valid address in CIDR notation (e.g. 10.0.0.2/24 or fd00::2/64)"
    return None


def _network(value: str) -> str | None:
    if "/" not in value:
        return f"{value!r} has no prefix length (e.g. 10.0.0.0/24, or 0.0.0.0/0 for the default route)"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a valid network in CIDR notation (e.g. 10.0.0.0/24)"
        return f"{value!r} has host bits set; did you mean {fixed}?"
    return None


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not a valid IP address"
    return None


def _hostname(value: str) -> str | None:
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        return (
            f"{value!r} is not a valid hostname (labels of 1-63 letters, digits or '-', "
            "not starting or ending with '-')"
        )
    return None


def _san(value: str) -> str | None:
    if _ip(value) is None:
        return None
    name = value[2:] if value.startswith("*.") else value
    if _hostname(name) is not None:
        return f"{value!r} is neither an IP address nor a DNS name"
    return None


def _endpoint(value: str) -> str | None:
    url = urlsplit(value if "://" in value else f"//{value}")
    bad = f"{value!r} is not a valid endpoint (https://HOST[:PORT] or HOST[:PORT])"
    if url.scheme not in ("", "https") or url.path not in ("", "/") or url.query or url.fragment:
        return bad
    try:
        port = url.port
    except ValueError:
        return f"{value!r} has a bad port (1-65535)"
    host = url.hostname or ""
    if not host or (_ip(host) is not None and _hostname(host) is not None) or port == 0:
        return bad
    return None


def _cluster_name(value: str) -> str | None:
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$", value):
        return f"{value!r} is not a valid cluster name (1-63 letters, digits, '.', '_' or '-')"
    return None


def _ifname(value: str) -> str | None:
    if not _IFNAME.match(value) or value in (".", ".."):
        return f"{value!r} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
    return None


def _disk(value: str) -> str | None:
    if not value.startswith("/") or any(c.isspace() for c in value):
        return f"{value!r} is not a device path (e.g. /dev/sda)"
    return None


def _image(value: str) -> str | None:
    if not value.strip() or any(c.isspace() for c in value):
        return f"{value!r} is not an image reference (a path, URL or name:tag without spaces)"
    return None


def _sink(value: str) -> str | None:
    if value.startswith("/"):
        return None
    url = urlsplit(value)
    if url.scheme == "file" and url.path.startswith("/"):
        return None
    if url.scheme in ("http", "https") and url.hostname:
        return None
    return f"{value!r} is not an audit sink (an absolute directory, file:///DIR, or an http(s):// URL)"


CHECKS: dict[str, Callable[[str], str | None]] = {
    "cidr": _interface_address,
    "network": _network,
    "ip": _ip,
    "hostname": _hostname,
    "san": _san,
    "endpoint": _endpoint,
    "cluster-name": _cluster_name,
    "ifname": _ifname,
    "disk": _disk,
    "image": _image,
    "sink": _sink,
    "ed25519": _ed25519,
    "pem-cert": _pem_check(lambda label: label == "CERTIFICATE", "a PEM certificate (PEM text or base64 of it)"),
    "pem-key": _pem_check(lambda label: label.endswith("PRIVATE KEY"), "a PEM private key (PEM text or base64 of it)"),
}


# id-ecPublicKey (1.2.840.10045.2.1) as DER: it appears in a certificate only in its SubjectPublicKeyInfo
_EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")


def etcd_ca_problem(crt_pem: bytes) -> str | None:
    """What is wrong with an etcd CA certificate, or ``None``: it must hold an ECDSA key (etcd's TLS handshakes
    need one; the machine CA's Ed25519 will not do). That the key matches is checked where keys are loaded."""
    try:
        blocks = pem_blocks(crt_pem.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return "etcd CA certificate is not a PEM certificate"
    if not blocks or blocks[0][0] != "CERTIFICATE":
        return "etcd CA certificate is not a PEM certificate"
    if _EC_PUBLIC_KEY_OID not in blocks[0][1]:
        return "etcd CA key must be ECDSA (etcd's TLS handshakes need it)"
    return None
