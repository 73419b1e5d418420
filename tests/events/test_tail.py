"""Opening a log verifies its tail with the offline verifier's checks (``events.verify_tail``): it continues the
chain exactly where a full verification ends, and a change in the tail is found at the seq the auditor names."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_verify_tamper import Items, Sample, history, write_log

from errors import TamperedLog
from events import Kind, LogTail, decode_event, leaf_hash, merkle_root, verify_items, verify_tail


def open_tail(items: Items, known: dict[str, bytes]) -> LogTail:
    """What the storage adapter does, over a list: newest first below a seq, oldest first from one."""
    return verify_tail(lambda end: [(s, r) for s, r in reversed(items) if end is None or s < end],
                       lambda start: [(s, r) for s, r in items if s >= start], known)


@pytest.fixture(scope="module")
def log(pki: Any) -> dict[str, Any]:
    """Checkpoints every 5, a rotation after 22 events, then 9 more: the tail holds events of the new key."""
    new, new_cert = pki.new_signer()
    items = write_log(pki.signer, pki.cert_der, [*history(22), ("rotate", new, new_cert), *history(9)])
    return Sample(items=items, new=new, rotation=22)


def checkpoints(items: Items) -> list[int]:
    return [s for s, r in items if decode_event(r).kind == Kind.CHECKPOINT]


def test_the_tail_continues_where_a_full_verification_ends(log: dict[str, Any], pki: Any) -> None:
    items: Items = log["items"]
    cps = checkpoints(items)
    assert len(cps) >= 4
    for end in [1, 2, cps[1], cps[1] + 1, cps[-1], cps[-1] + 1, len(items)]:  # the log as it stood at each end
        part = items[:end]
        report = verify_items(part, pki.ca_cert, threads=1)
        for known in ({}, {pki.signer.key_id: pki.signer.public_raw}, {log["new"].key_id: log["new"].public_raw}):
            tail = open_tail(part, known)
            assert (tail.next_seq, tail.prev) == (end, report.head), (end, known)
            assert tail.tree.size == end and tail.tree.root() == merkle_root([leaf_hash(r) for _, r in part])
            assert tail.since_checkpoint == report.uncovered_tail and tail.origin == "graven/node1"
            assert tail.key_id == report.keys[-1].key_id


def test_an_empty_log_has_an_empty_tail() -> None:
    tail = open_tail([], {})
    assert (tail.next_seq, tail.since_checkpoint, tail.origin, tail.key_id, tail.tree.size) == (0, 0, "", None, 0)


def test_a_tail_whose_key_is_certified_nowhere_is_refused(log: dict[str, Any], pki: Any) -> None:
    items: Items = log["items"]
    cp = checkpoints(items)[-1]
    cut = [(s, r) for s, r in items if s >= cp]  # the genesis and rotation that certify the keys are gone
    with pytest.raises(TamperedLog) as info:
        verify_tail(lambda end: [(s, r) for s, r in reversed(cut) if end is None or s < end],
                    lambda start: [(s, r) for s, r in cut if s >= start], {})
    assert info.value.seq == cp and info.value.reason == "untrusted-key"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_changed_byte_in_the_tail_is_found_where_the_auditor_finds_it(log: dict[str, Any], pki: Any,
                                                                        data: st.DataObject) -> None:
    """Any byte of any event from the last checkpoint on: opening and the offline verifier name the same first
    bad seq, and the same reason but in two places: the last checkpoint's frontier is where opening starts from
    (the auditor rebuilds it, so a changed one is only a bad signature to it; a changed prev there is a broken chain
    to the auditor and a bad signature to opening), and without a CA a changed
    certificate is only an unknown key."""
    items: Items = log["items"]
    cp = checkpoints(items)[-1]
    seq = data.draw(st.integers(cp, len(items) - 1), label="seq")
    raw = items[seq][1]
    pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="value")
    tampered = list(items)
    tampered[seq] = (seq, raw[:pos] + bytes([value]) + raw[pos + 1:])
    with pytest.raises(TamperedLog) as audit:
        verify_items(tampered, pki.ca_cert, threads=1)
    with pytest.raises(TamperedLog) as opened:
        open_tail(tampered, {pki.signer.key_id: pki.signer.public_raw})
    assert opened.value.seq == audit.value.seq == seq
    if seq == cp:  # opening takes the checkpoint's own prev as the chain head: a changed prev is a bad signature
        assert opened.value.reason in (audit.value.reason, "checkpoint", "signature")
    elif audit.value.reason != "untrusted-key":
        assert opened.value.reason == audit.value.reason
