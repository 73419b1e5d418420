from __future__ import annotations

from pathlib import Path

import pytest

import fsm
from errors import Code, StorageError, TransitionRejected
from events import NODE, Actor, Kind, replay
from fsm import TRANSITIONS, NodeFSM, Stage, Trigger

SPEC = Path(__file__).resolve().parents[2] / "specs" / "fsm.md"
OPERATOR = Actor("alice", ("os:operator",))


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_exports_are_sorted_and_public() -> None:
    assert fsm.__all__ == sorted(fsm.__all__, key=_isort_key)
    assert set(fsm.__all__) == {n for n in vars(fsm) if not n.startswith("_")} - {"annotations"}


def test_spec_is_generated_from_the_table() -> None:
    assert SPEC.read_text() == fsm.spec_markdown(), "run `python -m fsm > specs/fsm.md`"


def test_diagram_has_one_arrow_per_source_and_trigger() -> None:
    arrows = [line for line in fsm.mermaid().splitlines() if "-->" in line and "[*]" not in line]
    assert len(arrows) == sum(len(r.sources) for r in TRANSITIONS)
    assert "    upgrading --> running: abort" in arrows


def test_table_is_deterministic_per_stage() -> None:
    seen: dict[tuple[Trigger, Stage], Stage] = {}
    for row in TRANSITIONS:
        for src in row.sources:
            assert (row.trigger, src) not in seen, f"{row.trigger} from {src} is ambiguous"
            seen[(row.trigger, src)] = row.dest


def test_every_stage_is_reachable_and_only_stopped_is_final() -> None:
    reachable, frontier = {Stage.BOOTING}, [Stage.BOOTING]
    while frontier:
        stage = frontier.pop()
        for row in TRANSITIONS:
            if stage in row.sources and row.dest not in reachable:
                reachable.add(row.dest)
                frontier.append(row.dest)
    assert reachable == set(Stage)
    finals = {s for s in Stage if not any(s in r.sources for r in TRANSITIONS)}
    assert finals == {Stage.STOPPED}


@pytest.mark.parametrize("row_src", [(r, s) for r in TRANSITIONS for s in sorted(r.sources)],
                         ids=lambda rs: f"{rs[1]}-{rs[0].trigger}")
def test_each_row_moves_and_logs(make_log, row_src) -> None:
    row, src = row_src
    log = make_log()
    machine = NodeFSM(log, initial=src)
    moved = machine.fire(row.trigger, actor=OPERATOR)
    assert (moved.trigger, moved.src, moved.dst) == (row.trigger, src, row.dest)
    assert machine.stage is row.dest
    event = moved.durable.result(timeout=1)
    assert event.kind == Kind.FSM_TRANSITION
    assert event.payload == {"trigger": row.trigger.value, "src": src.value, "dst": row.dest.value}
    assert event.actor == OPERATOR


def test_refused_trigger_names_stage_and_trigger_and_changes_nothing(make_log) -> None:
    log = make_log()
    machine = NodeFSM(log)
    before = log.next_seq()
    with pytest.raises(TransitionRejected) as info:
        machine.fire(Trigger.STAGED)
    err = info.value
    assert err.code is Code.TRANSITION_REJECTED
    assert "booting" in str(err) and "staged" in str(err)
    assert err.details["stage"] == "booting" and err.details["trigger"] == "staged"
    assert "install" in err.details["allowed"]
    assert machine.stage is Stage.BOOTING
    assert log.next_seq() == before


def test_stopped_refuses_everything(make_log) -> None:
    machine = NodeFSM(make_log(), initial=Stage.STOPPED)
    assert machine.allowed() == frozenset()
    for trigger in Trigger:
        with pytest.raises(TransitionRejected):
            machine.fire(trigger)


def test_a_log_failure_leaves_the_stage_unchanged(make_log) -> None:
    log = make_log()

    class BrokenLog:
        def __getattr__(self, name: str) -> object:
            return getattr(log, name)

        def submit(self, *args: object, **kwargs: object) -> object:
            raise StorageError("disk gone")

    machine = NodeFSM(BrokenLog())  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        machine.fire(Trigger.BOOTED)
    assert machine.stage is Stage.BOOTING
    machine2 = NodeFSM(log)
    machine2.fire(Trigger.BOOTED)
    assert machine2.stage is Stage.RUNNING


def test_a_full_lifecycle_folds_to_the_live_stage(make_log) -> None:
    log = make_log()
    machine = NodeFSM(log)
    for trigger in (Trigger.MAINTENANCE, Trigger.INSTALL, Trigger.REBOOT):
        machine.fire(trigger, actor=NODE)
    assert replay(log.read()).stage == machine.stage.value == "rebooting"
    boot2 = NodeFSM(log)
    log.append(Kind.BOOT_STARTED, {"slot": "A", "version": "1"})
    for trigger in (Trigger.BOOTED, Trigger.UPGRADE, Trigger.ABORT, Trigger.SHUTDOWN, Trigger.POWER_OFF):
        boot2.fire(trigger)
    state = replay(log.read())
    assert state.stage == boot2.stage.value == "stopped"
    assert state.boots[-1].outcome == "shutdown"
