"""``gravenctl audit verify BUNDLE --ca CA --witnessed FILE``: an export checked against the checkpoints witnesses
cosigned (the file ``audit witnessed -o FILE`` writes). The genuine export passes and says what it contains; a copy
truncated or rewritten after a cosigned checkpoint fails (exit 1) naming the checkpoint, the witness and the seq,
as a table and as JSON, though it verifies alone; a forged witness record is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from events import Kind, MerkleLevels, decode_event, leaf_hash
from events._bundle import write_bundle
from events._witness import WitnessRule
from events._witnessed import Cosigned, Published
from node._witness import WitnessKey
from pki import private_key_pem
from storage import LmdbEventLog


def _records(tmp_path: Path, pki: Any, raw: list[tuple[int, bytes]], size: int) -> Path:
    """The witness file of a witness that cosigned the log's checkpoint of ``size``."""
    cp_event = next(r for s, r in raw if s == size)
    note = str(decode_event(cp_event).payload["note"])
    key = WitnessKey(tmp_path / "w", "cp2", pki.ca_pem, private_key_pem(pki.ca_key))
    held, _ = WitnessRule(pki.ca_cert).accept(note, pki.cert_der, None, {}, name=key.name, signer=key.signer,
                                              timestamp=1_800_000_000)
    entry = Cosigned.of(held, key.name, key.cert_der, pki.cert_der)
    levels = MerkleLevels([leaf_hash(r) for _, r in raw[:size]])
    pub = Published("graven/node1", note, pki.cert_der, {1: levels.consistency_proof(1)}, 1)
    path = tmp_path / "witnessed.json"
    path.write_text(json.dumps({"format": "graven-witnessed/1", "published": [json.loads(pub.to_json())],
                                "cosigned": [entry.to_dict()]}))
    return path


@pytest.fixture
def setup(tmp_path: Path, pki: Any) -> tuple[Path, Path, Path, list[tuple[int, bytes]]]:
    log = LmdbEventLog(tmp_path / "log", pki.signer, cert_der=pki.cert_der, boot_id="b", origin="graven/node1",
                       checkpoint_every=20)
    for i in range(50):
        log.append(Kind.TASK_STARTED, {"i": i})
    raw = list(log.read_raw())
    log.close()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    bundle = tmp_path / "genuine.tar"
    assert main(["audit", "export", str(tmp_path / "log"), "-o", str(bundle)]) == 0
    return ca, bundle, _records(tmp_path, pki, raw, 41), raw  # checkpoints at seq 20 and 41


def _run(capsys: Any, *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_genuine_passes_truncated_and_forked_fail(capsys: Any, tmp_path: Path, pki: Any, setup: Any) -> None:
    ca, bundle, witnessed, raw = setup
    code, out = _run(capsys, str(bundle), "--ca", str(ca), "--witnessed", str(witnessed))
    assert code == 0 and "witnessed" in out and "size 41 cosigned by graven-witness/cp2" in out, out
    code, out = _run(capsys, str(bundle), "--ca", str(ca), "--witnessed", str(witnessed), "-o", "json")
    assert code == 0 and json.loads(out)["witnessed"][0]["size"] == 41

    # a copy cut right before the cosigned checkpoint: it verifies alone, not against the witness
    cut = tmp_path / "cut.tar"
    with cut.open("wb") as f:
        write_bundle(f, raw[:38])
    assert _run(capsys, str(cut), "--ca", str(ca))[0] == 0
    code, out = _run(capsys, str(cut), "--ca", str(ca), "--witnessed", str(witnessed))
    assert code == 1 and "TAMPERED at seq 38 (truncated)" in out, out
    assert "witness graven-witness/cp2 cosigned checkpoint graven/node1 size 41 (seq 41)" in out, out
    code, out = _run(capsys, str(cut), "--ca", str(ca), "--witnessed", str(witnessed), "-o", "json")
    doc = json.loads(out)
    assert code == 1 and doc["reason"] == "truncated" and doc["seq"] == 38
    assert doc["witness"] == "graven-witness/cp2" and doc["checkpoint"]["size"] == 41

    # another history with the same key (the node's key stolen, its log rewritten): forked
    other = LmdbEventLog(tmp_path / "other", pki.signer, cert_der=pki.cert_der, boot_id="b", origin="graven/node1",
                         checkpoint_every=20)
    for i in range(60):
        other.append(Kind.TASK_STARTED, {"i": i, "rewritten": True})
    other.close()
    code, out = _run(capsys, str(tmp_path / "other"), "--ca", str(ca), "--witnessed", str(witnessed))
    assert code == 1 and "(forked)" in out and "size 41" in out and "graven-witness/cp2" in out, out


def test_bad_records_are_refused(capsys: Any, tmp_path: Path, pki: Any, setup: Any) -> None:
    ca, bundle, witnessed, _ = setup
    doc = json.loads(witnessed.read_text())
    doc["cosigned"][0]["size"] = 40  # the record no longer matches its cosigned note
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    code, out = _run(capsys, str(bundle), "--ca", str(ca), "--witnessed", str(forged))
    assert code != 0 and "does not match its note" in out, out
    not_records = tmp_path / "x.json"
    not_records.write_text("{}")
    code, out = _run(capsys, str(bundle), "--ca", str(ca), "--witnessed", str(not_records))
    assert code != 0 and "not a graven-witnessed/1 file" in out, out
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "graven-witnessed/1", "published": [], "cosigned": []}))
    code, out = _run(capsys, str(bundle), "--ca", str(ca), "--witnessed", str(empty))
    assert code != 0 and "no witness has cosigned a checkpoint of graven/node1" in out, out
