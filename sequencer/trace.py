"""Boot tracing from the event log, pure: ``list_boots(events)`` and ``trace_boot(events, ...)``.

A boot is the events that share a ``boot_id``. Offsets and durations come from the events' own ``mono_ns`` and
the ``duration_ns`` of stop events, so they are the node's monotonic clock, never wall time. A virtual machine's
boot starts at its kernel's time zero, with kernel, initramfs and agent-start spans before the sequences.
Renderers for a table, JSON, Chrome's Trace Event Format (Perfetto) and an SVG timeline are in ``_render``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import msgspec

from errors import NotFound
from events import Event, Kind, decode_event, payload_of, read_payload
from events.payloads import (
    BootSelected,
    BootStarted,
    FsmTransition,
    ImageMeasured,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
    SequenceFailed,
    SequenceStarted,
    SequenceStopped,
    Step,
    TaskFailed,
    TaskStarted,
    TaskStopped,
)

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
    "trace_stored",
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


def _group_for_pick(events: Iterable[Event], index: int | None, boot_id: str | None) -> list[list[Event]]:
    """``_group``, but only the boots ``_pick(index, boot_id)`` may choose keep all their events; the others keep
    their first (all ``_pick`` reads of them), so tracing one boot of a long log does not hold the whole log."""
    boots: dict[str, list[Event]] = {}
    order: list[str] = []
    window = 0 if boot_id is not None or (index is not None and index >= 0) else 1 if index is None else -index
    cut: set[str] = set()
    for event in events:
        b = event.boot_id
        group = boots.get(b)
        if group is None:
            boots[b] = [event]
            order.append(b)
            n = len(order) - 1
            if window and n >= window:  # a boot falls out of the last ``window``: it cannot be the one
                cut.add(order[n - window])
                del boots[order[n - window]][1:]
            elif not window and not (b.startswith(boot_id) if boot_id is not None else n == index):
                cut.add(b)
        elif b not in cut:
            group.append(event)
    return list(boots.values())


def _summary(index: int, events: list[Event], last: bool, spans: Sequence[Span] | None = None) -> BootSummary:
    started = next((e for e in events if e.kind == Kind.BOOT_STARTED), None)
    slot, version, digest = _which_image(events, started)
    failed = next((e for e in events if e.kind == Kind.SEQUENCE_FAILED), None)
    failure = None
    if failed is not None:
        p = payload_of(failed, SequenceFailed)
        failure = Failure(p.sequence, p.phase, p.task, p.error or "", p.code, failed.seq)
    stages = [payload_of(e, FsmTransition).dst for e in events if e.kind == Kind.FSM_TRANSITION]
    end = {"rebooting": "rebooted", "shutting_down": "shutdown", "stopped": "shutdown"}.get(stages[-1]) \
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
    sequences = tuple(payload_of(e, SequenceStarted).sequence for e in events if e.kind == Kind.SEQUENCE_STARTED)
    return BootSummary(
        index=index, boot_id=events[0].boot_id, slot=slot, version=version, image_digest=digest, outcome=outcome,
        started_time_ns=events[0].time_ns,
        duration_ns=events[-1].mono_ns - (0 if _guest_timeline(events) else events[0].mono_ns),
        first_seq=events[0].seq, last_seq=events[-1].seq,
        sequences=sequences, failure=failure,
    )  # fmt: skip


def _which_image(events: list[Event], started: Event | None) -> tuple[str | None, str | None, str | None]:
    """(slot, version, image digest) of a boot: as the agent recorded its start, else as it measured the image,
    else (the agent never got as far) the slot the bootloader chose."""
    if started is not None:
        s = payload_of(started, BootStarted)
        return s.slot, s.version, s.image_digest
    measured = next((e for e in events if e.kind == Kind.IMAGE_MEASURED), None)
    if measured is not None:
        m = payload_of(measured, ImageMeasured)
        return m.slot, m.version, m.digest
    selected = next((e for e in events if e.kind == Kind.BOOT_SELECTED), None)
    return (payload_of(selected, BootSelected).slot if selected else None), None, None


def list_boots(events: Iterable[Event]) -> list[BootSummary]:
    boots = _group(events)
    return [_summary(i, b, i == len(boots) - 1, _spans(b)) for i, b in enumerate(boots)]


_STARTS = {Kind.SEQUENCE_STARTED: "sequence", Kind.PHASE_STARTED: "phase", Kind.TASK_STARTED: "task"}
_STOPS = {
    Kind.SEQUENCE_STOPPED: "sequence", Kind.SEQUENCE_FAILED: "sequence", Kind.PHASE_STOPPED: "phase",
    Kind.PHASE_FAILED: "phase", Kind.TASK_STOPPED: "task", Kind.TASK_FAILED: "task",
}  # fmt: skip


def _names(p: Step) -> tuple[str, str | None, str | None]:
    """(sequence, phase, task) a step's payload names (None where its kind has no such field)."""
    phase = None if isinstance(p, SequenceStarted | SequenceStopped) else p.phase
    task = p.task if isinstance(p, TaskStarted | TaskStopped | TaskFailed | SequenceFailed | PhaseFailed) else None
    return str(p.sequence), phase, task


def _key(kind: str, p: Step) -> tuple[str, ...]:
    sequence, phase, task = _names(p)
    return (kind, sequence, *(() if kind == "sequence" else (str(phase),)), *((str(task),) if kind == "task" else ()))


def _step(e: Event) -> Step | None:
    p = read_payload(e)
    return p if isinstance(p, Step) else None


def _guest_timeline(events: list[Event]) -> dict[str, int] | None:
    """A virtual machine's own boot timeline (``boot.selected``'s ``guest_ns``: init started, agent executed,
    agent began, on the guest kernel's monotonic clock, whose zero is the kernel's start), when there is one."""
    for e in events:
        t = payload_of(e, BootSelected).guest_ns if e.kind == Kind.BOOT_SELECTED else None
        if isinstance(t, dict):
            marks = [t.get(k) for k in ("init", "exec", "agent")]
            if all(isinstance(m, int) for m in marks):
                init, exec_, agent = (int(m) for m in marks if isinstance(m, int))
                if 0 <= init <= exec_ <= agent <= events[0].mono_ns:
                    return {"init": init, "exec": exec_, "agent": agent}
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

    def make(kind: str, start: Event, p: Step, duration: int, outcome: str, error: str | None, lane: int,
             run: int) -> Span:
        sequence, phase, task = _names(p)
        return Span(kind, sequence, phase if kind != "sequence" else None, task if kind == "task" else None,
                    start.mono_ns - base, max(0, duration), outcome, error, str(start.actor), start.seq, lane, run)

    open_steps: dict[int, Step] = {}  # seq of a start event -> its payload
    for e in events:
        if e.kind not in _STARTS and e.kind not in _STOPS and e.kind != Kind.PHASE_SKIPPED:
            continue
        p = _step(e)
        if p is None:
            continue
        if e.kind in _STARTS:
            kind = _STARTS[e.kind]
            name = _names(p)[0]
            open_steps[e.seq] = p
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
            if started is None or isinstance(p, PhaseSkipped | SequenceStarted | PhaseStarted | TaskStarted):
                continue
            if isinstance(p, SequenceFailed | PhaseFailed | TaskFailed):
                outcome = "failed" if not isinstance(p, TaskFailed) or p.fatal else "continued"
                error = p.error
            else:
                outcome, error = p.outcome, None
            # a stop event without its duration (none the sequencer writes): the time between the two events
            duration = p.duration_ns or e.mono_ns - started[0].mono_ns
            done.append(make(kind, started[0], open_steps[started[0].seq], duration, outcome, error, started[1],
                             started[2]))
        elif isinstance(p, PhaseSkipped):
            done.append(make("phase", e, p, 0, "skipped", f"when {p.when} was false", 0, runs.get(p.sequence, 0)))
    for start, lane, run in open_.values():
        done.append(make(_STARTS[start.kind], start, open_steps[start.seq], end - start.mono_ns, "unfinished", None,
                         lane, run))
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
    boots = _group_for_pick(events, index, boot_id)
    return boots[_pick(boots, index, boot_id)]


def trace_boot(events: Iterable[Event], *, index: int | None = None, boot_id: str | None = None) -> BootTrace:
    """One boot (default: the last), each phase and task with its offset and duration, and the critical path."""
    boots = _group_for_pick(events, index, boot_id)
    number = _pick(boots, index, boot_id)
    chosen = boots[number]
    spans = _spans(chosen)
    summary = _summary(number, chosen, number == len(boots) - 1, spans)
    return BootTrace(summary, tuple(spans), _critical(spans), summary.duration_ns)


class _BootOf(msgspec.Struct):
    """Only the boot id of a stored event: the rest is walked, not built."""

    boot_id: str


_boot_of = msgspec.msgpack.Decoder(_BootOf).decode
ReadRaw = Callable[[int, int | None], Iterator[tuple[int, bytes]]]


def trace_stored(read_raw: ReadRaw, *, index: int | None = None, boot_id: str | None = None) -> BootTrace:
    """``trace_boot`` over a log's stored events (``read_raw(start, end)``: (seq, bytes) in order), read twice:
    for the boot ids alone, then decoding the chosen boot's events only, so that tracing the last boot of a long
    log builds no Event for the others (the agent's BootTrace). An event whose boot id does not decode raises the
    InvalidEvent ``decode_event`` names; the other boots' payloads are not read."""
    firsts: dict[str, tuple[int, bytes]] = {}
    end = 0
    for seq, raw in read_raw(0, None):
        try:
            b = _boot_of(raw).boot_id
        except (msgspec.DecodeError, ValueError, RecursionError):
            decode_event(raw, seq=seq)  # raises what is wrong with it
            raise
        firsts.setdefault(b, (seq, raw))
        end = seq + 1
    groups = [[decode_event(raw, seq=seq)] for seq, raw in firsts.values()]
    number = _pick(groups, index, boot_id)
    wanted = groups[number][0].boot_id
    chosen = [decode_event(raw, seq=seq) for seq, raw in read_raw(0, end) if _boot_of(raw).boot_id == wanted]
    spans = _spans(chosen)
    summary = _summary(number, chosen, number == len(groups) - 1, spans)
    return BootTrace(summary, tuple(spans), _critical(spans), summary.duration_ns)
