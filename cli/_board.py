"""What ``gravenctl dashboard`` shows of one node, folded from its Events stream (no polling): stage, readiness,
slot and version, the running sequence with its phase progress, the last fallback, recent events, log size, and
whether the node answers. Pure: the command feeds it events and connection changes and renders it."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from api import StatusInfo
from errors import InvalidEvent
from events import Event, read_payload
from events.payloads import BootFallback, BootStarted, FsmTransition, PhaseStarted, SequenceStarted

__all__ = ["NodeBoard"]

RECENT = 6


@dataclass
class NodeBoard:
    endpoint: str
    link: str = "connecting"  # connecting | online | offline | unreachable
    error: str = ""
    stage: str = "?"
    ready: bool = False
    slot: str = "-"
    version: str = "-"
    boot_id: str = ""
    next_seq: int = 0
    sequence: str | None = None
    phase: str | None = None
    phase_index: int = 0
    phase_count: int = 0
    last_fallback: str | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))

    def status(self, st: StatusInfo) -> None:
        """A MachineStatus answer: taken once per (re)connection, the stream does the rest."""
        self.link, self.error = "online", ""
        self.stage, self.ready = str(st.get("stage") or "?"), bool(st.get("ready"))
        self.slot, self.version = st.get("slot") or "-", st.get("version") or "-"
        self.boot_id, self.next_seq = st.get("boot_id") or "", int(st.get("log_next_seq") or 0)
        seq = st.get("sequence")
        if seq is None:
            self.sequence = self.phase = None
        elif seq.get("name") != self.sequence:
            self.sequence, self.phase, self.phase_index, self.phase_count = seq.get("name"), None, 0, 0
        fb = st.get("last_fallback")
        if fb:
            self.last_fallback = f"{fb.get('from_slot')} -> {fb.get('to_slot')}: {fb.get('reason')}"

    def lost(self, why: str, *, unreachable: bool = False) -> None:
        self.link, self.error, self.ready = ("unreachable" if unreachable else "offline"), why, False

    def event(self, e: Event) -> None:
        p = e.payload
        self.next_seq = max(self.next_seq, e.seq + 1)
        when = dt.datetime.fromtimestamp(e.time_ns / 1e9, dt.UTC).strftime("%H:%M:%S")
        self.recent.append(f"{when} {e.seq:>6} {e.kind}{_brief(e.kind, p)}")
        try:
            typed = read_payload(e)
        except InvalidEvent:  # a payload this gravenctl cannot read (a newer node's): listed, not folded
            return
        if isinstance(typed, FsmTransition):
            self.stage = typed.dst
            if self.stage != "running":
                self.ready = False
        elif isinstance(typed, BootStarted):
            self.boot_id, self.slot = typed.boot_id, typed.slot or "-"
            self.version, self.ready = typed.version or self.version, False
        elif e.kind == "boot.committed" and e.boot_id == self.boot_id:
            self.ready = True
        elif isinstance(typed, BootFallback):
            self.last_fallback = f"{typed.from_slot} -> {typed.to_slot}: {typed.reason}"
        elif isinstance(typed, SequenceStarted):
            self.sequence, self.phase, self.phase_index = typed.sequence, None, 0
            self.phase_count = len(typed.phases)
        elif isinstance(typed, PhaseStarted):
            self.phase, self.phase_index, self.phase_count = typed.phase, typed.index + 1, typed.count
        elif e.kind in ("sequence.stopped", "sequence.failed"):
            self.sequence = self.phase = None

    def progress(self) -> str:
        if self.sequence is None:
            return "-"
        if not self.phase:
            return self.sequence
        return f"{self.sequence} {self.phase_index}/{self.phase_count} {self.phase}"

    def row(self) -> dict[str, str]:
        return {"node": self.endpoint, "link": self.link, "stage": self.stage if self.link == "online" else "-",
                "ready": "yes" if self.ready and self.link == "online" else "no", "slot": self.slot,
                "version": self.version, "sequence": self.progress(), "last fallback": self.last_fallback or "-",
                "log": f"{self.next_seq} events"}


def _brief(kind: str, p: Mapping[str, object]) -> str:
    keys = {"fsm.transition": ("src", "dst"), "phase.started": ("phase",), "sequence.started": ("sequence",),
            "sequence.failed": ("sequence", "error"), "boot.fallback": ("reason",), "config.applied": ("mode",),
            "api.request": ("method",), "api.denied": ("method", "subject"), "task.failed": ("task", "error")}
    shown = [str(p[k]) for k in keys.get(kind, ()) if p.get(k) is not None]
    return (" " + " ".join(shown))[:80] if shown else ""
