"""The sequence tables are DESIGN.md's, the FSM can follow them, and specs/sequences.md is generated from them."""

from __future__ import annotations

from pathlib import Path

import sequencer
from fsm import TRANSITIONS, Stage, Trigger
from sequencer import SEQUENCES, TAKEOVER, OnError, SequenceName
from sequencer._spec import spec_markdown

SPEC = Path(__file__).resolve().parents[2] / "specs" / "sequences.md"

# DESIGN.md, "Sequences": the phases of every sequence, in order.
DESIGN = {
    "initialize": ["meta", "log", "identity", "config", "maintenance"],
    "boot": ["image", "network", "services", "ready", "commit"],
    "install": ["disk", "format", "image", "state", "bootloader", "reboot"],
    "upgrade": ["verify", "write", "bootloader", "stop", "reboot"],
    "stage-upgrade": ["verify", "write", "bootloader"],
    "rollback": ["bootloader", "stop", "reboot"],
    "reset": ["ship", "stop", "seal", "wipe", "reboot", "poweroff"],
    "reboot": ["stop", "seal", "reboot"],
    "shutdown": ["stop", "seal", "poweroff"],
}


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_exports_are_sorted_and_complete() -> None:
    assert sequencer.__all__ == sorted(sequencer.__all__, key=_isort_key)
    public = {n for n, v in vars(sequencer).items() if not n.startswith("_") and not isinstance(v, type(sequencer))}
    assert set(sequencer.__all__) == public | set(sequencer._LAZY)  # the lazy ones are in vars once loaded


def test_every_sequence_has_design_phases() -> None:
    assert {s.value for s in SEQUENCES} == set(DESIGN) == {s.value for s in SequenceName}
    for name, seq in SEQUENCES.items():
        assert [p.name for p in seq.phases] == DESIGN[name.value]


def test_specs_sequences_md_is_current() -> None:
    assert SPEC.read_text() == spec_markdown(), "run `python -m sequencer > specs/sequences.md`"


def _sources(trigger: Trigger) -> set[Stage]:
    return {s for row in TRANSITIONS if row.trigger is trigger for s in row.sources}


def _dest(trigger: Trigger, stage: Stage) -> Stage:
    return next(r.dest for r in TRANSITIONS if r.trigger is trigger and stage in r.sources)


def test_every_path_through_a_sequence_is_allowed_by_the_fsm() -> None:
    """From every stage a sequence may be asked in, each trigger it fires (enter, phase fires, done) is legal,
    whichever conditional phases are skipped."""
    for seq in SEQUENCES.values():
        assert seq.stages, seq.name
        for start in seq.stages:
            stage = start
            if seq.enter is not None:
                assert stage in _sources(seq.enter), (seq.name, stage, seq.enter)
                stage = _dest(seq.enter, stage)
            for phase in seq.phases:
                if phase.fires is not None and phase.when is None:
                    assert stage in _sources(phase.fires), (seq.name, phase.name, stage)
                    stage = _dest(phase.fires, stage)
                elif phase.fires is not None:
                    assert stage in _sources(phase.fires), (seq.name, phase.name, stage)
            if seq.done is not None:
                assert stage in _sources(seq.done), (seq.name, stage, seq.done)


def test_failure_triggers_leave_the_stage_the_sequence_entered() -> None:
    for seq in SEQUENCES.values():
        if seq.failed is not None:
            assert seq.enter is not None
            for start in seq.stages:
                assert _dest(seq.enter, start) in _sources(seq.failed)


def test_tasks_declare_positive_timeouts_and_unique_names() -> None:
    for seq in SEQUENCES.values():
        names = [t.name for p in seq.phases for t in p.tasks]
        for phase in seq.phases:
            assert phase.tasks, (seq.name, phase.name)
            for t in phase.tasks:
                assert t.timeout > 0 and t.on_error in OnError
        assert len(names) == len(set(names)), names


def test_takeover_table_is_as_specified() -> None:
    S = SequenceName
    assert set(TAKEOVER) == set(S)
    for running in S:
        assert S.SHUTDOWN in TAKEOVER[running], "shutdown always may"
    assert TAKEOVER[S.BOOT] == {S.REBOOT, S.RESET, S.UPGRADE, S.SHUTDOWN}
    assert TAKEOVER[S.RESET] == {S.REBOOT, S.SHUTDOWN}
    assert TAKEOVER[S.INSTALL] == TAKEOVER[S.UPGRADE] == {S.SHUTDOWN}
