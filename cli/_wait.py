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

from events import Event, Kind

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


def _err(payload: dict[str, object]) -> str:
    code = payload.get("code")
    error = payload.get("error") or "no reason given"
    return f"{code}: {error}" if code and not str(error).startswith(str(code)) else str(error)


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
        p = event.payload
        new_boot = event.boot_id != self._origin_boot
        ours = not new_boot and p.get("sequence") == self.sequence and self._is_our_request(p)
        lines: list[str] = []
        kind = event.kind
        if ours:
            lines += self._ours(kind, p, event)
        elif kind == Kind.IMAGE_INSTALLED:
            self._installed_slot = str(p.get("slot") or "") or None
            lines.append(f"image {p.get('version', '?')} written to slot {p.get('slot', '?')}")
        elif kind == Kind.CHECKPOINT and p.get("sealed") and not new_boot:
            lines.append(f"log sealed ({p.get('reason', '?')}) at seq {event.seq}")
        elif kind == Kind.BOOT_FALLBACK:
            self._finish(False, f"the bootloader fell back from slot {p.get('from_slot', '?')} to "
                                f"{p.get('to_slot', '?')}: {p.get('reason', 'no reason given')}")
        elif new_boot:
            lines += self._next_boot(kind, p, event)
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
    def _is_our_request(self, payload: dict[str, object]) -> bool:
        request = payload.get("request")
        return not isinstance(request, int) or isinstance(request, bool) or request == self.request_seq

    def _where(self) -> str:
        n = f"/{self._phase_n}" if self._phase_n else ""
        return f"phase {self._phase_i}{n} {self._phase}" if self._phase else "starting"

    def _ours(self, kind: str, p: dict[str, object], event: Event) -> list[str]:
        if kind == Kind.SEQUENCE_STARTED and not self._started:
            self._started = True
            phases = p.get("phases")
            self._phase_n = len(phases) if isinstance(phases, list | tuple) else None
            return [f"{self.sequence} started by {event.actor} (seq {event.seq})"]
        if kind in (Kind.PHASE_STARTED, Kind.PHASE_SKIPPED):
            self._phase_i += 1
            self._phase = str(p.get("phase", "?"))
            count = p.get("count")
            if isinstance(count, int) and count > 0:
                self._phase_n = count
            if kind == Kind.PHASE_SKIPPED:
                return [f"{self._where()}: skipped"]
            if self._phase == _GOES_AWAY.get(self.sequence):
                self._going_away = True
            return [self._where()]
        if kind == Kind.TASK_STARTED:
            return [f"{self._where()}: task {p.get('task', '?')}"]
        if kind == Kind.TASK_FAILED:
            fatal = "" if p.get("fatal", True) else " (not fatal)"
            return [f"{self._where()}: task {p.get('task', '?')} failed{fatal}: {_err(p)}"]
        if kind == Kind.SEQUENCE_FAILED:
            phase, task = p.get("phase") or self._phase, p.get("task")
            where = f" in phase {phase}" + (f", task {task}" if task else "") if phase else ""
            self._finish(False, f"{self.sequence} failed{where}: {_err(p)}",
                         f"{phase}/{task}" if task else (str(phase) if phase else None))
            return []
        if kind == Kind.SEQUENCE_STOPPED:
            if p.get("outcome", "ok") != "ok":
                by = p.get("cancelled_by")
                self._finish(False, f"{self.sequence} was {p.get('outcome')}" + (f" by {by}" if by else ""))
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
    def _next_boot(self, kind: str, p: dict[str, object], event: Event) -> list[str]:
        if self.sequence not in _NEXT_BOOT:
            return []
        if kind == Kind.BOOT_STARTED:
            self._boot_slot = str(p.get("slot") or "") or None
            self._boot_version = str(p.get("version") or "") or None
            return [f"node booting: slot {self._boot_slot or '-'}, version {self._boot_version or '?'}, "
                    f"boot {event.boot_id}"]
        if kind == Kind.PHASE_STARTED and p.get("sequence") == "boot":
            return [f"boot: phase {p.get('phase', '?')}"]
        if kind == Kind.SEQUENCE_FAILED and p.get("sequence") == "boot":
            return [f"boot failed in phase {p.get('phase', '?')}, task {p.get('task', '?')}: {_err(p)} "
                    "(the bootloader retries or falls back)"]
        booted = (kind == Kind.SEQUENCE_STOPPED and p.get("sequence") == "boot" and p.get("outcome", "ok") == "ok") \
            or kind == Kind.BOOT_COMMITTED
        if booted:
            slot = self._boot_slot or (str(p.get("slot")) if p.get("slot") else None)
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
