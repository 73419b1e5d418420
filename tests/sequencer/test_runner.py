"""The runner's contract, on small made-up sequences: order, concurrency, error policies, timeouts,
conditions, cancellation, durability, and refusals raised at once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import pytest
from seqkit import blocker, failer, run, sleeper

from errors import BadImage, Code, InvalidRequest, Locked, TransitionRejected
from events import Actor, Event, Kind, replay
from fsm import Stage, Trigger
from sequencer import SEQUENCES, OnError, Phase, SequenceName, Sequencer, UpgradeRequest, condition

S = SequenceName
ALICE = Actor("alice", ("os:admin",))


def custom(node: Any, name: S, *phases: Phase, **fields: Any) -> Sequencer:
    table = dict(SEQUENCES)
    table[name] = replace(SEQUENCES[name], phases=phases, **fields)
    node.seq.sequences = table
    return node.seq


def events_of(node: Any, start: int = 0) -> list[Event]:
    return [e for e in node.log.read(start) if e.kind != Kind.CHECKPOINT]


def test_events_in_order_with_actor_and_durations(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.STAGE_UPGRADE, Phase("one", (sleeper("a"),)), Phase("two", (sleeper("b", 0.01),)),
                 enter=None, done=None)
    start = node.log.next_seq()
    result = run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x"), actor=ALICE))
    assert result.ok and result.actor == ALICE and result.duration_ns > 10_000_000
    evs = events_of(node, start)
    assert [e.kind for e in evs] == [
        Kind.SEQUENCE_STARTED,
        Kind.PHASE_STARTED, Kind.TASK_STARTED, Kind.TASK_STOPPED, Kind.PHASE_STOPPED,
        Kind.PHASE_STARTED, Kind.TASK_STARTED, Kind.TASK_STOPPED, Kind.PHASE_STOPPED,
        Kind.SEQUENCE_STOPPED,
    ]  # fmt: skip
    assert all(e.actor == ALICE for e in evs)
    assert evs[0].payload == {"sequence": "stage-upgrade", "phases": ["one", "two"], "request": {"image": "x"}}
    assert evs[5].payload == {"sequence": "stage-upgrade", "phase": "two", "index": 1, "count": 2}
    b_stop = evs[7].payload
    assert b_stop["task"] == "b" and b_stop["outcome"] == "ok" and b_stop["duration_ns"] >= 10_000_000
    assert evs[7].mono_ns - evs[6].mono_ns >= 10_000_000
    assert evs[-1].payload["outcome"] == "ok"
    assert [e.mono_ns for e in evs] == sorted(e.mono_ns for e in evs)


def test_tasks_of_a_phase_run_concurrently(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    tasks = tuple(sleeper(f"t{i}", 0.1) for i in range(5))
    seq = custom(node, S.STAGE_UPGRADE, Phase("all", tasks), enter=None, done=None)
    t0 = time.monotonic()
    assert run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x"))).ok
    assert time.monotonic() - t0 < 0.3


def test_fatal_failure_cancels_siblings_and_fails_the_sequence_naming_where(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.UPGRADE,
                 Phase("verify", (failer("bad", BadImage("no signature")), blocker("slow"))),
                 Phase("never", (sleeper("x"),)))  # fmt: skip
    start = node.log.next_seq()
    result = run(seq.run(S.UPGRADE, UpgradeRequest("x")))
    assert result.outcome == "failed" and (result.phase, result.task) == ("verify", "bad")
    assert isinstance(result.error, BadImage)
    evs = events_of(node, start)
    by_kind = {e.kind: e.payload for e in evs}
    assert by_kind[Kind.TASK_FAILED] == {**by_kind[Kind.TASK_FAILED], "task": "bad", "fatal": True,
                                         "code": "BAD_IMAGE", "error": "no signature"}
    slow = [e.payload for e in evs if e.kind == Kind.TASK_STOPPED and e.payload["task"] == "slow"]
    assert slow and slow[0]["outcome"] == "cancelled"
    assert by_kind[Kind.PHASE_FAILED]["task"] == "bad"
    assert by_kind[Kind.SEQUENCE_FAILED] == {**by_kind[Kind.SEQUENCE_FAILED], "phase": "verify", "task": "bad",
                                             "outcome": "failed"}
    assert "never" not in {e.payload.get("phase") for e in evs}
    # upgrade's failure trigger takes the node back to running
    assert node.fsm.stage is Stage.RUNNING
    assert [e.payload["dst"] for e in evs if e.kind == Kind.FSM_TRANSITION] == ["upgrading", "running"]
    assert replay(node.log.read()).last_sequence["outcome"] == "failed"


def test_continue_policy_logs_and_goes_on(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.STAGE_UPGRADE,
                 Phase("p", (failer("meh", RuntimeError("boom"), on_error=OnError.CONTINUE), sleeper("ok"))),
                 Phase("q", (sleeper("after"),)), enter=None, done=None)  # fmt: skip
    start = node.log.next_seq()
    assert run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x"))).ok
    evs = events_of(node, start)
    failed = next(e.payload for e in evs if e.kind == Kind.TASK_FAILED)
    assert failed["fatal"] is False and failed["code"] == "INVARIANT" and "boom" in failed["error"]
    assert any(e.payload.get("task") == "after" for e in evs)


def test_timeout_is_a_task_timeout(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.STAGE_UPGRADE, Phase("p", (sleeper("slow", 5, timeout=0.05),)))
    result = run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x")))
    assert result.outcome == "failed" and result.error is not None
    assert result.error.code is Code.TASK_TIMEOUT and result.task == "slow"


def test_a_false_condition_skips_the_phase(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    never = condition(lambda ctx: False)
    seq = custom(node, S.STAGE_UPGRADE, Phase("skip", (failer("x", RuntimeError()),), when=never),
                 Phase("run", (sleeper("y"),)), enter=None, done=None)
    start = node.log.next_seq()
    assert run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x"))).ok
    skipped = next(e.payload for e in events_of(node, start) if e.kind == Kind.PHASE_SKIPPED)
    assert skipped == {"sequence": "stage-upgrade", "phase": "skip", "index": 0, "count": 2, "when": "<lambda>"}


def test_cancel_is_checked_between_phases(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)

    async def go() -> Any:
        seq = custom(node, S.STAGE_UPGRADE, Phase("a", (sleeper("a", 0.05),)), Phase("b", (sleeper("b"),)))
        r = seq.request(S.STAGE_UPGRADE, UpgradeRequest("x"))
        await asyncio.sleep(0.01)
        r.token.cancel("test")
        return await r.wait()

    start = node.log.next_seq()
    result = run(go())
    assert result.outcome == "cancelled"
    evs = events_of(node, start)
    assert "b" not in {e.payload.get("phase") for e in evs}
    assert evs[-1].kind == Kind.SEQUENCE_STOPPED and evs[-1].payload["outcome"] == "cancelled"
    assert evs[-1].payload["cancelled_by"] == "test"


def test_a_sequence_reports_done_only_once_its_events_are_durable(make_node, pki) -> None:
    """The log acknowledges submits at once but makes them durable only later (as group commit does)."""
    from events import MemoryEventLog

    class SlowLog(MemoryEventLog):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.pending: list[tuple[Future[Event], Event]] = []
            self.durable = threading.Event()

        def submit(self, kind: str, payload: Any, actor: Any = None) -> Future[Event]:
            event = super().submit(kind, payload, actor or Actor("node")).result()
            fut: Future[Event] = Future()
            self.pending.append((fut, event))
            return fut

        def release(self) -> None:
            self.durable.set()
            for fut, event in self.pending:
                if not fut.done():
                    fut.set_result(event)

    log = SlowLog(pki.signer, pki.cert_der)
    node = make_node(stage=Stage.RUNNING, log=log)
    seq = custom(node, S.STAGE_UPGRADE, Phase("a", (sleeper("a"),)), enter=None, done=None)

    async def go() -> Any:
        r = seq.request(S.STAGE_UPGRADE, UpgradeRequest("x"))
        await asyncio.sleep(0.05)
        assert not r.done(), "reported done before its events were durable"
        assert seq.running is r, "the lock is held until the events are durable"
        threading.Timer(0.01, log.release).start()
        result = await r.wait()
        assert log.durable.is_set()
        return result

    assert run(go()).ok


def test_refusals_are_raised_at_once_before_anything_runs(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.UPGRADE, Phase("hold", (blocker("hold"),)))

    async def go() -> None:
        running = seq.request(S.UPGRADE, UpgradeRequest("x"), actor=ALICE)
        await asyncio.sleep(0.01)
        before = node.log.next_seq()
        with pytest.raises(Locked) as info:
            seq.request(S.REBOOT, actor=Actor("bob"))
        assert info.value.details == {"running": "upgrade", "actor": "alice[os:admin]", "requested": "reboot"}
        assert "upgrade" in info.value.message and "alice" in info.value.message
        assert node.log.next_seq() == before
        running.token.cancel("test over")
        await running.wait()

    run(go())


def test_bad_requests_and_wrong_stages_are_refused_at_once(make_node) -> None:
    node = make_node(stage=Stage.MAINTENANCE)

    async def go() -> None:
        with pytest.raises(InvalidRequest):
            node.seq.request(S.UPGRADE)  # needs an image
        with pytest.raises(InvalidRequest):
            node.seq.request(S.BOOT, UpgradeRequest("x"))
        with pytest.raises(TransitionRejected) as info:
            node.seq.request(S.UPGRADE, UpgradeRequest("x"))
        assert info.value.details["stage"] == "maintenance"
        assert node.seq.running is None

    run(go())


def test_enter_trigger_rejected_at_start_fails_the_sequence(make_node) -> None:
    node = make_node(stage=Stage.RUNNING)
    seq = custom(node, S.STAGE_UPGRADE, Phase("a", (sleeper("a"),)), enter=Trigger.INSTALL, failed=None)
    result = run(seq.run(S.STAGE_UPGRADE, UpgradeRequest("x")))
    assert result.outcome == "failed" and isinstance(result.error, TransitionRejected)
    assert node.seq.running is None
