"""Boot tracing from the event log, pure: ``list_boots(events)`` and ``trace_boot(events, ...)``.

A boot is the events that share a ``boot_id``. Offsets and durations come from the events' own ``mono_ns`` and
the ``duration_ns`` of stop events, so they are the node's monotonic clock, never wall time. A virtual machine's
boot starts at its kernel's time zero, with kernel, initramfs and agent-start spans before the sequences.
Renderers for a table, JSON, Chrome's Trace Event Format (Perfetto) and an SVG timeline are in ``_render``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from errors import NotFound
from events import Event, Kind

from ._render import format_ns, render_chrome, render_json, render_svg, render_table

__all__ = [
    "BootSummary",
    "BootTrace",
    "Failure",
    "Span",
    "format_ns",
    "list_boots",
    "render_chrome",
    "render_json",
    "render_svg",
    "render_table",
    "select_boot",
    "trace_boot",
]

BRING_UP = ("initialize", "boot", "install")


@dataclass(frozen=True)
class Failure:
    """Where a boot went wrong: the failed (or, after a crash, the last unfinished) sequence, phase and task."""

    sequence: str | None
    phase: str | None
    task: str | None
    error: str
    code: str | None
    seq: int


@dataclass(frozen=True)
class BootSummary:
    index: int
    boot_id: str
    slot: str | None
    version: str | None
    image_digest: str | None
    outcome: str  # running | booting | rebooted | shutdown | failed | crashed
    started_time_ns: int  # wall clock of its first event
    duration_ns: int
    first_seq: int
    last_seq: int
    sequences: tuple[str, ...]
    failure: Failure | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Span:
    kind: str  # sequence | phase | task
    sequence: str
    phase: str | None
    task: str | None
    start_ns: int  # offset from the boot's first event
    duration_ns: int
    outcome: str  # ok | failed | continued (a non-fatal failure) | cancelled | skipped | unfinished
    error: str | None
    actor: str
    seq: int  # of its start event
    lane: int = 0  # tasks: the order they started in within their phase
    run: int = 0  # which run of a sequence within the boot (0, 1, ...)

    @property
    def name(self) -> str:
        return self.task or self.phase or self.sequence

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass(frozen=True)
class BootTrace:
    boot: BootSummary
    spans: tuple[Span, ...]
    critical_path: tuple[Span, ...]  # the longest task of each phase, phase after phase
    total_ns: int

    @property
    def critical_ns(self) -> int:
        return sum(s.duration_ns for s in self.critical_path)


def _group(events: Iterable[Event]) -> list[list[Event]]:
    boots: dict[str, list[Event]] = {}
    for event in events:
        boots.setdefault(event.boot_id, []).append(event)
    return list(boots.values())


def _summary(index: int, events: list[Event], last: bool, spans: Sequence[Span] | None = None) -> BootSummary:
    started = next((e for e in events if e.kind == Kind.BOOT_STARTED), None)
    info = started.payload if started else {}
    if not info:
        measured = next((e for e in events if e.kind == Kind.IMAGE_MEASURED), None)
        info = {"slot": measured.payload.get("slot"), "version": measured.payload.get("version"),
                "image_digest": measured.payload.get("digest")} if measured else {}
    if not info:  # the agent never got as far as recording its start: the bootloader's choice says which slot
        selected = next((e for e in events if e.kind == Kind.BOOT_SELECTED), None)
        info = {"slot": selected.payload.get("slot")} if selected else {}
    failed = next((e for e in events if e.kind == Kind.SEQUENCE_FAILED), None)
    failure = None
    if failed is not None:
        p = failed.payload
        failure = Failure(p.get("sequence"), p.get("phase"), p.get("task"), str(p.get("error", "")), p.get("code"),
                          failed.seq)
    stages = [e.payload.get("dst") for e in events if e.kind == Kind.FSM_TRANSITION]
    end = {"rebooting": "rebooted", "shutting_down": "shutdown", "stopped": "shutdown"}.get(str(stages[-1])) \
        if stages else None
    committed = any(e.kind == Kind.BOOT_COMMITTED for e in events)
    if failure is not None and failure.sequence in BRING_UP:
        outcome = "failed"
    elif end is not None:
        outcome = end
    elif last:
        outcome = "running" if committed else "booting"
    else:
        outcome = "crashed" if committed else "failed"
        if failure is None:
            open_spans = [s for s in spans or () if s.outcome == "unfinished"]
            where = {s.kind: s.name for s in open_spans}
            why = ("the agent stopped before it recorded its start" if started is None else
                   "the agent stopped without a reboot")
            failure = Failure(where.get("sequence"), where.get("phase"), where.get("task"),
                              f"no event after seq {events[-1].seq}: {why}", None, events[-1].seq)
    sequences = tuple(str(e.payload.get("sequence")) for e in events if e.kind == Kind.SEQUENCE_STARTED)
    return BootSummary(
        index=index, boot_id=events[0].boot_id, slot=info.get("slot"), version=info.get("version"),
        image_digest=info.get("image_digest"), outcome=outcome, started_time_ns=events[0].time_ns,
        duration_ns=events[-1].mono_ns - (0 if _guest_timeline(events) else events[0].mono_ns),
        first_seq=events[0].seq, last_seq=events[-1].seq,
        sequences=sequences, failure=failure,
    )  # fmt: skip


def list_boots(events: Iterable[Event]) -> list[BootSummary]:
    boots = _group(events)
    return [_summary(i, b, i == len(boots) - 1, _spans(b)) for i, b in enumerate(boots)]


_STARTS = {Kind.SEQUENCE_STARTED: "sequence", Kind.PHASE_STARTED: "phase", Kind.TASK_STARTED: "task"}
_STOPS = {
    Kind.SEQUENCE_STOPPED: "sequence", Kind.SEQUENCE_FAILED: "sequence", Kind.PHASE_STOPPED: "phase",
    Kind.PHASE_FAILED: "phase", Kind.TASK_STOPPED: "task", Kind.TASK_FAILED: "task",
}  # fmt: skip


def _key(kind: str, p: dict[str, object]) -> tuple[str, ...]:
    parts = {"sequence": ("sequence",), "phase": ("sequence", "phase"), "task": ("sequence", "phase", "task")}[kind]
    return (kind, *(str(p.get(k)) for k in parts))


def _guest_timeline(events: list[Event]) -> dict[str, int] | None:
    """A virtual machine's own boot timeline (``boot.selected``'s ``guest_ns``: init started, agent executed,
    agent began, on the guest kernel's monotonic clock, whose zero is the kernel's start), when there is one."""
    for e in events:
        if e.kind == Kind.BOOT_SELECTED and isinstance(e.payload.get("guest_ns"), dict):
            t = e.payload["guest_ns"]
            if all(isinstance(t.get(k), int) for k in ("init", "exec", "agent")) and \
                    0 <= t["init"] <= t["exec"] <= t["agent"] <= events[0].mono_ns:
                return {k: int(t[k]) for k in ("init", "exec", "agent")}
    return None


def _kernel_spans(t: dict[str, int], first: Event) -> list[Span]:
    """The kernel, the initramfs and the agent's start before its first event, as top-level spans."""
    marks = [("kernel", 0, t["init"]), ("initramfs", t["init"], t["exec"]), ("agent start", t["exec"], first.mono_ns)]
    return [Span("sequence", name, None, None, start, end - start, "ok", None, "kernel", first.seq - 1)
            for name, start, end in marks]


def _spans(events: list[Event]) -> list[Span]:
    guest = _guest_timeline(events)
    base, end = (0 if guest else events[0].mono_ns), events[-1].mono_ns
    open_: dict[tuple[str, ...], tuple[Event, int, int]] = {}  # key -> (start event, lane, run)
    lanes: dict[tuple[str, ...], int] = {}
    runs: dict[str, int] = {}
    done: list[Span] = []

    def make(kind: str, start: Event, duration: int, outcome: str, error: str | None, lane: int, run: int) -> Span:
        p = start.payload
        return Span(kind, str(p.get("sequence")), p.get("phase") if kind != "sequence" else None,
                    p.get("task") if kind == "task" else None, start.mono_ns - base, max(0, duration), outcome, error,
                    str(start.actor), start.seq, lane, run)

    for e in events:
        p = e.payload
        if e.kind in _STARTS:
            kind = _STARTS[e.kind]
            name = str(p.get("sequence"))
            if kind == "sequence":
                runs[name] = runs.get(name, -1) + 1
            lane = 0
            if kind == "task":
                phase_key = _key("phase", p)
                lane = lanes.get(phase_key, 0)
                lanes[phase_key] = lane + 1
            open_[_key(kind, p)] = (e, lane, runs.get(name, 0))
        elif e.kind in _STOPS:
            kind = _STOPS[e.kind]
            started = open_.pop(_key(kind, p), None)
            if started is None:
                continue
            outcome = str(p.get("outcome", "ok"))
            if e.kind in (Kind.SEQUENCE_FAILED, Kind.PHASE_FAILED, Kind.TASK_FAILED):
                outcome = "failed" if p.get("fatal", True) else "continued"
            duration = int(p.get("duration_ns", e.mono_ns - started[0].mono_ns))
            done.append(make(kind, started[0], duration, outcome, p.get("error"), started[1], started[2]))
        elif e.kind == Kind.PHASE_SKIPPED:
            done.append(make("phase", e, 0, "skipped", f"when {p.get('when')} was false", 0,
                             runs.get(str(p.get("sequence")), 0)))
    for start, lane, run in open_.values():
        done.append(make(_STARTS[start.kind], start, end - start.mono_ns, "unfinished", None, lane, run))
    done.sort(key=lambda s: s.seq)
    return (_kernel_spans(guest, events[0]) if guest else []) + done


def _critical(spans: Sequence[Span]) -> tuple[Span, ...]:
    path = []
    for phase in (s for s in spans if s.kind == "phase" and s.outcome != "skipped"):
        tasks = [s for s in spans if s.kind == "task" and (s.sequence, s.phase, s.run) == (phase.sequence,
                 phase.phase, phase.run) and s.seq > phase.seq]
        if tasks:
            path.append(max(tasks, key=lambda s: (s.duration_ns, -s.seq)))
    return tuple(path)


def _pick(boots: list[list[Event]], index: int | None, boot_id: str | None) -> int:
    if not boots:
        raise NotFound("the log holds no events")
    if boot_id is not None:
        for i, b in enumerate(boots):
            if b[0].boot_id == boot_id:
                return i
        matches = [i for i, b in enumerate(boots) if b[0].boot_id.startswith(boot_id)]
        if len(matches) == 1:
            return matches[0]
        raise NotFound(f"no single boot with id {boot_id!r} in the log", boot_id=boot_id)
    i = len(boots) - 1 if index is None else index
    if not -len(boots) <= i < len(boots):
        raise NotFound(f"no boot {i}: the log holds {len(boots)} boots (0..{len(boots) - 1})", boot=i)
    return i % len(boots)


def select_boot(events: Iterable[Event], *, index: int | None = None, boot_id: str | None = None) -> list[Event]:
    """The events of one boot: by index (negative counts from the end; default the last) or by boot id (prefix)."""
    boots = _group(events)
    return boots[_pick(boots, index, boot_id)]


def trace_boot(events: Iterable[Event], *, index: int | None = None, boot_id: str | None = None) -> BootTrace:
    """One boot (default: the last), each phase and task with its offset and duration, and the critical path."""
    boots = _group(events)
    number = _pick(boots, index, boot_id)
    chosen = boots[number]
    spans = _spans(chosen)
    summary = _summary(number, chosen, number == len(boots) - 1, spans)
    return BootTrace(summary, tuple(spans), _critical(spans), summary.duration_ns)
