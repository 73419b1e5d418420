"""``gravenctl audit prove`` on a real LMDB log and on its export: a table for people, ``-o json`` for programs,
the proof verifies (RFC 9162) between the two checkpoints' signed roots, and bad sizes or a partial export are
refused with a message naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from events import Kind, parse_note, verify_consistency
from storage import LmdbEventLog


@pytest.fixture
def logdir(tmp_path: Path, pki: Any) -> Path:
    path = tmp_path / "log"
    log = LmdbEventLog(path, pki.signer, cert_der=pki.cert_der, boot_id="b", origin="graven/node1",
                       checkpoint_every=16)
    for i in range(70):
        log.append(Kind.TASK_STARTED, {"i": i})
    log.seal("shutdown")
    log.close()
    return path


def _checked(doc: dict[str, Any]) -> None:
    proof = [bytes.fromhex(h) for h in doc["proof"]]
    assert verify_consistency(doc["from_size"], doc["to_size"], bytes.fromhex(doc["from_root"]),
                              bytes.fromhex(doc["to_root"]), proof)
    for side in ("from", "to"):  # the roots are the ones the log key signed
        cp = parse_note(doc[f"{side}_note"])[0]
        assert (cp.size, cp.root.hex()) == (doc[f"{side}_size"], doc[f"{side}_root"])


def test_prove_json_and_table_on_a_log_and_its_export(capsys: Any, tmp_path: Path, logdir: Path) -> None:
    assert main(["audit", "prove", str(logdir), "--from-size", "16", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "graven-consistency/1" and doc["origin"] == "graven/node1"
    assert doc["from_size"] == 16 and doc["to_size"] > 70 and doc["proof"]
    _checked(doc)
    bundle = tmp_path / "all.tar"
    assert main(["audit", "export", str(logdir), "-o", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["audit", "prove", str(bundle), "--from-size", "16", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc, "the export proves what the log proves"
    assert main(["audit", "prove", str(logdir), "--from-size", "16", "--to-size", "50"]) == 0
    out = capsys.readouterr().out
    assert "size 16" in out and "size 50" in out and "(a checkpoint)" in out and "[0]" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--from-size", "60", "--to-size", "20"], "--from-size <= --to-size"),
    (["--from-size", "0", "--to-size", "9999"], "the log has"),
    (["--from-size", "-1"], "--from-size"),
])
def test_bad_sizes_are_refused(capsys: Any, logdir: Path, args: list[str], message: str) -> None:
    assert main(["audit", "prove", str(logdir), *args]) != 0
    assert message in capsys.readouterr().err


def test_a_partial_export_cannot_prove(capsys: Any, tmp_path: Path, logdir: Path) -> None:
    bundle = tmp_path / "part.tar"
    assert main(["audit", "export", str(logdir), "-o", str(bundle), "--from", "30"]) == 0
    capsys.readouterr()
    assert main(["audit", "prove", str(bundle), "--from-size", "16"]) != 0
    assert "partial export" in capsys.readouterr().err
