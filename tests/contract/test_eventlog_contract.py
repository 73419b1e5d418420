"""The ``EventLog`` contract, run against every backend (``make_log`` is parametrized in ``tests/conftest.py``).

Whatever stores the log, the core must see the same thing: contiguous seqs from a genesis event, a hash chain,
checkpoints every N events and on seal, durable acknowledgements, rotation, and a result that verifies offline
with the CA certificate alone and replays into the same state.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from errors import InvalidEvent
from events import (
    GENESIS_PREV,
    Actor,
    Event,
    Kind,
    decode_event,
    event_hash,
    leaf_hash,
    merkle_root,
    replay,
    state_at,
    verify_items,
    verify_note,
)


def _events(log: Any) -> list[Event]:
    return list(log.read())


def _expected_checkpoint_seqs(events: list[Event], every: int) -> list[int]:
    """Where checkpoints must sit: right after the appended event that brings the count of events since the
    last checkpoint to ``every`` (genesis counts, but only an append triggers a checkpoint)."""
    want, since, due = [], 0, False
    for e in events:
        if due:
            want.append(e.seq)
            since, due = 0, False
            continue
        since += 1
        due = e.seq > 0 and since >= every
    return want


def test_genesis_first(make_log: Any, pki: Any) -> None:
    log = make_log()
    events = _events(log)
    assert len(events) == 1 and log.next_seq() == 1
    genesis = events[0]
    assert (genesis.seq, genesis.kind, genesis.prev) == (0, Kind.GENESIS, GENESIS_PREV)
    assert genesis.payload["cert"] == pki.cert_der
    assert genesis.payload["origin"] == "graven/test"
    assert genesis.key_id == pki.signer.key_id


def test_append_read_round_trip(make_log: Any) -> None:
    log = make_log()
    payloads: list[dict[str, Any]] = [
        {},
        {"trigger": "boot", "src": "booting", "dst": "running"},
        {"nested": {"a": [1, 2.5, None, True, "x"], "b": b"\x00\xff"}, "n": -(2**63), "big": 2**64 - 1},
        {"unicode": "héllo ✓ 日本"},
    ]
    actor = Actor("admin@example.com", ("os:admin",))
    acked = [log.append(Kind.FSM_TRANSITION, p, actor) for p in payloads]
    stored = _events(log)[1:]
    assert [e.seq for e in acked] == [1, 2, 3, 4]
    for ack, got, payload in zip(acked, stored, payloads, strict=True):
        assert got == ack
        assert got.payload == payload
        assert got.actor == actor
        assert got.kind == Kind.FSM_TRANSITION
    for seq, raw in log.read_raw():
        assert decode_event(raw).seq == seq
    assert [e.seq for e in log.read(2, 4)] == [2, 3]
    assert log.next_seq() == 5


def test_seq_contiguous_and_chained(make_log: Any) -> None:
    log = make_log(checkpoint_every=7)
    for i in range(40):
        log.append(Kind.TASK_STARTED, {"i": i})
    events = _events(log)
    assert [e.seq for e in events] == list(range(len(events)))
    prev = GENESIS_PREV
    for e in events:
        assert e.prev == prev
        prev = event_hash(e)


@pytest.mark.parametrize("every", [1, 3, 10])
def test_checkpoints_every_n(make_log: Any, pki: Any, every: int) -> None:
    log = make_log(checkpoint_every=every)
    for i in range(35):
        log.append(Kind.TASK_STOPPED, {"i": i})
    log.flush()
    events = _events(log)
    raws = [raw for _, raw in log.read_raw()]
    cps = [e for e in events if e.kind == Kind.CHECKPOINT]
    assert [e.seq for e in cps] == _expected_checkpoint_seqs(events, every)
    assert cps, "no checkpoint was written"
    for cp in cps:
        size = cp.payload["size"]
        assert size == cp.seq  # a checkpoint commits to every event before it
        assert cp.payload["root"] == merkle_root([leaf_hash(r) for r in raws[:size]])
        note = verify_note(cp.payload["note"], pki.signer.public_raw)
        assert (note.size, note.root, note.origin) == (size, cp.payload["root"], "graven/test")
        assert cp.payload["sealed"] is False


def test_seal_appends_sealed_checkpoint(make_log: Any, pki: Any) -> None:
    log = make_log(checkpoint_every=1000)
    for i in range(5):
        log.append(Kind.TASK_STARTED, {"i": i})
    sealed = log.seal("reboot")
    events = _events(log)
    assert events[-1] == sealed
    assert sealed.kind == Kind.CHECKPOINT and sealed.seq == 6
    assert sealed.payload["sealed"] is True and sealed.payload["reason"] == "reboot"
    assert sealed.payload["size"] == 6
    report = verify_items(log.read_raw(), pki.ca_cert)
    assert report.sealed and report.uncovered_tail == 0
    assert report.checkpoints[-1]["sealed"] is True


@pytest.mark.parametrize("how", ["append", "submit"])
def test_concurrent_appenders(make_log: Any, pki: Any, how: str) -> None:
    log = make_log(checkpoint_every=64)
    threads_n, per = 8, 200
    acked: dict[tuple[int, int], Event] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(per):
                payload = {"t": t, "i": i}
                if how == "append":
                    ev = log.append(Kind.TASK_STARTED, payload)
                else:
                    ev = log.submit(Kind.TASK_STARTED, payload).result(timeout=30)
                with lock:
                    acked[(t, i)] = ev
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert len(acked) == threads_n * per
    events = _events(log)
    assert [e.seq for e in events] == list(range(len(events)))
    seen: dict[tuple[int, int], list[Event]] = {}
    for e in events:
        if e.kind == Kind.TASK_STARTED:
            seen.setdefault((e.payload["t"], e.payload["i"]), []).append(e)
    assert set(seen) == set(acked)
    for key, ack in acked.items():
        assert seen[key] == [ack], f"event {key} stored {len(seen[key])} times or differently"
    # each appender's own events keep its order
    for t in range(threads_n):
        seqs = [acked[(t, i)].seq for i in range(per)]
        assert seqs == sorted(seqs)
    report = verify_items(log.read_raw(), pki.ca_cert)
    assert report.events == len(events) == 1 + threads_n * per + len(report.checkpoints)


def test_wait_for(make_log: Any) -> None:
    log = make_log()
    assert log.wait_for(0, timeout=1)
    nxt = log.next_seq()
    t0 = time.monotonic()
    assert log.wait_for(nxt, timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.04

    def later() -> None:
        time.sleep(0.1)
        log.append(Kind.TASK_STARTED, {"late": True})

    th = threading.Thread(target=later)
    th.start()
    try:
        assert log.wait_for(nxt, timeout=10) is True
        assert log.next_seq() == nxt + 1
        assert next(iter(log.read(nxt))).payload == {"late": True}
    finally:
        th.join()


def test_rotate(make_log: Any, pki: Any) -> None:
    log = make_log(checkpoint_every=4)
    old = pki.signer
    for i in range(5):
        log.append(Kind.TASK_STARTED, {"i": i})
    new, new_cert = pki.new_signer()
    rotated = log.rotate(new, new_cert)
    assert rotated.kind == Kind.KEY_ROTATED and rotated.key_id == old.key_id
    assert rotated.payload["cert"] == new_cert and rotated.payload["key_id"] == new.key_id
    after = [log.append(Kind.TASK_STARTED, {"j": j}) for j in range(10)]
    log.seal("shutdown")
    assert all(e.key_id == new.key_id for e in after)
    events = _events(log)
    later = [e for e in events if e.seq > rotated.seq]
    assert later and all(e.key_id == new.key_id for e in later)
    assert any(e.kind == Kind.CHECKPOINT for e in later)  # checkpoint notes are signed by the new key too
    assert all(e.key_id == old.key_id for e in events if e.seq <= rotated.seq)
    report = verify_items(log.read_raw(), pki.ca_cert)
    assert [k.key_id for k in report.keys] == [old.key_id, new.key_id]
    assert [k.since_seq for k in report.keys] == [0, rotated.seq]
    assert replay(log.read()).key_id == new.key_id


@pytest.mark.parametrize("bad", [{"x": object()}, {"a": {1: 2}}, {"n": 2**70}, {"s": "\ud800"}],
                         ids=["object", "int-key", "overflow", "surrogate"])
def test_unencodable_payload_fails_only_that_call(make_log: Any, pki: Any, bad: dict[str, Any]) -> None:
    log = make_log(checkpoint_every=5)
    stop = threading.Event()
    acked: list[Event] = []
    errors: list[BaseException] = []

    def background() -> None:
        i = 0
        try:
            while not stop.is_set() or i < 20:
                acked.append(log.append(Kind.TASK_STARTED, {"bg": i}))
                i += 1
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=background)
    th.start()
    try:
        before = log.append(Kind.TASK_STARTED, {"before": True})
        with pytest.raises(InvalidEvent):
            log.append(Kind.CONFIG_APPLIED, bad)
        with pytest.raises(InvalidEvent):
            log.submit(Kind.CONFIG_APPLIED, bad).result(timeout=10)
        after = log.append(Kind.TASK_STARTED, {"after": True})
    finally:
        stop.set()
        th.join()
    assert not errors
    assert after.seq > before.seq
    events = _events(log)
    assert [e.seq for e in events] == list(range(len(events)))
    assert not [e for e in events if e.kind == Kind.CONFIG_APPLIED]
    stored = {e.seq: e for e in events}
    for ev in [before, after, *acked]:
        assert stored[ev.seq] == ev
    verify_items(log.read_raw(), pki.ca_cert)


@pytest.mark.parametrize("kind", [Kind.GENESIS, Kind.CHECKPOINT, Kind.KEY_ROTATED])
def test_the_logs_own_kinds_cannot_be_appended(make_log: Any, pki: Any, kind: str) -> None:
    log = make_log(checkpoint_every=3)
    log.append(Kind.TASK_STARTED, {})
    forged = {"size": 1, "root": b"\x00" * 32, "note": "x", "cert": pki.cert_der, "origin": "graven/test"}
    with pytest.raises(InvalidEvent):
        log.append(kind, forged)
    log.append(Kind.TASK_STARTED, {})
    events = _events(log)[1:]
    assert {e.kind for e in events} <= {Kind.TASK_STARTED, Kind.CHECKPOINT}
    assert all(e.payload.get("note") != "x" for e in events)
    verify_items(log.read_raw(), pki.ca_cert)


def _node_history(log: Any) -> None:
    admin = Actor("alice", ("os:admin",))
    log.append(Kind.BOOT_STARTED, {"boot_id": "b1", "slot": "A", "version": "v1", "image_digest": "d1",
                                   "boot_number": 0})
    log.append(Kind.FSM_TRANSITION, {"trigger": "boot", "src": "booting", "dst": "running"})
    log.append(Kind.IMAGE_INSTALLED, {"slot": "A", "version": "v1", "digest": "d1"})
    log.append(Kind.BOOT_COMMITTED, {"slot": "A"})
    log.append(Kind.SEQUENCE_STARTED, {"sequence": "upgrade", "phases": ["verify", "write"]}, admin)
    log.append(Kind.CONFIG_APPLIED, {"digest": "c1", "mode": "auto", "diff": [], "version": 1}, admin)
    log.append(Kind.API_DENIED, {"method": "Reset", "subject": "bob", "roles": ["os:reader"], "reason": "role"})
    log.append(Kind.SEQUENCE_STOPPED, {"sequence": "upgrade", "outcome": "ok", "duration_ns": 5})
    log.append(Kind.FSM_TRANSITION, {"trigger": "reboot", "src": "running", "dst": "rebooting"})
    log.seal("reboot")


def test_verify_and_replay(make_log: Any, pki: Any) -> None:
    log = make_log(checkpoint_every=4)
    _node_history(log)
    report = verify_items(log.read_raw(), pki.ca_cert)
    events = _events(log)
    assert report.events == len(events) and report.last_seq == events[-1].seq
    assert report.origin == "graven/test" and report.sealed
    state = replay(events)
    assert state == replay(log.read())  # deterministic
    assert state.seq == events[-1].seq and state.head == event_hash(events[-1])
    assert state.stage == "rebooting" and state.config_digest == "c1" and state.denied == 1
    assert state.slots["A"].good and state.active_slot == "A"
    assert [b.outcome for b in state.boots] == ["rebooted"]
    assert state.sealed and state.sequence is None
    seq_started = next(e.seq for e in events if e.kind == Kind.SEQUENCE_STARTED)
    mid = state_at(log.read(), seq_started)
    assert mid.sequence is not None and mid.sequence.name == "upgrade" and mid.sequence.actor == "alice[os:admin]"


def test_rotation_to_key_signed_by_new_signer_is_certified(make_log: Any, pki: Any) -> None:
    """Two rotations in a row: each key signs only its own stretch."""
    log = make_log(checkpoint_every=3)
    keys = [pki.signer]
    for _ in range(2):
        log.append(Kind.TASK_STARTED, {})
        signer, cert = pki.new_signer()
        log.rotate(signer, cert)
        keys.append(signer)
    log.append(Kind.TASK_STARTED, {})
    report = verify_items(log.read_raw(), pki.ca_cert)
    assert [k.key_id for k in report.keys] == [s.key_id for s in keys]
