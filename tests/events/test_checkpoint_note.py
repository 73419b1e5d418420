"""Checkpoints as C2SP ``tlog-checkpoint`` signed notes: format, signing, parsing, verification, refusals.

The key-hash and signature-line encoding are anchored to the Go ``golang.org/x/mod/sumdb/note`` example key
(``PeterNeumann+c74f20a3+...``), an independent implementation of the same ``signed-note`` spec.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import VerificationError
from events import Checkpoint, parse_note, sign_note, verify_note
from events._checkpoint import note_key_hash
from pki import Ed25519Signer

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="

ROOT = bytes(range(32))


def _go_signer() -> Ed25519Signer:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1  # Ed25519
    return Ed25519Signer(Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_key_hash_and_signature_line_match_go_sumdb_note() -> None:
    signer = _go_signer()
    vkey_raw = base64.b64decode(GO_VKEY.split("+", 2)[2])
    assert vkey_raw == b"\x01" + signer.public_raw
    assert note_key_hash("PeterNeumann", signer.public_raw).hex() == "c74f20a3"
    blob = base64.b64decode(GO_SIG)
    assert blob[:4].hex() == "c74f20a3"
    # The Go note's signature is plain Ed25519 over the note text, which is what sign_note does for a body.
    assert signer.sign(GO_TEXT.encode()) == blob[4:]
    Ed25519PublicKey.from_public_bytes(signer.public_raw).verify(blob[4:], GO_TEXT.encode())


def test_sign_note_format(pki) -> None:
    signer = pki.signer
    cp = Checkpoint("graven/node1", 42, ROOT)
    note = sign_note(cp, signer)
    lines = note.split("\n")
    assert lines[:4] == ["graven/node1", "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[-1] == "" and len(lines) == 6
    dash, name, blob = lines[4].split(" ")
    assert dash == "\u2014" and name == "graven/node1"
    raw = base64.b64decode(blob, validate=True)
    assert raw[:4] == note_key_hash("graven/node1", signer.public_raw)
    body = "graven/node1\n42\n" + base64.b64encode(ROOT).decode() + "\n"
    Ed25519PublicKey.from_public_bytes(signer.public_raw).verify(raw[4:], body.encode())
    parsed, sigs = parse_note(note)
    assert parsed == cp
    assert sigs == [("graven/node1", raw[:4], raw[4:])]
    assert verify_note(note, signer.public_raw) == cp


@settings(max_examples=60, deadline=None)
@given(origin=st.from_regex(r"[a-z0-9.\-/]{1,40}", fullmatch=True), size=st.integers(0, 2**63),
       root=st.binary(min_size=32, max_size=32))
def test_note_round_trip(origin: str, size: int, root: bytes) -> None:
    signer = _go_signer()
    cp = Checkpoint(origin, size, root)
    note = sign_note(cp, signer)
    assert parse_note(note)[0] == cp
    assert verify_note(note, signer.public_raw) == cp


def test_note_from_another_key_fails(pki, other_pki) -> None:
    cp = Checkpoint("graven/node1", 7, ROOT)
    note = sign_note(cp, other_pki.signer)
    with pytest.raises(VerificationError):
        verify_note(note, pki.signer.public_raw)
    # a cosigned note (witness line added) verifies for either key, each by its own line
    cosigned = note + sign_note(cp, pki.signer).split("\n\n", 1)[1]
    assert verify_note(cosigned, pki.signer.public_raw) == cp
    assert verify_note(cosigned, other_pki.signer.public_raw) == cp
    with pytest.raises(VerificationError):
        verify_note(cosigned, Ed25519Signer.generate().public_raw)


@pytest.mark.parametrize("change", ["origin", "size", "root", "sig", "keyhash", "name"])
def test_tampered_note_fails(pki, change: str) -> None:
    signer = pki.signer
    note = sign_note(Checkpoint("graven/node1", 7, ROOT), signer)
    body, sig_line = note.split("\n\n")
    dash, name, blob = sig_line.strip().split(" ")
    raw = bytearray(base64.b64decode(blob))
    if change == "origin":
        body = body.replace("graven/node1", "graven/node2")
    elif change == "size":
        body = body.replace("\n7\n", "\n8\n")
    elif change == "root":
        body = body.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[::-1]).decode())
    elif change == "sig":
        raw[10] ^= 1
    elif change == "keyhash":
        raw[0] ^= 1
    else:
        name = "graven/node2"
    forged = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(VerificationError):
        verify_note(forged, signer.public_raw)


@pytest.mark.parametrize("note", [
    "graven/x\n1\n" + base64.b64encode(ROOT).decode() + "\n",  # no signature block
    "graven/x\n1\n",  # no root
    "graven/x\n01\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x AAAA\n",  # non-canonical size
    "graven/x\n-1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x AAAA\n",
    "graven/x\nten\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x AAAA\n",
    "graven/x\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n\n\u2014 graven/x AAAA\n",  # short root
    "graven/x\n1\n!!notbase64!!\n\n\u2014 graven/x AAAA\n",
    "graven/x\n1\n" + base64.b64encode(ROOT).decode() + "\n\n- graven/x AAAA\n",  # not an em dash
    "graven/x\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x\n",
    "graven/x\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x A\n",  # signature not base64
    "graven/x\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 graven/x AAAA%%%%\n",
])
def test_malformed_notes_are_refused(pki, note: str) -> None:
    with pytest.raises(VerificationError):
        verify_note(note, pki.signer.public_raw)
