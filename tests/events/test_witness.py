"""Witnessing: C2SP ``cosignature/v1`` lines (bytes, key IDs, signed message, refusals of any tampering) and the
witness rule (a checkpoint is accepted only from a CA-certified log key of its origin, and only with a valid
consistency proof from the one accepted before), with hypothesis over random logs, forks and truncations."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import Code, VerificationError, WitnessRefused, error_for_code
from events import Checkpoint, MerkleLevels, leaf_hash, sign_note, verify_note
from events._witness import (
    REASONS,
    Witnessed,
    WitnessRule,
    add_cosignature,
    cosign,
    cosignatures,
    cosigned_message,
    cosigner_key_id,
    verify_cosignature,
)
from pki import Ed25519Signer

ORIGIN = "graven/node1"
ROOT = bytes(range(32))
WITNESS = Ed25519Signer.generate()
W = "witness/graven/cp1"


def test_cosignature_bytes_follow_c2sp() -> None:
    cp = Checkpoint(ORIGIN, 42, ROOT)
    c = cosign(cp, W, WITNESS, 1679315147)
    # the key ID: SHA-256(name || 0x0A || 0x04 || public key)[:4]
    assert c.key_id == hashlib.sha256(W.encode() + b"\n\x04" + WITNESS.public_raw).digest()[:4]
    assert cosigner_key_id(W, WITNESS.public_raw) == c.key_id
    # the signed message: two header lines, then the note body with its final newline
    msg = cosigned_message(cp, 1679315147)
    assert msg == (b"cosignature/v1\ntime 1679315147\ngraven/node1\n42\n" + base64.b64encode(ROOT) + b"\n")
    Ed25519PublicKey.from_public_bytes(WITNESS.public_raw).verify(c.signature, msg)
    # the line: em dash, name, base64(key ID || u64 big-endian timestamp || 64-byte signature)
    dash, name, blob = c.line().split(" ")
    raw = base64.b64decode(blob)
    assert dash == "\u2014" and name == W and len(raw) == 76
    assert raw[:4] == c.key_id and int.from_bytes(raw[4:12], "big") == 1679315147 and raw[12:] == c.signature


def test_cosigned_note_keeps_the_log_signature_and_verifies(pki) -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    note = sign_note(cp, pki.signer)
    c1 = cosign(cp, W, WITNESS, 100)
    cosigned = add_cosignature(note, c1)
    assert verify_note(cosigned, pki.signer.public_raw) == cp  # the log's line still verifies
    assert verify_cosignature(cosigned, W, WITNESS.public_raw) == (cp, c1)
    # a later cosignature by the same witness replaces its line; another witness's is kept
    other = Ed25519Signer.generate()
    both = add_cosignature(add_cosignature(cosigned, cosign(cp, "witness/graven/cp2", other, 5)),
                           cosign(cp, W, WITNESS, 200))
    _, found = cosignatures(both)
    assert sorted((c.name, c.timestamp) for c in found) == [("witness/graven/cp1", 200), ("witness/graven/cp2", 5)]
    assert both.count("\u2014") == 3
    with pytest.raises(VerificationError, match="no valid cosignature by witness witness/graven/cp1"):
        verify_cosignature(note, W, WITNESS.public_raw)
    with pytest.raises(VerificationError):
        verify_cosignature(cosigned, W, other.public_raw)  # another key
    with pytest.raises(VerificationError):
        verify_cosignature(cosigned, "witness/graven/cp9", WITNESS.public_raw)  # another name


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 2**40), ts=st.integers(0, 2**63 - 1), data=st.data())
def test_any_change_to_a_cosigned_note_fails(size: int, ts: int, data: Any) -> None:
    cp = Checkpoint(ORIGIN, size, ROOT)
    note = add_cosignature(f"{ORIGIN}\n{size}\n{base64.b64encode(ROOT).decode()}\n\n", cosign(cp, W, WITNESS, ts))
    assert verify_cosignature(note, W, WITNESS.public_raw)[1].timestamp == ts
    what = data.draw(st.sampled_from(["size", "root", "origin", "time", "sig"]))
    body, _, line = note.partition("\n\n")
    dash, name, blob = line.strip().split(" ")
    raw = bytearray(base64.b64decode(blob))
    if what == "size":
        body = body.replace(f"\n{size}\n", f"\n{size + 1}\n")
    elif what == "root":
        body = body.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[::-1]).decode())
    elif what == "origin":
        body = body.replace(ORIGIN, "graven/node2")
    elif what == "time":
        raw[4:12] = ((ts + 1) % 2**63).to_bytes(8, "big")
    else:
        bit = data.draw(st.integers(0, 511))
        raw[12 + bit // 8] ^= 1 << (bit % 8)
    forged = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(VerificationError):
        verify_cosignature(forged, W, WITNESS.public_raw)


# -- the witness rule ---------------------------------------------------------------------------------------------
def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _note(signer: Ed25519Signer, leaves: list[bytes], size: int, origin: str = ORIGIN) -> tuple[str, MerkleLevels]:
    levels = MerkleLevels(leaves[:size])
    return sign_note(Checkpoint(origin, size, levels.root()), signer), levels


def _accept(rule: WitnessRule, note: str, cert: bytes, last: Witnessed | None,
            proofs: dict[int, list[bytes]]) -> Witnessed:
    held, cosigned = rule.accept(note, cert, last, proofs, name=W, signer=WITNESS, timestamp=1)
    assert verify_cosignature(cosigned, W, WITNESS.public_raw)[0].size == held.size
    return held


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=6))
def test_a_growing_log_is_accepted_at_every_checkpoint(pki, sizes: list[int]) -> None:
    rule = WitnessRule(pki.ca_cert)
    leaves = _leaves(max(sizes))
    last: Witnessed | None = None
    for size in sorted(sizes):
        note, levels = _note(pki.signer, leaves, size)
        proofs = {last.size: levels.consistency_proof(last.size)} if last else {}
        last = _accept(rule, note, pki.cert_der, last, proofs)
        assert (last.size, last.root) == (size, levels.root())


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 200), st.data())
def test_a_truncated_or_forked_log_is_refused(pki, n: int, data: Any) -> None:
    rule = WitnessRule(pki.ca_cert)
    genuine = _leaves(n + 50)
    note, _ = _note(pki.signer, genuine, n)
    last = _accept(rule, note, pki.cert_der, None, {})
    what = data.draw(st.sampled_from(["truncated", "rewritten", "forked", "no-proof", "bad-proof"]))
    if what == "truncated":
        m = data.draw(st.integers(0, n - 1))
        bad, _ = _note(pki.signer, genuine, m)
        reason, proofs = "rollback", {}
    else:
        at = data.draw(st.integers(0, n - 1))  # one event changed before the witnessed size
        forked = [*genuine[:at], leaf_hash(b"forged"), *genuine[at + 1:]]
        size = n if what == "rewritten" else data.draw(st.integers(n + 1, n + 50))
        bad, levels = _note(pki.signer, forked if what != "no-proof" else genuine, size)
        proofs = {} if what in ("rewritten", "no-proof") else {n: levels.consistency_proof(n)}
        if what == "bad-proof":  # a genuine extension, with a proof that was tampered with
            bad, levels = _note(pki.signer, genuine, size)
            p = levels.consistency_proof(n)
            proofs = {n: [leaf_hash(b"x"), *p[1:]] if p else [leaf_hash(b"x")]}
        reason = {"rewritten": "fork", "forked": "inconsistent", "no-proof": "no-proof",
                  "bad-proof": "inconsistent"}[what]
    with pytest.raises(WitnessRefused) as r:
        rule.check(bad, pki.cert_der, last, proofs)
    assert r.value.reason == reason and reason in REASONS and r.value.code is Code.WITNESS_REFUSED
    assert r.value.details["origin"] == ORIGIN and r.value.details["witnessed_size"] == n
    assert f"size {n}" in r.value.message or reason == "fork"


def test_keys_and_origins_are_checked(pki, other_pki) -> None:
    rule = WitnessRule(pki.ca_cert)
    note, _ = _note(pki.signer, _leaves(10), 10)

    def reason(note: str, cert: bytes) -> str:
        with pytest.raises(WitnessRefused) as r:
            rule.check(note, cert, None, {})
        return r.value.reason

    assert reason(note, other_pki.cert_der) == "untrusted-key"  # another CA's certificate
    assert reason(note, pki.certify(pki.signer, unit="graven-client")) == "untrusted-key"  # not a log certificate
    assert reason(note, pki.certify(pki.signer, cn="node2")) == "origin"  # node2's certificate for node1's log
    intruder, intruder_cert = pki.new_signer("node1")
    assert reason(note, intruder_cert) == "signature"  # the note is not signed by the certificate's key
    assert reason(f"{ORIGIN}\nten\n", pki.cert_der) == "malformed"
    held = _accept(rule, note, pki.cert_der, None, {})
    assert rule.check(note, pki.cert_der, held, {}).size == 10  # the same checkpoint again: fine
    other_origin, _ = _note(pki.signer, _leaves(12), 12, origin="graven/node2")
    with pytest.raises(WitnessRefused) as r:
        rule.check(other_origin, pki.certify(pki.signer, cn="node2"), held, {})
    assert r.value.reason == "origin"
    # a rotated log key: the new key's certificate, same origin, accepted with the proof
    note2, levels = _note(intruder, _leaves(20), 20)
    assert rule.check(note2, intruder_cert, held, {10: levels.consistency_proof(10)}).size == 20


def test_refusal_round_trips_through_its_code() -> None:
    exc = WitnessRefused("x refused", reason="fork", origin=ORIGIN, size=3)
    back = error_for_code(exc.code.value, exc.message, exc.to_dict()["details"])
    assert isinstance(back, WitnessRefused) and back.reason == "fork" and back.details["size"] == 3
