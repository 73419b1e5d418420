"""``gravenctl audit verify --since-export OLD`` with partial exports on either side: the newer export proves
with its consistency proofs that it extends the checkpoint the older one saw, and a truncated or forked log is
named as such (exit 1, the reason and a seq); an export that cannot tell says so."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from events import Kind
from storage import LmdbEventLog

EVERY = 16


def _grow(path: Path, pki: Any, n: int, tag: str, *, seal: bool = True) -> None:
    log = LmdbEventLog(path, pki.signer, cert_der=pki.cert_der, boot_id=f"boot-{tag}", origin="graven/node1",
                       checkpoint_every=EVERY)
    for i in range(n):
        log.append(Kind.TASK_STARTED, {"i": i, "tag": tag})
    if seal:
        log.seal("shutdown")
    log.close()


def _export(path: Path, out: Path, *extra: str) -> Path:
    assert main(["audit", "export", str(path), "-o", str(out), *extra]) == 0
    return out


def _verify(capsys: Any, new: Path, old: Path, ca: Path) -> tuple[int, str]:
    code = main(["audit", "verify", str(new), "--ca", str(ca), "--since-export", str(old)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def ca(tmp_path: Path, pki: Any) -> Path:
    p = tmp_path / "ca.pem"
    p.write_bytes(pki.ca_pem)
    return p


@pytest.fixture
def history(tmp_path: Path, pki: Any) -> tuple[Path, Path, Path]:
    """A log, a snapshot of it after 40 events, and a full export taken after 70 (sealed at seq 75)."""
    log = tmp_path / "log"
    _grow(log, pki, 40, "a", seal=False)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(log, snapshot)
    (snapshot / "writer.lock").unlink()
    _grow(log, pki, 30, "b")
    return log, snapshot, _export(log, tmp_path / "old.tar")


def test_a_partial_export_of_the_grown_log_extends_the_old_export(capsys: Any, tmp_path: Path, pki: Any,
                                                                   ca: Path, history: tuple[Path, Path, Path]) -> None:
    log, _, old = history
    _grow(log, pki, 50, "c")
    new = _export(log, tmp_path / "new.tar", "--from", "100")  # its range is long after what OLD saw
    code, out = _verify(capsys, new, old, ca)
    assert code == 0 and "extends the checkpoint of size 75" in out, out
    # and the other way round: an old partial export whose anchor is the checkpoint it saw, against the full log
    part = _export(log, tmp_path / "old-part.tar", "--from", "20", "--to", "25")
    assert _verify(capsys, log, part, ca)[0] == 0
    assert _verify(capsys, new, part, ca)[0] == 0


def test_a_forked_log_is_named_forked_from_a_partial_export(capsys: Any, tmp_path: Path, pki: Any, ca: Path,
                                                            history: tuple[Path, Path, Path]) -> None:
    log, snapshot, old = history
    shutil.rmtree(log)
    shutil.copytree(snapshot, log)
    _grow(log, pki, 120, "forged")  # another history on top of the snapshot, longer than the real one
    assert main(["audit", "verify", str(log), "--ca", str(ca)]) == 0, "a forked log verifies alone"
    capsys.readouterr()
    new = _export(log, tmp_path / "new.tar", "--from", "130")
    code, out = _verify(capsys, new, old, ca)
    assert code == 1 and "forked" in out and "TAMPERED" in out, out
    code, out = _verify(capsys, log, old, ca)
    first_forged = 40 + 1 + 40 // EVERY  # genesis + 40 events + their checkpoints
    assert code == 1 and "forked" in out and f"seq {first_forged}" in out, out


def test_a_truncated_log_is_named_truncated_from_a_partial_export(capsys: Any, tmp_path: Path, ca: Path,
                                                                  history: tuple[Path, Path, Path]) -> None:
    _, snapshot, old = history
    new = _export(snapshot, tmp_path / "new.tar", "--from", "30")  # the log as it was cut back to 42 events
    code, out = _verify(capsys, new, old, ca)
    assert code == 1 and "truncated" in out and "seq 42" in out, out


def test_an_export_whose_anchor_is_too_old_cannot_tell(capsys: Any, tmp_path: Path, pki: Any, ca: Path,
                                                       history: tuple[Path, Path, Path]) -> None:
    log, _, old = history
    _grow(log, pki, 5, "c", seal=False)
    new = _export(log, tmp_path / "new.tar", "--from", "3", "--to", "5")  # anchored at the first checkpoint
    code, out = _verify(capsys, new, old, ca)
    assert code != 0 and "cannot compare" in out and "export a range" in out, out
