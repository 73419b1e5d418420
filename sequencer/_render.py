"""Boot trace renderers: an aligned table, JSON, Chrome Trace Event Format (Perfetto), a standalone SVG."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    from .trace import BootTrace, Span

__all__ = ["format_ns", "render_chrome", "render_json", "render_svg", "render_table"]


def format_ns(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1_000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / 1_000_000_000:.2f}s"


def _header(trace: BootTrace) -> list[str]:
    b = trace.boot
    lines = [
        f"boot {b.index}  id {b.boot_id}  slot {b.slot or '-'}  version {b.version or '-'}  outcome {b.outcome}",
        f"total {format_ns(trace.total_ns)}  critical path {format_ns(trace.critical_ns)} "
        f"({' > '.join(s.name for s in trace.critical_path) or '-'})",
    ]
    if b.failure is not None:
        f = b.failure
        where = " / ".join(x for x in (f.sequence, f.phase, f.task) if x)
        lines.append(f"FAILED at {where or 'seq ' + str(f.seq)}: {f.error}" + (f" [{f.code}]" if f.code else ""))
    return lines


def render_table(trace: BootTrace) -> str:
    critical = {s.seq for s in trace.critical_path}
    rows = [("OFFSET", "DURATION", "SPAN", "OUTCOME", "")]
    for s in trace.spans:
        indent = {"sequence": "", "phase": "  ", "task": "    "}[s.kind]
        note = "*" if s.seq in critical else ""
        if s.error and s.outcome not in ("ok", "skipped"):
            note = (note + " " + s.error).strip()
        rows.append((format_ns(s.start_ns), format_ns(s.duration_ns), indent + s.name, s.outcome, note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    body = ["  ".join([r[0].rjust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3].ljust(widths[3]),
                       r[4]]).rstrip() for r in rows]
    return "\n".join([*_header(trace), "", *body, "", "* critical path: the longest task of each phase"]) + "\n"


def render_json(trace: BootTrace) -> dict[str, object]:
    def span(s: Span) -> dict[str, object]:
        return {**asdict(s), "name": s.name}

    return {
        "boot": trace.boot.to_json(),
        "total_ns": trace.total_ns,
        "critical_ns": trace.critical_ns,
        "critical_path": [span(s) for s in trace.critical_path],
        "spans": [span(s) for s in trace.spans],
    }


def render_chrome(trace: BootTrace) -> dict[str, object]:
    """Trace Event Format: one process per sequence run, thread 0 for it and its phases, 1.. for task lanes."""
    pids: dict[tuple[str, int], int] = {}
    out: list[dict[str, object]] = []
    threads: set[tuple[int, int]] = set()
    critical = {s.seq for s in trace.critical_path}
    for s in trace.spans:
        key = (s.sequence, s.run)
        if key not in pids:
            pids[key] = len(pids) + 1
            label = s.sequence if s.run == 0 else f"{s.sequence} #{s.run + 1}"
            out.append({"ph": "M", "name": "process_name", "pid": pids[key], "tid": 0, "args": {"name": label}})
            out.append({"ph": "M", "name": "process_sort_index", "pid": pids[key], "tid": 0,
                        "args": {"sort_index": pids[key]}})
        pid = pids[key]
        tid = s.lane + 1 if s.kind == "task" else 0
        if (pid, tid) not in threads:
            threads.add((pid, tid))
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                        "args": {"name": f"tasks {tid}" if tid else "phases"}})
        args: dict[str, object] = {"outcome": s.outcome, "actor": s.actor, "seq": s.seq}
        if s.error:
            args["error"] = s.error
        if s.seq in critical:
            args["critical"] = True
        out.append({"name": s.name, "cat": s.kind, "ph": "X", "ts": s.start_ns / 1000, "dur": s.duration_ns / 1000,
                    "pid": pid, "tid": tid, "args": args})
    b = trace.boot
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"boot_id": b.boot_id, "slot": b.slot, "version": b.version, "outcome": b.outcome}}


_FILL = {"sequence": "#5b7fa6", "phase": "#8fb3d9", "task": "#b9d98f"}
_OUTCOME_FILL = {"failed": "#d9534f", "continued": "#f0ad4e", "cancelled": "#f0ad4e", "skipped": "#dddddd",
                 "unfinished": "#c9a0dc"}


def _step(total_ns: int) -> int:
    """A 1-2-5 grid step giving at most 12 ticks."""
    scale = 1_000
    while True:
        for base in (1, 2, 5):
            if total_ns / (base * scale) <= 12:
                return base * scale
        scale *= 10


def render_svg(trace: BootTrace, *, width: int = 1200) -> str:
    """A timeline like ``systemd-analyze plot``: one row per span, bars on a shared time axis, labelled."""
    row, top, left, label_room = 18, 64, 24, 260
    plot = width - left - label_room
    total = max(trace.total_ns, max((s.end_ns for s in trace.spans), default=0), 1)
    height = top + row * len(trace.spans) + 30
    critical = {s.seq for s in trace.critical_path}

    def x(ns: int) -> float:
        return left + plot * ns / total

    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for i, line in enumerate(_header(trace)):
        parts.append(f'<text x="{left}" y="{16 + i * 14}" font-size="12">{escape(line)}</text>')
    step = _step(total)
    for t in range(0, total + 1, step):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top - 6}" x2="{x(t):.1f}" y2="{height - 24}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{height - 10}" text-anchor="middle" fill="#666">'
                     f'{escape(format_ns(t))}</text>')
    for i, s in enumerate(trace.spans):
        y = top + i * row
        fill = _OUTCOME_FILL.get(s.outcome, _FILL[s.kind])
        stroke = ' stroke="#000000" stroke-width="1.5"' if s.seq in critical else ""
        w = max(plot * s.duration_ns / total, 1.0)
        title = f"{s.kind} {s.name}: {format_ns(s.duration_ns)} at {format_ns(s.start_ns)} ({s.outcome})"
        if s.error:
            title += f" {s.error}"
        parts.append(f'<g class={quoteattr(s.kind)}><title>{escape(title)}</title>'
                     f'<rect x="{x(s.start_ns):.1f}" y="{y}" width="{w:.1f}" height="{row - 4}" '
                     f'fill="{fill}"{stroke}/>')
        indent = {"sequence": "", "phase": "  ", "task": "    "}[s.kind]
        label = f"{indent}{s.name} ({format_ns(s.duration_ns)})"
        if s.outcome != "ok":
            label += f" {s.outcome}"
        parts.append(f'<text x="{x(s.start_ns) + w + 4:.1f}" y="{y + row - 7}" xml:space="preserve">'
                     f'{escape(label)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
