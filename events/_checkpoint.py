"""Checkpoints as C2SP ``tlog-checkpoint`` signed notes.

Body: origin line, decimal tree size, base64 RFC 6962 root, each ending in a newline. Signature line:
``— <key name> base64(key hash[4] || Ed25519 signature over the body)``, key hash =
``SHA-256(key name || 0x0A || 0x01 || public key)[:4]`` (C2SP ``signed-note``).
"""

from __future__ import annotations

import base64
import hashlib

import msgspec

from errors import VerificationError
from pki import Signer, verify_signature

__all__ = ["Checkpoint", "note_key_hash", "parse_note", "sign_note", "verify_note"]

_ED25519 = b"\x01"
_DASH = "\u2014"


class Checkpoint(msgspec.Struct, frozen=True):
    origin: str
    size: int
    root: bytes


def note_key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def _body(cp: Checkpoint) -> str:
    return f"{cp.origin}\n{cp.size}\n{base64.b64encode(cp.root).decode()}\n"


def sign_note(cp: Checkpoint, signer: Signer) -> str:
    body = _body(cp)
    sig = signer.sign(body.encode())
    blob = base64.b64encode(note_key_hash(cp.origin, signer.public_raw) + sig).decode()
    return f"{body}\n{_DASH} {cp.origin} {blob}\n"


def parse_note(note: str) -> tuple[Checkpoint, list[tuple[str, bytes, bytes]]]:
    """Split a note into its checkpoint and its signature lines (name, key hash, signature)."""
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise VerificationError("checkpoint note has no signature block")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint note body needs origin, size and root")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError as exc:
        raise VerificationError(f"checkpoint note body is malformed: {exc}") from exc
    if size < 0 or str(size) != lines[1] or len(root) != 32:
        raise VerificationError("checkpoint note size or root is malformed")
    out: list[tuple[str, bytes, bytes]] = []
    for line in sigs.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise VerificationError(f"malformed signature line in checkpoint note: {line!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError as exc:
            raise VerificationError(f"checkpoint note signature is not base64: {line!r}") from exc
        if len(raw) < 5:
            raise VerificationError(f"checkpoint note signature is too short: {line!r}")
        out.append((parts[1], raw[:4], raw[4:]))
    return Checkpoint(lines[0], size, root), out


def verify_note(note: str, public: bytes) -> Checkpoint:
    """Return the checkpoint if a signature line by ``public`` (under the note's origin) verifies."""
    cp, sigs = parse_note(note)
    want = note_key_hash(cp.origin, public)
    body = _body(cp).encode()
    for name, key_hash, sig in sigs:
        if name == cp.origin and key_hash == want and verify_signature(public, sig, body):
            return cp
    raise VerificationError(f"no valid signature by the log key on checkpoint {cp.origin} size {cp.size}")
