"""Witnessing checkpoints: C2SP ``tlog-cosignature`` (``cosignature/v1``, Ed25519) and the witness's rule.

A cosignature is a note signature line ``— <witness name> base64(key ID[4] || timestamp u64 BE || sig[64])``
added to a checkpoint note; ``key ID = SHA-256(name || 0x0A || 0x04 || public key)[:4]`` and ``sig`` is Ed25519
over ``"cosignature/v1\\ntime <timestamp>\\n" || the note's body`` (its three lines, each with its newline).
It states: as of that time, the largest consistent tree the witness saw for the origin has that root.

The rule (``WitnessRule.check``): a witness accepts a checkpoint for an origin only when the note is signed by
the log key of a certificate the cluster CA issued (``OU=graven-log``) whose origin it is, and, if it accepted
one before for that origin, with a valid RFC 6962 consistency proof from that one (same size: same root). A
refusal is a ``WitnessRefused`` whose ``reason`` is one of ``REASONS``. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence

import msgspec
from cryptography import x509

from errors import UntrustedKey, VerificationError, WitnessRefused
from pki import Signer, cert_subject, load_certificate, verify_log_certificate, verify_signature

from ._checkpoint import Checkpoint, parse_note, verify_note
from ._merkle import verify_consistency

__all__ = [
    "COSIGNATURE_V1",
    "REASONS",
    "Cosignature",
    "WitnessRule",
    "Witnessed",
    "add_cosignature",
    "cosign",
    "cosignatures",
    "cosigned_message",
    "cosigner_key_id",
    "note_body",
    "origin_of_cert",
    "verify_cosignature",
]

COSIGNATURE_V1 = "cosignature/v1"
_ED25519_COSIGNATURE = b"\x04"
_DASH = "\u2014"
_TS = struct.Struct(">Q")
_RAW_LEN = 4 + 8 + 64
_MAX_TS = 2**63 - 1

# why a witness refuses a checkpoint (WitnessRefused.reason)
REASONS = {
    "malformed": "the note or the proof cannot be parsed",
    "untrusted-key": "the certificate is not a log certificate issued by the cluster CA",
    "origin": "the note's origin is not the one the certificate names (graven/<CN>)",
    "signature": "the note is not signed by the certificate's key",
    "rollback": "the checkpoint is smaller than the one the witness accepted before (a truncated log)",
    "fork": "same size as the one accepted before, another root (a rewritten log)",
    "no-proof": "no consistency proof from the checkpoint the witness accepted before",
    "inconsistent": "the consistency proof from the accepted checkpoint does not verify (a forked log)",
}


class Cosignature(msgspec.Struct, frozen=True):
    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + _TS.pack(self.timestamp) + self.signature).decode()
        return f"{_DASH} {self.name} {blob}"


class Witnessed(msgspec.Struct, frozen=True):
    """A checkpoint a witness accepted: the note (the log's signature and the witness's cosignature among its
    lines) and the time it cosigned it."""

    origin: str
    size: int
    root: bytes
    note: str
    timestamp: int


def cosigner_key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_COSIGNATURE + public).digest()[:4]


def note_body(cp: Checkpoint) -> bytes:
    return f"{cp.origin}\n{cp.size}\n{base64.b64encode(cp.root).decode()}\n".encode()


def cosigned_message(cp: Checkpoint, timestamp: int) -> bytes:
    return f"{COSIGNATURE_V1}\ntime {timestamp}\n".encode() + note_body(cp)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise ValueError(f"witness name {name!r} must be non-empty, without spaces or '+' (C2SP signed-note)")


def cosign(cp: Checkpoint, name: str, signer: Signer, timestamp: int) -> Cosignature:
    _check_name(name)
    if not 0 <= timestamp <= _MAX_TS:
        raise ValueError(f"cosignature timestamp {timestamp} is out of 0..2^63-1")
    return Cosignature(name, cosigner_key_id(name, signer.public_raw), timestamp,
                       signer.sign(cosigned_message(cp, timestamp)))


def cosignatures(note: str) -> tuple[Checkpoint, list[Cosignature]]:
    """The note's checkpoint and its signature lines that have the shape of an Ed25519 cosignature (76 bytes)."""
    cp, sigs = parse_note(note)
    out = []
    for name, key_hash, rest in sigs:
        if len(key_hash) + len(rest) == _RAW_LEN:
            (ts,) = _TS.unpack(rest[:8])
            out.append(Cosignature(name, key_hash, ts, rest[8:]))
    return cp, out


def add_cosignature(note: str, cosig: Cosignature) -> str:
    """The note with ``cosig``'s line added, replacing an older line of the same witness (name and key)."""
    body, _, sigs = note.partition("\n\n")
    keep = [ln for ln in sigs.split("\n") if ln
            and not (ln.startswith(f"{_DASH} {cosig.name} ") and _line_key(ln) == cosig.key_id)]
    return body + "\n\n" + "".join(f"{ln}\n" for ln in [*keep, cosig.line()])


def _line_key(line: str) -> bytes:
    try:
        return base64.b64decode(line.rsplit(" ", 1)[-1], validate=True)[:4]
    except ValueError:
        return b""


def verify_cosignature(note: str, name: str, public: bytes) -> tuple[Checkpoint, Cosignature]:
    """The checkpoint and the valid cosignature by witness ``name`` with key ``public``, else VerificationError."""
    cp, cosigs = cosignatures(note)
    want = cosigner_key_id(name, public)
    for c in cosigs:
        if c.name == name and c.key_id == want and c.timestamp <= _MAX_TS and \
                verify_signature(public, c.signature, cosigned_message(cp, c.timestamp)):
            return cp, c
    raise VerificationError(f"no valid cosignature by witness {name} on checkpoint {cp.origin} size {cp.size}",
                            witness=name, origin=cp.origin, size=cp.size)


def origin_of_cert(cert: x509.Certificate) -> str:
    """The origin a node's log has: ``graven/<CN of its log certificate>``."""
    return f"graven/{cert_subject(cert)[0]}"


def _refuse(reason: str, message: str, **details: object) -> WitnessRefused:
    return WitnessRefused(message, reason=reason, **details)


class WitnessRule:
    """The witness's decision for one origin at a time, given what it accepted before (``last``)."""

    def __init__(self, ca: x509.Certificate) -> None:
        self.ca = ca

    def certified_key(self, cert_der: bytes, origin: str) -> bytes:
        """The log key of ``cert_der`` when the CA issued it as a log certificate for ``origin``."""
        try:
            cert = load_certificate(cert_der)
            public = verify_log_certificate(cert, self.ca)
        except UntrustedKey as exc:
            raise _refuse("untrusted-key", f"checkpoint of {origin} refused: {exc.message}", origin=origin) from None
        named = origin_of_cert(cert)
        if named != origin:
            raise _refuse("origin", f"checkpoint of {origin} refused: its certificate is {named}'s", origin=origin,
                          cert_origin=named)
        return public

    def check(self, note: str, cert_der: bytes, last: Witnessed | None,
              proofs: Mapping[int, Sequence[bytes]]) -> Checkpoint:
        """The checkpoint of ``note`` if the witness may cosign it; ``proofs`` maps an earlier size to the
        consistency proof from it to the note's size. Equal to ``last``: returned (cosigning again is harmless)."""
        try:
            cp, _ = parse_note(note)
        except VerificationError as exc:
            raise _refuse("malformed", f"checkpoint refused: {exc.message}") from None
        where = {"origin": cp.origin, "size": cp.size}
        public = self.certified_key(cert_der, cp.origin)
        try:
            verify_note(note, public)
        except VerificationError:
            raise _refuse("signature", f"checkpoint {cp.origin} size {cp.size} refused: its note is not signed by "
                                       "the log key of its certificate", **where) from None
        if last is None:
            return cp
        if last.origin != cp.origin:
            raise _refuse("origin", f"checkpoint {cp.origin} size {cp.size} refused: the witnessed one is "
                                    f"{last.origin}'s", **where)
        seen = {"witnessed_size": last.size, "witnessed_root": last.root.hex()}
        if cp.size < last.size:
            raise _refuse("rollback", f"checkpoint {cp.origin} size {cp.size} refused: the witness accepted size "
                                      f"{last.size} before (the log lost events {cp.size}..{last.size - 1})",
                          **where, **seen)
        if cp.size == last.size:
            if cp.root != last.root:
                raise _refuse("fork", f"checkpoint {cp.origin} size {cp.size} refused: the witness accepted another "
                                      "root at this size (the log was rewritten)", **where, **seen)
            return cp
        proof = proofs.get(last.size)
        if proof is None:
            raise _refuse("no-proof", f"checkpoint {cp.origin} size {cp.size} refused: no consistency proof from "
                                      f"size {last.size}, which the witness accepted before", **where, **seen)
        if not verify_consistency(last.size, cp.size, last.root, cp.root, list(proof)):
            raise _refuse("inconsistent", f"checkpoint {cp.origin} size {cp.size} refused: it does not extend the "
                                          f"checkpoint of size {last.size} the witness accepted (the consistency "
                                          "proof does not verify: a forked log)", **where, **seen)
        return cp

    def accept(self, note: str, cert_der: bytes, last: Witnessed | None, proofs: Mapping[int, Sequence[bytes]],
               *, name: str, signer: Signer, timestamp: int) -> tuple[Witnessed, str]:
        """``check``, then cosign: what the witness now holds for the origin, and the note with its cosignature."""
        cp = self.check(note, cert_der, last, proofs)
        cosigned = add_cosignature(note, cosign(cp, name, signer, timestamp))
        return Witnessed(cp.origin, cp.size, cp.root, cosigned, timestamp), cosigned
