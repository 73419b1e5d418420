"""Builders for tampered images: every way an image file can be wrong, with the refusal each must get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from errors import BadImage, UntrustedKey, VerificationError
from image import Manifest, Trailer
from image._format import TRAILER_SIZE, encode_manifest, signing_message
from pki import key_id_for, public_raw

CREATED = 1_700_000_000


@dataclass(frozen=True)
class Keys:
    signing: Ed25519PrivateKey
    other: Ed25519PrivateKey

    @property
    def trusted(self) -> list[bytes]:
        return [public_raw(self.signing.public_key())]


@dataclass(frozen=True)
class Images:
    v1: Path
    v2: Path  # differs: another version and an overlay file


@dataclass(frozen=True)
class Parts:
    payload: bytes
    manifest: bytes
    signature: bytes
    trailer: Trailer

    @classmethod
    def of(cls, data: bytes) -> Parts:
        t = Trailer.unpack(data[-TRAILER_SIZE:])
        return cls(
            payload=data[: t.manifest_offset],
            manifest=data[t.manifest_offset : t.signature_offset],
            signature=data[t.signature_offset : t.signature_offset + t.signature_length],
            trailer=t,
        )

    @property
    def decoded(self) -> Manifest:
        return msgspec.msgpack.decode(self.manifest, type=Manifest)


def assemble(payload: bytes, manifest: bytes, signature: bytes, **trailer_changes: int) -> bytes:
    t = Trailer.for_parts(len(payload), len(manifest), len(signature))
    if trailer_changes:
        t = msgspec.structs.replace(t, **trailer_changes)
    return payload + manifest + signature + t.pack()


def resigned(data: bytes, key: Ed25519PrivateKey, *, encode: Callable[[Manifest], bytes] = encode_manifest,
             **changes: object) -> bytes:
    """The image with its manifest changed and validly signed again by ``key``."""
    p = Parts.of(data)
    m = msgspec.structs.replace(p.decoded, **changes)
    mb = encode(m)
    return assemble(p.payload, mb, key.sign(signing_message(mb)))


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def _non_canonical(m: Manifest) -> bytes:
    # msgpack in declaration order (format, version, ...) rather than sorted keys
    return msgspec.msgpack.encode(m)


def _manifest_flip(data: bytes) -> bytes:
    p = Parts.of(data)
    i = p.manifest.find(p.decoded.version.encode())
    return flip(data, p.trailer.manifest_offset + i, 0x02)  # "1.0.0" -> "3.0.0": decodes, signature breaks


def _other_key_sign(data: bytes, key: Ed25519PrivateKey, other: Ed25519PrivateKey) -> bytes:
    return resigned(data, other, key_id=key_id_for(public_raw(other.public_key())))


Tamper = Callable[[bytes, Ed25519PrivateKey, Ed25519PrivateKey, bytes], bytes]

# name -> (make(data, trusted_key, other_key, other_image), error class, pattern the message must match)
TAMPERS: dict[str, tuple[Tamper, type[VerificationError], str]] = {
    "payload-bitflip-middle": (lambda d, k, o, x: flip(d, Parts.of(d).trailer.manifest_offset // 2),
                               BadImage, "payload digest mismatch"),
    "payload-bitflip-first": (lambda d, k, o, x: flip(d, 0, 0x80), BadImage, "payload digest mismatch"),
    "payload-bitflip-last": (lambda d, k, o, x: flip(d, Parts.of(d).trailer.manifest_offset - 1),
                             BadImage, "payload digest mismatch"),
    "payload-swapped": (lambda d, k, o, x: Parts.of(x).payload + d[Parts.of(d).trailer.manifest_offset:]
                        if len(Parts.of(x).payload) == Parts.of(d).trailer.manifest_offset else
                        assemble(Parts.of(x).payload, Parts.of(d).manifest, Parts.of(d).signature),
                        BadImage, "payload (digest|size) mismatch"),
    "manifest-bitflip": (lambda d, k, o, x: _manifest_flip(d), BadImage, "bad signature"),
    "manifest-garbage": (lambda d, k, o, x: assemble(Parts.of(d).payload, b"\xc1" * len(Parts.of(d).manifest),
                                                     Parts.of(d).signature),
                         BadImage, "manifest does not decode"),
    "signature-bitflip": (lambda d, k, o, x: flip(d, Parts.of(d).trailer.signature_offset + 10),
                          BadImage, "bad signature"),
    "signature-zeroed": (lambda d, k, o, x: assemble(Parts.of(d).payload, Parts.of(d).manifest, bytes(64)),
                         BadImage, "bad signature"),
    "signature-missing": (lambda d, k, o, x: assemble(Parts.of(d).payload, Parts.of(d).manifest, b""),
                          BadImage, "missing signature"),
    "signature-short": (lambda d, k, o, x: assemble(Parts.of(d).payload, Parts.of(d).manifest,
                                                    Parts.of(d).signature[:32]),
                        BadImage, "bad signature: 32 bytes"),
    "wrong-key": (lambda d, k, o, x: _other_key_sign(d, k, o), UntrustedKey, "signed by key [0-9a-f]{16}, which is "
                  "not trusted"),
    "wrong-key-claiming-trusted-id": (lambda d, k, o, x: resigned(d, o), BadImage, "bad signature"),
    "truncated-by-1": (lambda d, k, o, x: d[:-1], BadImage, "truncated"),
    "truncated-trailer": (lambda d, k, o, x: d[:-TRAILER_SIZE], BadImage, "truncated"),
    "truncated-half": (lambda d, k, o, x: d[: len(d) // 2], BadImage, "truncated"),
    "truncated-to-10-bytes": (lambda d, k, o, x: d[:10], BadImage, "truncated: 10 bytes is less than"),
    "empty-file": (lambda d, k, o, x: b"", BadImage, "truncated: 0 bytes"),
    "payload-block-cut-out": (lambda d, k, o, x: d[:4096] + d[8192:], BadImage, "truncated: trailer says"),
    "appended-1-byte": (lambda d, k, o, x: d + b"\0", BadImage, "1 bytes appended"),
    "appended-4096-bytes": (lambda d, k, o, x: d + bytes(4096), BadImage, "4096 bytes appended"),
    "appended-second-image": (lambda d, k, o, x: d + x, BadImage, "trailer says the image is"),
    "bad-magic": (lambda d, k, o, x: d[:-TRAILER_SIZE] + b"XXXXXXXX" + d[-TRAILER_SIZE + 8 :], BadImage,
                  "bad magic"),
    "not-an-image": (lambda d, k, o, x: b"hello world, I am not an image" * 10, BadImage, "not a Graven image"),
    "unknown-trailer-format": (lambda d, k, o, x: assemble(*_p3(d), format=2), BadImage,
                               "unknown image format version 2"),
    "trailer-reserved-set": (lambda d, k, o, x: assemble(*_p3(d), reserved=7), BadImage, "malformed trailer"),
    "trailer-offsets-shifted": (lambda d, k, o, x: assemble(*_p3(d), manifest_offset=Parts.of(d).trailer
                                                            .manifest_offset + 1),
                                BadImage, "do not tile"),
    "manifest-length-huge": (lambda d, k, o, x: assemble(*_p3(d), manifest_length=1 << 30), BadImage,
                             "out of range"),
    "unknown-manifest-format": (lambda d, k, o, x: resigned(d, k, format=2), BadImage,
                                "unknown manifest format version 2"),
    "non-canonical-manifest": (lambda d, k, o, x: resigned(d, k, encode=_non_canonical), BadImage,
                               "not in canonical encoding"),
    "payload-size-lie": (lambda d, k, o, x: resigned(d, k, payload_size=Parts.of(d).decoded.payload_size - 4096),
                         BadImage, "payload size mismatch"),
    "payload-digest-lie": (lambda d, k, o, x: resigned(d, k, payload_sha256=bytes(32)), BadImage,
                           "payload digest mismatch"),
    "payload-digest-short": (lambda d, k, o, x: resigned(d, k, payload_sha256=b"\x01" * 16), BadImage,
                             "not 32 bytes"),
}


def _p3(d: bytes) -> tuple[bytes, bytes, bytes]:
    p = Parts.of(d)
    return p.payload, p.manifest, p.signature
