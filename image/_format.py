"""The bytes of an image file (``specs/image-format.md``): pure codecs, no I/O.

    payload (squashfs) | manifest (canonical msgpack) | signature (Ed25519, 64 bytes) | trailer (64 bytes)
"""

from __future__ import annotations

import hashlib
import re
import struct

import msgspec

from events import encode_canonical

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_DOMAIN",
    "MAX_MANIFEST",
    "SIGNATURE_SIZE",
    "TRAILER_MAGIC",
    "TRAILER_SIZE",
    "Manifest",
    "Trailer",
    "check_version_string",
    "decode_manifest",
    "encode_manifest",
    "signing_message",
]

FORMAT_VERSION = 1
TRAILER_MAGIC = b"GRVNIMG\x00"
TRAILER_SIZE = 64
SIGNATURE_SIZE = 64
MAX_MANIFEST = 64 * 1024
MANIFEST_DOMAIN = b"graven/image-manifest/v1\x00"
SQUASHFS_MAGIC = b"hsqs"

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")


def check_version_string(version: str) -> str:
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(
            f"bad image version {version!r}: 1-64 characters of letters, digits and . _ + ~ -, "
            "starting with a letter or digit"
        )
    return version


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the signature covers. Encoded as msgpack with sorted keys; any other encoding is refused."""

    format: int
    version: str
    payload_size: int
    payload_sha256: bytes
    created: int  # seconds since the epoch, UTC
    key_id: str  # key_id_for(raw Ed25519 public key): first 8 bytes of its SHA-256, hex

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "version": self.version,
            "payload_size": self.payload_size,
            "payload_sha256": self.payload_sha256.hex(),
            "created": self.created,
            "key_id": self.key_id,
        }


_manifest_decoder = msgspec.msgpack.Decoder(Manifest)


def encode_manifest(manifest: Manifest) -> bytes:
    return encode_canonical(manifest)


def decode_manifest(data: bytes) -> tuple[Manifest, bool]:
    """The manifest in ``data`` and whether ``data`` is its canonical encoding. Raises ``ValueError``."""
    try:
        manifest = _manifest_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"manifest does not decode: {exc}") from exc
    return manifest, encode_manifest(manifest) == data


def signing_message(manifest_bytes: bytes) -> bytes:
    """What Ed25519 signs: SHA-256 of the domain prefix and the manifest's canonical bytes."""
    return hashlib.sha256(MANIFEST_DOMAIN + manifest_bytes).digest()


_TRAILER = struct.Struct(">8sHHIQIIQQ16s")
assert _TRAILER.size == TRAILER_SIZE


class Trailer(msgspec.Struct, frozen=True):
    """The fixed 64 bytes at the end of an image that locate the manifest and signature."""

    format: int
    manifest_offset: int
    manifest_length: int
    signature_offset: int
    signature_length: int
    image_length: int
    magic: bytes = TRAILER_MAGIC
    trailer_length: int = TRAILER_SIZE
    reserved: int = 0  # the 4 bytes at 12..16
    reserved_tail: bytes = bytes(16)

    def pack(self) -> bytes:
        return _TRAILER.pack(
            self.magic, self.format, self.trailer_length, self.reserved, self.manifest_offset,
            self.manifest_length, self.signature_length, self.signature_offset, self.image_length,
            self.reserved_tail,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Trailer:
        if len(data) != TRAILER_SIZE:
            raise ValueError(f"a trailer is {TRAILER_SIZE} bytes, got {len(data)}")
        (magic, fmt, tlen, reserved, m_off, m_len, s_len, s_off, i_len, tail) = _TRAILER.unpack(data)
        return cls(
            format=fmt, manifest_offset=m_off, manifest_length=m_len, signature_offset=s_off,
            signature_length=s_len, image_length=i_len, magic=magic, trailer_length=tlen,
            reserved=reserved, reserved_tail=tail,
        )

    @classmethod
    def for_parts(cls, payload_size: int, manifest_length: int, signature_length: int = SIGNATURE_SIZE) -> Trailer:
        sig_off = payload_size + manifest_length
        return cls(
            format=FORMAT_VERSION, manifest_offset=payload_size, manifest_length=manifest_length,
            signature_offset=sig_off, signature_length=signature_length,
            image_length=sig_off + signature_length + TRAILER_SIZE,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "magic": self.magic.hex(),
            "format": self.format,
            "trailer_length": self.trailer_length,
            "manifest_offset": self.manifest_offset,
            "manifest_length": self.manifest_length,
            "signature_offset": self.signature_offset,
            "signature_length": self.signature_length,
            "image_length": self.image_length,
        }
