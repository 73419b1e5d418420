"""Sealing after a crash: a log reopened with events after its last checkpoint (its writer died before sealing)
is sealed by ``seal_tail`` with one sealed checkpoint covering them; a log that ended sealed, or on a checkpoint,
or that is new, gets nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events import Kind, verify_items
from storage import LmdbEventLog
from storage._lmdb_log import RECOVERED


def _open(path: Path, pki: Any, boot: str, every: int = 1000) -> LmdbEventLog:
    return LmdbEventLog(path, pki.signer, boot_id=boot, cert_der=pki.cert_der, checkpoint_every=every)


def test_a_log_left_unsealed_is_sealed_at_the_next_open(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    log = _open(path, pki, "boot-1", every=10)
    for i in range(25):  # checkpoints after 10 and 20 events, then 5 (with the genesis: 6) uncovered
        log.append(Kind.TASK_STARTED, {"i": i})
    last = log.next_seq() - 1
    log.close()  # like a crash: closing does not seal
    log = _open(path, pki, "boot-2", every=10)
    try:
        assert log.unsealed_tail > 0
        cp = log.seal_tail()
        assert cp is not None and cp.kind == Kind.CHECKPOINT and cp.seq == last + 1
        assert cp.payload["sealed"] is True and cp.payload["reason"] == RECOVERED
        assert cp.payload["size"] == cp.seq and cp.boot_id == "boot-2"
        assert log.seal_tail() is None, "sealing twice"
        report = verify_items(log.read_raw(), pki.ca_cert)
        assert report.sealed and report.uncovered_tail == 0
        assert report.checkpoints[-1]["reason"] == RECOVERED
    finally:
        log.close()


def test_nothing_to_seal_after_a_sealed_end_a_checkpoint_or_on_a_new_log(tmp_path: Path, pki: Any) -> None:
    new = _open(tmp_path / "new", pki, "boot-1")
    assert new.unsealed_tail == 0 and new.seal_tail() is None  # the genesis is this boot's own
    new.append(Kind.TASK_STARTED, {})
    new.seal("reboot")
    new.close()
    again = _open(tmp_path / "new", pki, "boot-2")
    size = again.next_seq()
    assert again.seal_tail() is None and again.next_seq() == size
    again.close()
    on_cp = _open(tmp_path / "cp", pki, "boot-1", every=3)
    for i in range(2):  # genesis + 2 events: due, so the log ends on an (unsealed) checkpoint
        on_cp.append(Kind.TASK_STARTED, {"i": i})
    on_cp.close()
    reopened = _open(tmp_path / "cp", pki, "boot-2", every=3)
    try:
        assert [e.kind for e in reopened.read()][-1] == Kind.CHECKPOINT
        assert reopened.unsealed_tail == 0 and reopened.seal_tail() is None
    finally:
        reopened.close()
