"""Replay is a pure fold: the same events always give the same state, the state folded live while appending
equals the state replayed from the stored bytes, and ``state_at`` agrees with replaying a prefix."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import InvalidEvent, TamperedLog
from events import (
    NODE,
    Actor,
    ChainWriter,
    Event,
    Kind,
    NodeState,
    decode_event,
    encode_event,
    event_hash,
    fold,
    replay,
    replay_raw,
    state_at,
)

slots = st.sampled_from(["A", "B"])
digests = st.text(alphabet="0123456789abcdef", min_size=4, max_size=8)
stages = st.sampled_from(["booting", "running", "maintenance", "upgrading", "rebooting", "shutting_down",
                          "stopped", "resetting"])
sequences = st.sampled_from(["boot", "install", "upgrade", "rollback", "reset", "reboot", "shutdown"])
actors = st.sampled_from([NODE, Actor("bootloader"), Actor("alice", ("os:admin",)), Actor("bob", ("os:reader",))])

steps = st.one_of(
    st.builds(lambda s, v, d, n: (Kind.BOOT_STARTED, {"boot_id": f"b{n}", "slot": s, "version": v,
                                                      "image_digest": d, "boot_number": n}),
              slots, st.sampled_from(["v1", "v2"]), digests, st.integers(0, 9)),
    st.builds(lambda f, t, r: (Kind.BOOT_FALLBACK, {"from_slot": f, "to_slot": t, "reason": r}),
              slots, slots, st.sampled_from(["tries exhausted", "bad image"])),
    st.builds(lambda s: (Kind.BOOT_COMMITTED, {"slot": s}), slots),
    st.builds(lambda a, b: (Kind.FSM_TRANSITION, {"trigger": "t", "src": a, "dst": b}), stages, stages),
    st.builds(lambda q: (Kind.SEQUENCE_STARTED, {"sequence": q, "phases": ["a", "b"]}), sequences),
    st.builds(lambda q, o: (Kind.SEQUENCE_STOPPED, {"sequence": q, "outcome": o, "duration_ns": 10}),
              sequences, st.sampled_from(["ok", "cancelled"])),
    st.builds(lambda q: (Kind.SEQUENCE_FAILED, {"sequence": q, "outcome": "failed", "error": "boom"}), sequences),
    st.builds(lambda d, m: (Kind.CONFIG_APPLIED, {"digest": d, "mode": m, "diff": [], "version": 1}),
              digests, st.sampled_from(["auto", "no-reboot", "reboot", "try"])),
    st.builds(lambda d: (Kind.CONFIG_STAGED, {"digest": d, "diff": []}), digests),
    st.builds(lambda d: (Kind.CONFIG_REVERTED, {"digest": d, "reason": "timeout"}), digests),
    st.builds(lambda d: (Kind.CONFIG_CONFIRMED, {"digest": d}), digests),
    st.builds(lambda s, d: (Kind.IMAGE_INSTALLED, {"slot": s, "version": "v2", "digest": d}), slots, digests),
    st.just((Kind.API_DENIED, {"method": "Reset", "subject": "bob", "roles": ["os:reader"], "reason": "role"})),
    st.builds(lambda p: (Kind.TASK_STARTED, {"sequence": "boot", "phase": p, "task": "t"}),
              st.sampled_from(["network", "image"])),
    st.just(("seal",)),
)


def _write(signer: Any, cert: bytes, plan: list[tuple[Any, ...]], actor_list: list[Actor]) -> tuple[list[Event],
                                                                                                   list[bytes],
                                                                                                   NodeState]:
    """Append the plan, folding each event into a live state as a node would; return events, bytes, state."""
    w = ChainWriter(signer, origin="graven/replay", boot_id="b0", checkpoint_every=6)
    events: list[Event] = []
    raws: list[bytes] = []
    live = NodeState()

    def take(signed: list[tuple[Event, bytes]]) -> None:
        nonlocal live
        for event, raw in signed:
            events.append(event)
            raws.append(raw)
            live = fold(live, event)

    take([w.genesis(cert)])
    for step, actor in zip(plan, actor_list, strict=True):
        if step[0] == "seal":
            take([w.checkpoint(sealed=True, reason="reboot")])
            continue
        kind, payload = step
        if kind == Kind.BOOT_STARTED:
            w.boot_id = payload["boot_id"]
        take(w.append(kind, payload, actor))
    return events, raws, live


@settings(max_examples=60, deadline=None)
@given(plan=st.lists(steps, max_size=40), data=st.data())
def test_replay_is_deterministic_and_equals_live_state(pki: Any, plan: list[Any], data: st.DataObject) -> None:
    actor_list = data.draw(st.lists(actors, min_size=len(plan), max_size=len(plan)), label="actors")
    events, raws, live = _write(pki.signer, pki.cert_der, plan, actor_list)
    decoded = [decode_event(r, seq=i) for i, r in enumerate(raws)]
    state = replay(decoded)
    assert state == live  # the live node and its log agree
    assert state == replay(events) == replay(decode_event(r) for r in raws)  # same events, same state
    assert state == functools.reduce(fold, decoded, NodeState())
    assert state == replay_raw(raws)  # the fast path from stored bytes
    given = data.draw(st.lists(st.booleans(), min_size=len(raws), max_size=len(raws)), label="digests given")
    hashed = [event_hash(e) if g else None for e, g in zip(events, given, strict=True)]
    assert state == replay_raw(raws, None, hashed)  # digests hashed elsewhere (storage's hashing process)
    assert msgspec.msgpack.encode(state.to_json()) == msgspec.msgpack.encode(replay(decoded).to_json())
    assert state.seq == len(events) - 1 and state.origin == "graven/replay"

    k = data.draw(st.integers(0, len(events) - 1), label="k")
    mid = state_at(decoded, k)
    assert mid == replay(decoded[: k + 1])
    assert replay(decoded[k + 1:], mid) == state  # resuming from a snapshot changes nothing
    assert replay_raw(raws[k + 1:], mid) == state
    assert replay_raw(raws[: k + 1]) == mid


def test_replay_values(pki: Any) -> None:
    admin = Actor("alice", ("os:admin",))
    plan = [
        (Kind.BOOT_STARTED, {"boot_id": "b1", "slot": "A", "version": "v1", "image_digest": "d", "boot_number": 0}),
        (Kind.FSM_TRANSITION, {"trigger": "boot", "src": "booting", "dst": "running"}),
        (Kind.BOOT_COMMITTED, {"slot": "A"}),
        (Kind.IMAGE_INSTALLED, {"slot": "B", "version": "v2", "digest": "e"}),
        (Kind.CONFIG_APPLIED, {"digest": "c1", "mode": "auto", "diff": [], "version": 1}),
        (Kind.CONFIG_APPLIED, {"digest": "c2", "mode": "try", "diff": [], "version": 1, "deadline_ns": 5}),
        (Kind.SEQUENCE_STARTED, {"sequence": "upgrade", "phases": ["verify"]}),
        (Kind.FSM_TRANSITION, {"trigger": "reboot", "src": "running", "dst": "rebooting"}),
        ("seal",),
        (Kind.BOOT_STARTED, {"boot_id": "b2", "slot": "B", "version": "v2", "image_digest": "e", "boot_number": 1}),
        (Kind.BOOT_FALLBACK, {"from_slot": "B", "to_slot": "A", "reason": "tries exhausted"}),
    ]
    events, _, live = _write(pki.signer, pki.cert_der, plan, [admin] * len(plan))
    s = replay(events)
    assert s == live
    assert s.config_digest == "c2" and s.config_generation == 2
    assert s.try_config == {"digest": "c2", "revert_to": "c1", "deadline_ns": 5}
    assert s.slots["A"].good and not s.slots["B"].good and s.slots["B"].version == "v2"
    assert [(b.boot_id, b.slot, b.outcome) for b in s.boots] == [("b1", "A", "rebooted"), ("b2", "B", "running")]
    assert s.boots[-1].fallback is not None and s.last_fallback is not None
    assert s.sequence is None and s.stage == "booting" and not s.sealed and s.checkpoints >= 1
    js = s.to_json()
    assert js["head"] == s.head.hex()  # bytes render as hex


def test_fold_refuses_a_broken_chain(pki: Any) -> None:
    events, _, _ = _write(pki.signer, pki.cert_der, [(Kind.TASK_STARTED, {"i": i}) for i in range(6)],
                          [NODE] * 6)
    with pytest.raises(TamperedLog) as gap:
        replay([*events[:3], *events[4:]])
    assert (gap.value.seq, gap.value.reason) == (3, "gap")
    forged = msgspec.structs.replace(events[4], prev=b"\x01" * 32)
    with pytest.raises(TamperedLog) as chain:
        replay([*events[:4], forged])
    assert (chain.value.seq, chain.value.reason) == (4, "chain")
    with pytest.raises(TamperedLog) as short:
        state_at(events, len(events) + 3)
    assert short.value.reason == "truncated"


def test_replay_raw_checks_the_chain(pki: Any) -> None:
    events, raws, _ = _write(pki.signer, pki.cert_der, [(Kind.TASK_STARTED, {"i": i}) for i in range(8)],
                             [NODE] * 8)
    assert replay_raw(raws) == replay(events)
    altered = list(raws)
    altered[4] = encode_event(msgspec.structs.replace(events[4], payload={"i": 99}))
    with pytest.raises(TamperedLog) as info:
        replay_raw(altered)
    assert (info.value.seq, info.value.reason) == (5, "chain")  # no signature checks here: the chain tells
    with pytest.raises(TamperedLog) as gap:
        replay_raw([*raws[:3], *raws[4:]])
    assert (gap.value.seq, gap.value.reason) == (3, "gap")
    with pytest.raises(InvalidEvent) as bad:
        replay_raw([*raws[:6], b"\xc1"])
    assert bad.value.details["seq"] == 6



def _with_actor(raw: bytes, actor: object) -> bytes:
    """The stored bytes with another actor (any msgpack value), in canonical key order."""
    m = msgspec.msgpack.decode(raw)
    m["actor"] = actor
    return msgspec.msgpack.Encoder(order="sorted").encode(m)


def test_replay_raw_types_the_actor_when_a_fold_reads_it(pki: Any) -> None:
    plan = [(Kind.TASK_STARTED, {"i": 0}), (Kind.SEQUENCE_STARTED, {"sequence": "boot", "phases": ["a"]}),
            (Kind.TASK_STARTED, {"i": 1})]
    _, raws, _ = _write(pki.signer, pki.cert_der, plan, [NODE] * 3)
    bad = [*raws[:1], _with_actor(raws[1], 5), *raws[2:]]  # task.started: its actor is walked, not typed
    with pytest.raises(TamperedLog) as info:
        replay_raw(bad)
    assert (info.value.seq, info.value.reason) == (2, "chain")  # the chain covers the actor's bytes
    with pytest.raises(InvalidEvent) as typed:  # sequence.started's fold reads the actor (the last event here)
        replay_raw([*raws[:2], _with_actor(raws[2], [1])])
    assert typed.value.details["seq"] == 2 and "actor" in str(typed.value)


@pytest.mark.parametrize(("payload", "error"), [
    ({"digest": "d2", "mode": "try", "deadline_ns": 7}, None),
    ({"digest": "d2", "v": 1}, None),  # the version key of version 1, written out
    ({"digest": 5}, "Expected `str`"),  # a field of the wrong type
    ({"mode": "auto"}, "digest"),  # a required field missing
])
def test_replay_raw_reads_typed_payloads_as_fold_does(pki: Any, payload: dict[str, object],
                                                      error: str | None) -> None:
    """replay_raw decodes the payload of a typed apply function straight into its Struct: the same state as fold,
    and the same error for a payload fold refuses."""
    w = ChainWriter(pki.signer, origin="graven/replay", boot_id="b0")
    signed = [w.genesis(pki.cert_der)]
    for kind, p in [(Kind.CONFIG_APPLIED, {"digest": "d1"}), (Kind.API_DENIED, {"method": "Reboot"}),
                    (Kind.CONFIG_APPLIED, payload), (Kind.API_DENIED, {"roles": 5})]:  # the fold reads no denial
        signed += w.append(kind, p, NODE)
    events, raws = [e for e, _ in signed], [r for _, r in signed]
    if error is None:
        state = replay_raw(raws)
        assert state == replay(events)
        assert (state.config_digest, state.config_generation, state.denied) == ("d2", 2, 2)
        return
    with pytest.raises(InvalidEvent) as slow:
        replay(events)
    with pytest.raises(InvalidEvent) as fast:
        replay_raw(raws)
    assert error in fast.value.message
    assert (fast.value.message, fast.value.details) == (slow.value.message, slow.value.details)
