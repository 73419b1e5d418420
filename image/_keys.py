"""Image signing keys: Ed25519, in PEM files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import pki
from errors import InvalidRequest, UntrustedKey
from pki import key_id_for, public_raw

__all__ = [
    "generate_key",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
    "trusted_key_ids",
    "write_keypair",
]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path | str) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read signing key {path}: {exc.strerror or exc}", path=str(path)) from exc
    try:
        return pki.load_private_key(data)  # pki loads its X.509 half on first use: not at every boot
    except (ValueError, TypeError) as exc:
        raise UntrustedKey(f"{path} is not an unencrypted PEM private key: {exc}", path=str(path)) from exc


def load_public_key(source: Path | str | bytes | Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """A raw 32-byte Ed25519 public key from a key object, raw bytes, or a PEM file or its bytes.

    A PEM *private* key is accepted too (its public half is used), so one file can serve both ends in tests.
    """
    if isinstance(source, Ed25519PublicKey):
        return public_raw(source)
    if isinstance(source, Ed25519PrivateKey):
        return public_raw(source.public_key())
    if isinstance(source, bytes) and len(source) == 32:
        return source
    where = "key bytes"
    if isinstance(source, Path | str):
        where = str(source)
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read trusted key {where}: {exc.strerror or exc}", path=where) from exc
    text = source.strip()
    try:
        if b"PRIVATE KEY" in text:
            return public_raw(pki.load_private_key(text).public_key())
        key = serialization.load_pem_public_key(text)
    except (ValueError, TypeError) as exc:
        raise UntrustedKey(f"{where} is not a PEM Ed25519 key: {exc}", path=where) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UntrustedKey(f"{where} is not an Ed25519 key ({type(key).__name__})", path=where)
    return public_raw(key)


def trusted_key_ids(keys: Iterable[bytes]) -> dict[str, bytes]:
    return {key_id_for(k): k for k in keys}


def write_keypair(directory: Path | str, name: str = "image-key") -> tuple[Path, Path, str]:
    """Write ``NAME.pem`` (private, mode 0600) and ``NAME.pub`` (public PEM); return paths and key id."""
    d = Path(directory)
    key = generate_key()
    try:
        d.mkdir(parents=True, exist_ok=True)
        priv, pub = d / f"{name}.pem", d / f"{name}.pub"
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pki.private_key_pem(key))
        pub.write_bytes(public_key_pem(key))
    except FileExistsError as exc:
        raise InvalidRequest(f"{exc.filename} exists; not overwriting a key", path=exc.filename) from exc
    except OSError as exc:
        raise InvalidRequest(f"cannot write keys to {d}: {exc.strerror or exc}", path=str(d)) from exc
    return priv, pub, key_id_for(public_raw(key.public_key()))
