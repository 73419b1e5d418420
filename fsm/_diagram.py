"""``specs/fsm.md``, generated from the transition table (``python -m fsm > specs/fsm.md``)."""

from __future__ import annotations

from collections.abc import Iterable

from ._table import TRANSITIONS, Row, Stage

__all__ = ["mermaid", "spec_markdown"]


def mermaid(table: Iterable[Row] = TRANSITIONS, initial: Stage = Stage.BOOTING) -> str:
    """A mermaid ``stateDiagram-v2``: one arrow per (source, trigger), in table order."""
    lines = ["stateDiagram-v2", f"    [*] --> {initial.value}"]
    for row in table:
        for src in (s for s in Stage if s in row.sources):
            lines.append(f"    {src.value} --> {row.dest.value}: {row.trigger.value}")
    lines.append(f"    {Stage.STOPPED.value} --> [*]")
    return "\n".join(lines) + "\n"


def spec_markdown(table: Iterable[Row] = TRANSITIONS) -> str:
    rows = tuple(table)
    out = [
        "# Machine stages",
        "",
        "<!-- Generated from fsm/_table.py by `python -m fsm > specs/fsm.md`; tests/fsm keeps it current. -->",
        "",
        "The node is always in one stage. Only a trigger listed here moves it; any other trigger is refused with",
        "`TransitionRejected` (code `TRANSITION_REJECTED`) naming the stage and the trigger. Every transition is",
        "appended to the event log as `fsm.transition` {trigger, src, dst}, so the stage is also a fold over the log.",
        "A new boot (`boot.started`) starts again in `booting`.",
        "",
        "```mermaid",
        mermaid(rows).rstrip("\n"),
        "```",
        "",
        "| trigger | from | to |",
        "|---|---|---|",
    ]
    for row in rows:
        sources = ", ".join(s.value for s in Stage if s in row.sources)
        out.append(f"| `{row.trigger.value}` | {sources} | {row.dest.value} |")
    return "\n".join(out) + "\n"
