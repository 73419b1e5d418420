"""What ``--wait`` makes of a node's events: progress lines and the outcome of one lifecycle request.

Pure: ``Waiter.feed(event)`` returns the lines to show and sets ``outcome`` once the request is done;
``disconnected()`` is told when the stream is lost. The outcome of each sequence:

- ``upgrade``, ``rollback``, ``reboot``: the node's next boot finishing (``boot`` sequence stopped ok, or
  ``boot.committed``) in a new boot; a ``boot.fallback`` fails it, and an upgrade must boot the slot it wrote.
  A failed boot in between is shown (the bootloader retries or falls back) but is not the end.
- ``stage-upgrade``: its own sequence stopping ok.
- ``shutdown``, ``reset``: the node going away after its ``poweroff`` or ``wipe`` phase started (a reset wipes
  the log it would report to).
- any: ``sequence.failed`` (naming the phase and task) or a cancelled sequence fails it.
"""

from __future__ import annotations

from dataclasses import dataclass

from errors import InvalidEvent
from events import Event, Kind, read_payload
from events.payloads import (
    BootCommitted,
    BootFallback,
    BootStarted,
    Checkpointed,
    ImageInstalled,
    Payload,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
    SequenceFailed,
    SequenceStarted,
    SequenceStopped,
    Step,
    TaskFailed,
    TaskStarted,
)

__all__ = ["Outcome", "Waiter"]

_NEXT_BOOT = frozenset({"upgrade", "rollback", "reboot", "install"})
_GOES_AWAY = {"shutdown": "poweroff", "reset": "wipe"}  # the phase after which losing the node is success


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    failed_task: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "message": self.message, "failed_task": self.failed_task}


def _read(event: Event) -> Payload | None:
    """The event's typed payload; None for a kind without one, or a payload this gravenctl cannot read (a newer
    node's): such an event is shown, not followed."""
    try:
        return read_payload(event)
    except InvalidEvent:
        return None


def _err(p: SequenceFailed | PhaseFailed | TaskFailed) -> str:
    error = p.error or "no reason given"
    return f"{p.code}: {error}" if p.code and not error.startswith(p.code) else error


class Waiter:
    """Follows one request (``sequence`` recorded at ``request_seq``) through the node's events."""

    def __init__(self, sequence: str, request_seq: int) -> None:
        self.sequence = sequence
        self.request_seq = request_seq
        self.outcome: Outcome | None = None
        self.last = "waiting for the sequence to start"
        self._origin_boot: str | None = None
        self._started = False
        self._phase: str | None = None
        self._phase_i = 0
        self._phase_n: int | None = None
        self._installed_slot: str | None = None
        self._boot_slot: str | None = None
        self._boot_version: str | None = None
        self._ended_ok = False
        self._going_away = False

    # -- input -----------------------------------------------------------------------------------------
    def feed(self, event: Event) -> list[str]:
        if self.outcome is not None or event.seq < self.request_seq:
            return []
        if self._origin_boot is None:
            self._origin_boot = event.boot_id
        p = _read(event)
        new_boot = event.boot_id != self._origin_boot
        lines: list[str] = []
        if not new_boot and isinstance(p, Step) and p.sequence == self.sequence and self._is_our_request(p):
            lines += self._ours(p, event)
        elif isinstance(p, ImageInstalled):
            self._installed_slot = p.slot or None
            lines.append(f"image {p.version or '?'} written to slot {p.slot or '?'}")
        elif isinstance(p, Checkpointed) and p.sealed and not new_boot:
            lines.append(f"log sealed ({p.reason or '?'}) at seq {event.seq}")
        elif isinstance(p, BootFallback):
            self._finish(False, f"the bootloader fell back from slot {p.from_slot or '?'} to "
                                f"{p.to_slot or '?'}: {p.reason or 'no reason given'}")
        elif new_boot:
            lines += self._next_boot(p, event)
        if lines:
            self.last = lines[-1]
        if self.outcome is not None:
            lines.append(("done: " if self.outcome.ok else "FAILED: ") + self.outcome.message)
        return lines

    def disconnected(self) -> Outcome | None:
        """The stream was lost: the end for a shutdown or reset past its last phase, else nothing."""
        what = "powered off" if self.sequence == "shutdown" else "reset"
        if self.outcome is None and self._going_away:
            self._finish(True, f"the node {what} ({self.last})")
        elif self.outcome is None and self.sequence in ("shutdown", "reset"):
            # Both stop the API early (it is a service like any other), so their last phases are never seen here.
            self._finish(True, f"the node went offline for the {self.sequence} it recorded at seq {self.request_seq} "
                               f"(last seen: {self.last}; the API stops before the final phases)")
        return self.outcome

    def timed_out(self, seconds: float) -> Outcome:
        if self.outcome is None:
            self._finish(False, f"no outcome within {_duration(seconds)}; last seen: {self.last}")
        assert self.outcome is not None
        return self.outcome

    # -- the request's own sequence ----------------------------------------------------------------------
    def _is_our_request(self, p: Step) -> bool:
        request = p.request if isinstance(p, SequenceStarted) else None
        return not isinstance(request, int) or isinstance(request, bool) or request == self.request_seq

    def _where(self) -> str:
        n = f"/{self._phase_n}" if self._phase_n else ""
        return f"phase {self._phase_i}{n} {self._phase}" if self._phase else "starting"

    def _ours(self, p: Step, event: Event) -> list[str]:
        if isinstance(p, SequenceStarted) and not self._started:
            self._started = True
            self._phase_n = len(p.phases) or None
            return [f"{self.sequence} started by {event.actor} (seq {event.seq})"]
        if isinstance(p, PhaseStarted | PhaseSkipped):
            self._phase_i += 1
            self._phase = p.phase or "?"
            if p.count > 0:
                self._phase_n = p.count
            if isinstance(p, PhaseSkipped):
                return [f"{self._where()}: skipped"]
            if self._phase == _GOES_AWAY.get(self.sequence):
                self._going_away = True
            return [self._where()]
        if isinstance(p, TaskStarted):
            return [f"{self._where()}: task {p.task or '?'}"]
        if isinstance(p, TaskFailed):
            fatal = "" if p.fatal else " (not fatal)"
            return [f"{self._where()}: task {p.task or '?'} failed{fatal}: {_err(p)}"]
        if isinstance(p, SequenceFailed):
            phase, task = p.phase or self._phase, p.task
            where = f" in phase {phase}" + (f", task {task}" if task else "") if phase else ""
            self._finish(False, f"{self.sequence} failed{where}: {_err(p)}",
                         f"{phase}/{task}" if task else (phase or None))
            return []
        if isinstance(p, SequenceStopped):
            if p.outcome != "ok":
                by = p.cancelled_by
                self._finish(False, f"{self.sequence} was {p.outcome}" + (f" by {by}" if by else ""))
                return []
            self._ended_ok = True
            if self.sequence not in _NEXT_BOOT and self.sequence not in _GOES_AWAY:
                self._finish(True, f"{self.sequence} finished")
                return []
            if self.sequence in _GOES_AWAY:
                self._going_away = True
            return [f"{self.sequence} finished; " + ("waiting for the node to boot again"
                                                     if self.sequence in _NEXT_BOOT else "the node goes away")]
        return []

    # -- after the reboot --------------------------------------------------------------------------------
    def _next_boot(self, p: Payload | None, event: Event) -> list[str]:
        if self.sequence not in _NEXT_BOOT:
            return []
        if isinstance(p, BootStarted):
            self._boot_slot = p.slot or None
            self._boot_version = p.version or None
            return [f"node booting: slot {self._boot_slot or '-'}, version {self._boot_version or '?'}, "
                    f"boot {event.boot_id}"]
        if isinstance(p, PhaseStarted) and p.sequence == "boot":
            return [f"boot: phase {p.phase or '?'}"]
        if isinstance(p, SequenceFailed) and p.sequence == "boot":
            return [f"boot failed in phase {p.phase or '?'}, task {p.task or '?'}: {_err(p)} "
                    "(the bootloader retries or falls back)"]
        booted = (isinstance(p, SequenceStopped) and p.sequence == "boot" and p.outcome == "ok") \
            or event.kind == Kind.BOOT_COMMITTED
        if booted:
            slot = self._boot_slot or (p.slot if isinstance(p, BootCommitted) and p.slot else None)
            if self.sequence == "upgrade" and self._installed_slot and slot and slot != self._installed_slot:
                self._finish(False, f"the node booted slot {slot}, not the upgraded slot {self._installed_slot}")
            else:
                version = f", version {self._boot_version}" if self._boot_version else ""
                self._finish(True, f"the node is up again on slot {slot or '-'}{version}")
        return []

    def _finish(self, ok: bool, message: str, failed_task: str | None = None) -> None:
        if self.outcome is None:
            self.outcome = Outcome(ok, message, failed_task)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
