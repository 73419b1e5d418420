"""The take-over table, pair by pair, and as a property over random request streams."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqkit import blocker, run, sleeper

from errors import Locked, TransitionRejected
from events import Actor, Kind, replay, verify_items
from fsm import TRANSITIONS, Stage
from sequencer import SEQUENCES, TAKEOVER, Phase, Run, SequenceName, UpgradeRequest, may_take_over

S = SequenceName
ALICE, BOB = Actor("alice", ("os:admin",)), Actor("bob", ("os:operator",))


def _after_enter(name: S, stage: Stage) -> Stage:
    enter = SEQUENCES[name].enter
    if enter is None:
        return stage
    return next(r.dest for r in TRANSITIONS if r.trigger is enter and stage in r.sources)


def _holding_table(started: asyncio.Event | None = None) -> dict[S, Any]:
    """Every sequence keeps its stages and FSM triggers, but its phases become one task that runs until cancelled."""
    table = {}
    for name, seq in SEQUENCES.items():
        table[name] = replace(seq, phases=(Phase("hold", (blocker(f"hold-{name.value}", started),)),), done=None)
    return table


def _start_stage(running: S, requested: S) -> Stage:
    """A stage ``running`` may start in such that, once it holds, ``requested`` may start too (if any)."""
    stages = sorted(SEQUENCES[running].stages)
    good = [s for s in stages if _after_enter(running, s) in SEQUENCES[requested].stages]
    return (good or stages)[0]


def test_every_permitted_takeover_has_a_stage_to_run_in() -> None:
    for running, requested in itertools.product(S, S):
        if may_take_over(running, requested):
            held = {_after_enter(running, s) for s in SEQUENCES[running].stages}
            assert held & SEQUENCES[requested].stages, (running, requested)


@pytest.mark.parametrize("running,requested", list(itertools.product(S, S)), ids=lambda s: s.value)
def test_pair(make_node, running: S, requested: S) -> None:
    node = make_node(stage=_start_stage(running, requested))
    started = asyncio.Event()
    table = _holding_table(started)
    table[requested] = replace(table[requested], phases=(Phase("quick", (sleeper("quick"),)),)) \
        if requested != running else table[requested]
    node.seq.sequences = table
    permitted = requested in TAKEOVER[running]

    async def go() -> None:
        old = node.seq.request(running, *_args(running), actor=ALICE)
        await started.wait()
        started.clear()
        before = node.log.next_seq()
        args = _args(requested)
        if not permitted:
            with pytest.raises(Locked) as info:
                node.seq.request(requested, *args, actor=BOB)
            assert info.value.details == {"running": running.value, "actor": str(ALICE), "requested": requested.value}
            assert node.log.next_seq() == before, "a refusal writes nothing"
            assert node.seq.running is old
            old.token.cancel("end of test")
            assert (await old.wait()).outcome == "cancelled"
            return
        new = node.seq.request(requested, *args, actor=BOB)
        assert node.seq.running is new
        if requested == running:  # it holds too: let it start, then end it
            await started.wait()
            new.token.cancel("end of test")
        old_result, new_result = await old.wait(), await new.wait()
        assert old_result.outcome == "cancelled"
        assert new_result.outcome == ("cancelled" if requested == running else "ok"), new_result
        evs = [e for e in node.log.read(before) if e.kind in (Kind.SEQUENCE_STARTED, Kind.SEQUENCE_STOPPED)]
        assert [(e.kind, e.payload["sequence"]) for e in evs][:2] == [
            (Kind.SEQUENCE_STOPPED, running.value), (Kind.SEQUENCE_STARTED, requested.value)]
        assert evs[0].payload["cancelled_by"] == f"taken over by {requested.value} ({BOB})"

    run(go())
    state = replay(node.log.read())
    assert state.stage == node.fsm.stage.value
    assert state.sequence is None


def _args(name: S) -> tuple[object, ...]:
    return (UpgradeRequest("v2.img"),) if name in (S.UPGRADE, S.STAGE_UPGRADE) else ()


REQUESTS = st.lists(
    st.tuples(st.sampled_from(list(S)), st.sampled_from([ALICE, BOB]), st.sampled_from([0, 0, 0.001, 0.003])),
    min_size=1, max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=REQUESTS, start=st.sampled_from([Stage.BOOTING, Stage.RUNNING, Stage.MAINTENANCE]))
def test_random_requests_obey_the_table(make_node, pki, steps: list[tuple[S, Actor, float]], start: Stage) -> None:
    node = make_node(stage=start)
    node.seq.sequences = _holding_table()
    accepted: list[Run] = []

    async def go() -> None:
        for name, actor, pause in steps:
            current = node.seq.running
            args = _args(name)
            try:
                r = node.seq.request(name, *args, actor=actor)
            except Locked as exc:
                assert current is not None and not may_take_over(current.name, name)
                assert exc.details["running"] == current.name.value
                continue
            except TransitionRejected:
                assert current is None or may_take_over(current.name, name)
                assert node.fsm.stage not in SEQUENCES[name].stages
                continue
            assert current is None or may_take_over(current.name, name)
            accepted.append(r)
            assert node.seq.running is r
            await asyncio.sleep(pause)
        if node.seq.running is not None:
            node.seq.running.token.cancel("end")
        results = [await r.wait() for r in accepted]
        assert all(res.outcome == "cancelled" for res in results)

    run(go())
    runs = [e for e in node.log.read() if e.kind == Kind.SEQUENCE_STARTED]
    assert [e.payload["sequence"] for e in runs] == [r.name.value for r in accepted]
    assert [str(e.actor) for e in runs] == [str(r.actor) for r in accepted]
    state = replay(node.log.read())
    assert state.stage == node.fsm.stage.value and state.sequence is None
    verify_items(node.log.read_raw(), pki.ca)
