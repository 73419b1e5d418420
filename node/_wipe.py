"""Wiping EPHEMERAL, the partition that holds the log, once the log is closed.

The reset sequence wipes its labels in its ``wipe`` phase, but the log lives on EPHEMERAL and stays open to the
end of the sequence: the phase's own events, the sequence's end and the final sealed checkpoint still go into
it, and a block disk cannot unmount a filesystem whose files are open. So the agent's ``Disk`` adapter wipes the
other labels at once and, for EPHEMERAL, leaves a marker on EPHEMERAL itself (``wipe.pending``). Whoever next
holds the disk with the log closed carries it out: the supervisor when the agent has exited, else the next
agent before it opens the log. The marker lives on the partition it condemns, so the wipe removes it, and a
crash at any point leaves either the marker (the wipe is done later) or nothing.

When the reset was graceful and ``machine.audit.sinks`` names directories, the whole sealed log, its last
checkpoint included, is shipped there and verified against the machine CA *before* the wipe; if that fails
the log is kept and nothing is wiped. What was done goes to the next boot's log as bootloader events
(``disk.wiped``, ``audit.shipped``, or ``disk.wipe_failed``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from errors import GravenError, StorageError
from events import Kind
from storage import DiskBase, write_durably

__all__ = ["MARKER", "finish_pending_wipe", "request_wipe"]

MARKER = "wipe.pending"
LOG_DIR = "log"


def request_wipe(disk: DiskBase, labels: Sequence[str], *, reason: str, sinks: Sequence[str] = (),
                 ca_pem: bytes | None = None) -> None:
    """Leave the marker on EPHEMERAL (durably): wipe ``labels`` once the log is closed, shipping it first."""
    path = disk.path("EPHEMERAL") / MARKER
    data = {"labels": list(labels), "reason": reason, "sinks": list(sinks),
            "ca": ca_pem.decode("ascii") if ca_pem else None}
    write_durably(path, json.dumps(data, sort_keys=True).encode())


def _marker(disk: DiskBase) -> tuple[Path, dict[str, object]] | None:
    if not disk.is_partitioned():
        return None
    try:
        path = disk.path("EPHEMERAL") / MARKER
        text = path.read_text(encoding="utf-8")
    except (StorageError, FileNotFoundError):
        return None
    except OSError as exc:
        raise StorageError(f"EPHEMERAL/{MARKER}: cannot read: {exc.strerror}", path=str(exc.filename)) from exc
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    return path, data if isinstance(data, dict) else {}


def _strs(value: object) -> list[str]:
    return [str(x) for x in value] if isinstance(value, list) else []


def finish_pending_wipe(disk: DiskBase, say: Callable[[str], None] | None = None) -> list[dict[str, object]]:
    """Carry out a pending wipe, if any; returns what happened as events ({kind, payload}) for the next log."""
    found = _marker(disk)
    if found is None:
        return []
    marker, info = found
    report = say or (lambda _msg: None)
    labels = _strs(info.get("labels")) or ["EPHEMERAL"]
    sinks = _strs(info.get("sinks"))
    events: list[dict[str, object]] = []
    log_dir = marker.parent / LOG_DIR
    to_seq: int | None = None
    from storage import LogReader  # the log and the sinks only when a wipe is pending: not on every boot

    from ._ports import DirSinks

    try:
        if log_dir.is_dir():
            with LogReader(log_dir) as reader:
                logged = list(reader.read())
            to_seq = logged[-1].seq if logged else None
            if sinks:
                ca = str(info.get("ca") or "").encode("ascii") or None
                sink = DirSinks(lambda: ca, lambda kind, payload: events.append({"kind": kind, "payload": payload}))
                sink.ship(sinks, logged)
                report(f"shipped the sealed log (to seq {to_seq}) to {', '.join(sinks)} and verified it")
    except (GravenError, OSError) as exc:
        why = exc.message if isinstance(exc, GravenError) else str(exc)
        report(f"the pending wipe of {', '.join(labels)} is NOT done: shipping the log failed: {why}")
        reason = f"shipping the log failed: {why}"
        return [{"kind": Kind.DISK_WIPE_FAILED, "payload": {"labels": labels, "reason": reason, "sinks": sinks}}]
    disk.wipe(labels)
    report(f"wiped {', '.join(labels)} ({info.get('reason') or 'reset'}; the log ended at seq {to_seq})")
    events.append({"kind": Kind.DISK_WIPED, "payload": {"labels": labels, "reason": info.get("reason") or "reset",
                                                        "log_to_seq": to_seq, "shipped": sinks}})
    return events
