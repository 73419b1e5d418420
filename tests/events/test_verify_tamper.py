"""Offline verification (``verify_items``) against every kind of tampering, with the exact first bad seq.

Logs are made with the real chain writer and real keys; the verifier gets nothing but the CA certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import TamperedLog
from events import (
    NODE,
    Actor,
    ChainWriter,
    Checkpoint,
    Event,
    Kind,
    decode_event,
    encode_event,
    event_hash,
    sign_note,
    verify_items,
)
from pki import Ed25519Signer

Items = list[tuple[int, bytes]]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000_000_000_000

    def time_ns(self) -> int:
        self.t += 1_000_000
        return self.t

    def monotonic_ns(self) -> int:
        return self.t - 1_700_000_000_000_000_000


def write_log(signer: Ed25519Signer, cert: bytes, steps: list[Any], *, every: int = 5,
              origin: str = "graven/node1", boot_id: str = "boot-1") -> Items:
    """Run ``steps`` through a chain writer: ``(kind, payload)``, ``("rotate", signer, cert)`` or ``"seal"``."""
    w = ChainWriter(signer, origin=origin, boot_id=boot_id, clock=FakeClock(), checkpoint_every=every)
    out = [w.genesis(cert)]
    for step in steps:
        if step == "seal":
            out.append(w.checkpoint(sealed=True, reason="shutdown"))
        elif step[0] == "rotate":
            out.append(w.rotate(step[1], step[2]))
        else:
            out.extend(w.append(step[0], step[1], step[2] if len(step) > 2 else NODE))
    return [(e.seq, raw) for e, raw in out]


def history(n: int) -> list[Any]:
    admin = Actor("alice", ("os:admin",))
    kinds = [
        (Kind.BOOT_STARTED, {"boot_id": "boot-1", "slot": "A", "version": "v1", "image_digest": "ab" * 32,
                             "boot_number": 0}),
        (Kind.FSM_TRANSITION, {"trigger": "boot", "src": "booting", "dst": "running"}),
        (Kind.CONFIG_APPLIED, {"digest": "c1", "mode": "auto", "diff": [{"op": "replace", "path": "/x"}],
                               "version": 1}, admin),
        (Kind.TASK_STARTED, {"sequence": "boot", "phase": "network", "task": "links"}),
        (Kind.API_DENIED, {"method": "Reset", "subject": "bob", "roles": ["os:reader"], "reason": "role"}),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


class Sample(dict[str, Any]):
    def __repr__(self) -> str:  # keep hypothesis' failure reports readable
        return f"Sample({len(self['items'])} events, rotation at {self['rotation']})"


@pytest.fixture(scope="module")
def sample(pki: Any) -> dict[str, Any]:
    """A log with checkpoints, a rotation and a seal: 40 events before the rotation, 15 after."""
    new, new_cert = pki.new_signer()
    steps = [*history(40), ("rotate", new, new_cert), *history(15), "seal"]
    items = write_log(pki.signer, pki.cert_der, steps)
    rotation = next(s for s, raw in items if decode_event(raw).kind == Kind.KEY_ROTATED)
    return Sample(items=items, rotation=rotation, new=new, new_cert=new_cert)


def verdict(items: Items, ca: Any, threads: int = 2) -> TamperedLog:
    with pytest.raises(TamperedLog) as info:
        verify_items(items, ca, threads=threads)
    return info.value


def recode(raw: bytes, **changes: Any) -> bytes:
    return encode_event(msgspec.structs.replace(decode_event(raw), **changes))


def resign(raw: bytes, signer: Ed25519Signer, **changes: Any) -> bytes:
    event = msgspec.structs.replace(decode_event(raw), key_id=signer.key_id, **changes)
    return encode_event(msgspec.structs.replace(event, sig=signer.sign(event_hash(event))))


# -- the untouched log -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
def test_sample_verifies(sample: dict[str, Any], pki: Any, threads: int) -> None:
    items = sample["items"]
    report = verify_items(items, pki.ca_cert, threads=threads)
    assert report.events == len(items) and report.last_seq == len(items) - 1
    assert report.sealed and report.uncovered_tail == 0 and report.origin == "graven/node1"
    assert [k.key_id for k in report.keys] == [pki.signer.key_id, sample["new"].key_id]
    assert report.head == event_hash(decode_event(items[-1][1]))
    assert len(report.checkpoints) == sum(decode_event(r).kind == Kind.CHECKPOINT for _, r in items)


# -- any byte ------------------------------------------------------------------------------------------------------
@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_detected_at_its_seq(sample: dict[str, Any], pki: Any, data: st.DataObject) -> None:
    items: Items = sample["items"]
    seq = data.draw(st.integers(0, len(items) - 1), label="seq")
    raw = items[seq][1]
    pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="value")
    tampered = list(items)
    tampered[seq] = (seq, raw[:pos] + bytes([value]) + raw[pos + 1:])
    err = verdict(tampered, pki.ca_cert, threads=data.draw(st.sampled_from([1, 2]), label="threads"))
    assert err.seq == seq, f"byte {pos} of seq {seq} changed: reported seq {err.seq} ({err.reason}: {err})"


def test_every_byte_of_a_small_log(pki: Any) -> None:
    """Exhaustively: every byte of every stored value of a short log (genesis, events, checkpoint, rotation,
    sealed checkpoint), XORed with 0x01, 0x80 or 0xFF in turn, is reported at its own seq."""
    new, new_cert = pki.new_signer()
    items = write_log(pki.signer, pki.cert_der, [*history(3), ("rotate", new, new_cert), *history(2), "seal"],
                      every=3)
    kinds = {decode_event(r).kind for _, r in items}
    assert {Kind.GENESIS, Kind.CHECKPOINT, Kind.KEY_ROTATED} <= kinds
    misses = []
    for seq, raw in items:
        prefix = items[: seq + 2]  # what comes later cannot change where the first fault is
        for pos in range(len(raw)):
            mask = (0x01, 0x80, 0xFF)[pos % 3]
            tampered = list(prefix)
            tampered[seq] = (seq, raw[:pos] + bytes([raw[pos] ^ mask]) + raw[pos + 1:])
            try:
                verify_items(tampered, pki.ca_cert, threads=1)
            except TamperedLog as exc:
                if exc.seq != seq:
                    misses.append((seq, pos, mask, exc.seq, exc.reason))
            else:
                misses.append((seq, pos, mask, None, "accepted"))
    assert not misses, misses[:10]


# -- each tampering case, with its reason ----------------------------------------------------------------------------
def _tamper_cases() -> dict[str, Callable[[dict[str, Any], Any], tuple[Items, int, str]]]:
    cases: dict[str, Callable[[dict[str, Any], Any], tuple[Items, int, str]]] = {}

    def case(fn: Callable[[dict[str, Any], Any], tuple[Items, int, str]]) -> None:
        cases[fn.__name__] = fn

    @case
    def changed_payload(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        seq = 7
        ev = decode_event(items[seq][1])
        items[seq] = (seq, recode(items[seq][1], payload={**ev.payload, "digest": "forged"}))
        return items, seq, "signature"

    @case
    def changed_actor(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        items[3] = (3, recode(items[3][1], actor=Actor("mallory", ("os:admin",))))
        return items, 3, "signature"

    @case
    def changed_signature(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        sig = bytearray(decode_event(items[12][1]).sig)
        sig[0] ^= 0x40
        items[12] = (12, recode(items[12][1], sig=bytes(sig)))
        return items, 12, "signature"

    @case
    def deleted_event(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        del items[9]
        return items, 9, "gap"

    @case
    def deleted_first_event(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        return list(s["items"][1:]), 0, "gap"

    @case
    def values_swapped(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        items[5], items[6] = (5, items[6][1]), (6, items[5][1])
        return items, 5, "reordered"

    @case
    def events_swapped(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        items[5], items[6] = items[6], items[5]
        return items, 5, "reordered"

    @case
    def duplicated_event(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        items[8] = (8, items[7][1])
        return items, 8, "reordered"

    @case
    def garbage_value(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        items[4] = (4, b"\x93\x01\x02")
        return items, 4, "undecodable"

    @case
    def uncertified_key_mid_log(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        """An event re-signed (chain intact) by a key the CA never certified."""
        items = list(s["items"])
        items[10] = (10, resign(items[10][1], Ed25519Signer.generate()))
        return items, 10, "untrusted-key"

    @case
    def old_key_after_rotation(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        """The retired key signs an event after the rotation: certified once, but no longer the log key."""
        items = list(s["items"])
        seq = s["rotation"] + 2
        items[seq] = (seq, resign(items[seq][1], pki.signer))
        return items, seq, "untrusted-key"

    @case
    def forged_checkpoint_root(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        """Even the log key cannot commit to a root that is not the tree's: the checkpoint check catches it."""
        items = list(s["items"])
        seq = next(q for q, r in items if decode_event(r).kind == Kind.CHECKPOINT)
        ev = decode_event(items[seq][1])
        root = bytes(32)
        note = sign_note(Checkpoint("graven/node1", seq, root), pki.signer)
        items[seq] = (seq, resign(items[seq][1], pki.signer, payload={**ev.payload, "root": root, "note": note}))
        return items, seq, "checkpoint"

    @case
    def checkpoint_note_from_another_key(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        seq = next(q for q, r in items if decode_event(r).kind == Kind.CHECKPOINT)
        ev = decode_event(items[seq][1])
        note = sign_note(Checkpoint("graven/node1", seq, ev.payload["root"]), Ed25519Signer.generate())
        items[seq] = (seq, resign(items[seq][1], pki.signer, payload={**ev.payload, "note": note}))
        return items, seq, "checkpoint"

    @case
    def genesis_cert_not_bytes(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        """A huge int where the certificate belongs must be refused, not turned into a terabyte of zeros."""
        items = list(s["items"])
        ev = decode_event(items[0][1])
        items[0] = (0, recode(items[0][1], payload={**ev.payload, "cert": 2**40}))
        return items, 0, "untrusted-key"

    @case
    def checkpoint_root_not_bytes(s: dict[str, Any], pki: Any) -> tuple[Items, int, str]:
        items = list(s["items"])
        seq = next(q for q, r in items if decode_event(r).kind == Kind.CHECKPOINT)
        ev = decode_event(items[seq][1])
        items[seq] = (seq, recode(items[seq][1], payload={**ev.payload, "root": 2**40}))
        return items, seq, "checkpoint"

    return cases


CASES = _tamper_cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threads", [1, 2])
def test_tamper_case(sample: dict[str, Any], pki: Any, name: str, threads: int) -> None:
    items, seq, reason = CASES[name](sample, pki)
    err = verdict(items, pki.ca_cert, threads)
    assert (err.seq, err.reason) == (seq, reason), str(err)
    assert f"seq {seq}" in err.message


def test_genesis_certified_by_another_ca(pki: Any, other_pki: Any) -> None:
    items = write_log(other_pki.signer, other_pki.cert_der, history(6))
    verify_items(items, other_pki.ca_cert)  # fine for its own CA
    err = verdict(items, pki.ca_cert)
    assert (err.seq, err.reason) == (0, "untrusted-key")
    assert "not issued by the CA" in err.message


def test_genesis_with_a_non_log_certificate(pki: Any) -> None:
    signer = Ed25519Signer.generate()
    items = write_log(signer, pki.certify(signer, unit=None), history(3))
    err = verdict(items, pki.ca_cert)
    assert (err.seq, err.reason) == (0, "untrusted-key")
    assert "not a log-signing certificate" in err.message


def test_genesis_signed_by_another_key_than_it_certifies(pki: Any) -> None:
    items = write_log(Ed25519Signer.generate(), pki.cert_der, history(3))
    err = verdict(items, pki.ca_cert)
    assert (err.seq, err.reason) == (0, "untrusted-key")


def test_log_without_genesis(pki: Any) -> None:
    items = write_log(pki.signer, pki.cert_der, history(3))
    first = decode_event(items[1][1])
    forged = msgspec.structs.replace(first, seq=0, prev=bytes(32))
    forged = msgspec.structs.replace(forged, sig=pki.signer.sign(event_hash(forged)))
    err = verdict([(0, encode_event(forged))], pki.ca_cert)
    assert (err.seq, err.reason) == (0, "untrusted-key")


@pytest.mark.parametrize("how", ["other-ca", "no-log-unit"])
def test_rotation_to_an_uncertified_key(pki: Any, other_pki: Any, how: str) -> None:
    rogue = Ed25519Signer.generate()
    cert = other_pki.certify(rogue) if how == "other-ca" else pki.certify(rogue, unit=None)
    items = write_log(pki.signer, pki.cert_der, [*history(4), ("rotate", rogue, cert), *history(3)])
    rotation = next(s for s, raw in items if decode_event(raw).kind == Kind.KEY_ROTATED)
    err = verdict(items, pki.ca_cert)
    assert (err.seq, err.reason) == (rotation, "untrusted-key")


def test_events_spliced_from_another_nodes_log(pki: Any) -> None:
    other, other_cert = pki.new_signer("node2")  # same CA, another node
    mine = write_log(pki.signer, pki.cert_der, history(20), every=100)
    theirs = write_log(other, other_cert, history(20), every=100, origin="graven/node2", boot_id="boot-9")
    verify_items(theirs, pki.ca_cert)
    spliced = mine[:12] + theirs[12:16] + mine[16:]
    err = verdict(spliced, pki.ca_cert)
    assert (err.seq, err.reason) == (12, "foreign")
    assert "another log" in err.message


def test_truncated_tail_still_verifies_as_a_prefix(sample: dict[str, Any], pki: Any) -> None:
    """Offline, a cut tail is only visible against an older checkpoint (consistency proofs, audit bundles);
    the prefix itself is a valid log, and the report says where it ends and how much no checkpoint covers."""
    items = sample["items"][:23]
    report = verify_items(items, pki.ca_cert)
    assert report.last_seq == 22 and not report.sealed
    last_cp = max(c["seq"] for c in report.checkpoints)
    assert report.uncovered_tail == 22 - last_cp


def test_only_the_first_fault_is_reported(sample: dict[str, Any], pki: Any) -> None:
    items = list(sample["items"])
    items[30] = (30, recode(items[30][1], payload={"x": 1}))
    items[20] = (20, recode(items[20][1], sig=bytes(64)))
    del items[40]
    err = verdict(items, pki.ca_cert)
    assert (err.seq, err.reason) == (20, "signature")


def test_event_dataclass_round_trip_in_sample(sample: dict[str, Any]) -> None:
    for seq, raw in sample["items"]:
        ev = decode_event(raw, seq=seq)
        assert isinstance(ev, Event) and ev.seq == seq and encode_event(ev) == raw


def test_a_certificate_with_a_negative_serial_is_refused_not_warned_about() -> None:
    import warnings

    from cryptography.hazmat.primitives import serialization

    from errors import UntrustedKey
    from pki import load_certificate, make_ca

    _, ca = make_ca("graven-test")
    der = bytearray(ca.public_bytes(serialization.Encoding.DER))
    at = der.index(bytes([0xA0, 0x03, 0x02, 0x01, 0x02])) + 5  # after the version: INTEGER tag, length, serial
    assert der[at] == 0x02
    der[at + 2] |= 0x80  # the serial's sign bit: a negative number, as a flipped byte in an exported log could make
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping would fail here rather than pass as a refusal
        with pytest.raises(UntrustedKey, match=r"not an X\.509 certificate.*serial"):
            load_certificate(bytes(der))
