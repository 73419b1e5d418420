"""``specs/sequences.md``, generated from the tables (``python -m sequencer > specs/sequences.md``)."""

from __future__ import annotations

from collections.abc import Mapping

from fsm import Stage

from ._model import Sequence, SequenceName
from ._takeover import TAKEOVER
from .sequences import SEQUENCES

__all__ = ["spec_markdown"]


def _phase_line(seq: Sequence) -> list[str]:
    out = []
    for i, p in enumerate(seq.phases, 1):
        tasks = ", ".join(f"`{t.name}` ({t.timeout:g} s{', continue on error' if t.on_error == 'continue' else ''})"
                          for t in p.tasks)
        notes = []
        if p.when is not None:
            notes.append(f"when `{p.when.name}`")
        if p.fires is not None:
            notes.append(f"fires `{p.fires.value}`")
        out.append(f"{i}. **{p.name}**: {tasks}" + (f" — {'; '.join(notes)}" if notes else ""))
    return out


def spec_markdown(sequences: Mapping[SequenceName, Sequence] = SEQUENCES,
                  takeover: Mapping[SequenceName, frozenset[SequenceName]] = TAKEOVER) -> str:
    out = [
        "# Sequences",
        "",
        "<!-- Generated from sequencer/sequences.py and sequencer/_takeover.py by "
        "`python -m sequencer > specs/sequences.md`; tests/sequencer keeps it current. -->",
        "",
        "Phases run in order; the tasks of a phase run concurrently. Each sequence, phase and task appends START",
        "and STOP (or failed) events (`sequence.*`, `phase.*`, `task.*`) with the actor that asked; stop events",
        "carry `duration_ns`. A phase whose condition is false appends `phase.skipped`. A task has a timeout",
        "(exceeding it is `TaskTimeout`) and an error policy: fatal (the phase's other tasks are cancelled and",
        "the sequence fails) or continue (`task.failed` with `fatal: false`, the phase goes on). Task events",
        "do not wait for fsync; a sequence reports its result only once all its events are durable.",
        "A sequence that asks for a reboot or power-off ends with a sealed checkpoint, and the power action",
        "happens only after that is durable.",
        "",
        "## One at a time",
        "",
        "A request while another sequence runs is refused at once with `Locked` (naming the running sequence",
        "and its actor) unless the table lets it take over: then the running one is cancelled (it ends with",
        "outcome `cancelled`; cancelling is checked between phases and inside long tasks) and the new one runs.",
        "",
        "| running | may be taken over by |",
        "|---|---|",
    ]
    for name in SequenceName:
        takers = ", ".join(t.value for t in SequenceName if t in takeover.get(name, frozenset())) or "-"
        out.append(f"| {name.value} | {takers} |")
    for seq in sequences.values():
        stages = ", ".join(s.value for s in Stage if s in seq.stages)
        out += ["", f"## {seq.name.value}", "", seq.summary[:1].upper() + seq.summary[1:] + ".", ""]
        facts = [f"asked in: {stages}"]
        if seq.request is not None:
            facts.append(f"request: `{seq.request.__name__}`")
        for label, trig in (("fires at start", seq.enter), ("on success", seq.done), ("on failure", seq.failed)):
            if trig is not None:
                facts.append(f"{label}: `{trig.value}`")
        out += ["; ".join(facts) + ".", "", *_phase_line(seq)]
    return "\n".join(out) + "\n"
