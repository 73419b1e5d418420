"""The dashboard's fold of one node: stage, readiness, progress and fallbacks from events; offline and back."""

from __future__ import annotations

from typing import Any

from cli._board import NodeBoard
from events import Kind, MemoryEventLog


def test_a_board_follows_an_upgrade_and_a_fallback(pki: Any) -> None:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/t", boot_id="b1")
    board = NodeBoard("n1:50000")
    board.status({"stage": "running", "ready": True, "slot": "A", "version": "v1", "boot_id": "b1",
                  "log_next_seq": 3, "sequence": None, "last_fallback": None})
    assert board.row()["ready"] == "yes" and board.row()["sequence"] == "-"
    log.append(Kind.SEQUENCE_STARTED, {"sequence": "upgrade", "phases": ["verify", "install", "reboot"]})
    log.append(Kind.FSM_TRANSITION, {"trigger": "upgrade", "src": "running", "dst": "upgrading"})
    log.append(Kind.PHASE_STARTED, {"sequence": "upgrade", "phase": "install", "index": 1, "count": 3})
    for e in log.read(1):
        board.event(e)
    assert board.row()["stage"] == "upgrading" and board.row()["ready"] == "no"
    assert board.row()["sequence"] == "upgrade 2/3 install"
    board.lost("node went away")
    assert board.row()["link"] == "offline" and board.row()["stage"] == "-"
    log.boot_id = "b2"
    log.append(Kind.BOOT_STARTED, {"boot_id": "b2", "slot": "B", "version": "v2"})
    log.append(Kind.BOOT_FALLBACK, {"from_slot": "B", "to_slot": "A", "reason": "3 tries failed"})
    log.append(Kind.FSM_TRANSITION, {"trigger": "booted", "src": "booting", "dst": "running"})
    log.append(Kind.BOOT_COMMITTED, {"slot": "A"})
    board.status({"stage": "booting", "ready": False, "slot": "B", "version": "v2", "boot_id": "b2",
                  "log_next_seq": 4, "sequence": None, "last_fallback": None})
    for e in log.read(4):
        board.event(e)
    row = board.row()
    assert (row["link"], row["stage"], row["ready"], row["sequence"]) == ("online", "running", "yes", "-")
    assert row["last fallback"] == "B -> A: 3 tries failed"
    assert row["log"] == f"{log.next_seq()} events"
    assert len(board.recent) == 6 and board.recent[-1].endswith("boot.committed")


def test_never_answered_is_unreachable() -> None:
    board = NodeBoard("10.0.0.9:50000")
    board.lost("failed to connect", unreachable=True)
    assert board.row()["link"] == "unreachable" and board.row()["ready"] == "no"
