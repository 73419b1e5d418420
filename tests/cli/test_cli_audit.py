"""``gravenctl audit`` end to end on real LMDB logs: every tampering case gives exit 1 and names the seq."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lmdb
import msgspec
import pytest

from cli.main import main
from events import NODE, Actor, Kind, decode_event, encode_event, event_hash
from pki import Ed25519Signer
from storage import LmdbEventLog, seq_key

CHECKPOINT_EVERY = 16


def make_log(path: Path, pki, n: int = 60, *, signer=None, cert_der=None, origin="graven/node1", seal=True):
    log = LmdbEventLog(path, signer or pki.signer, cert_der=cert_der or pki.cert_der, boot_id="boot-1",
                       origin=origin, checkpoint_every=CHECKPOINT_EVERY)
    for i in range(n):
        actor = Actor("alice", ("os:admin",)) if i % 7 == 0 else NODE
        log.append(Kind.CONFIG_APPLIED if i % 7 == 0 else Kind.TASK_STARTED, {"i": i, "digest": f"d{i}"}, actor)
    if seal:
        log.seal("shutdown")
    log.close()
    return path


@pytest.fixture
def ca_file(tmp_path: Path, pki) -> Path:
    p = tmp_path / "ca.pem"
    p.write_bytes(pki.ca_pem)
    return p


@pytest.fixture
def logdir(tmp_path: Path, pki) -> Path:
    return make_log(tmp_path / "log", pki)


def rewrite(path: Path, fn) -> None:
    """Apply ``fn(txn, db)`` to a closed log directly, as an attacker with disk access would."""
    env = lmdb.open(str(path), max_dbs=2)
    db = env.open_db(b"events")
    with env.begin(write=True, db=db) as txn:
        fn(txn, db)
    env.close()


def get(txn, seq):
    return decode_event(bytes(txn.get(seq_key(seq))))


def verify(capsys, path, ca, *extra) -> tuple[int, str]:
    code = main(["audit", "verify", str(path), "--ca", str(ca), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_verify_ok_summary(capsys, logdir, ca_file):
    code, out = verify(capsys, logdir, ca_file)
    assert code == 0, out
    assert "OK" in out and "seq 0.." in out and "sealed" in out
    code = main(["audit", "verify", str(logdir), "--ca", str(ca_file), "-o", "json"])
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "ok" and d["first_seq"] == 0 and d["sealed"] is True
    assert d["checkpoints"] >= 60 // CHECKPOINT_EVERY


def test_changed_payload(capsys, logdir, ca_file):
    def tamper(txn, db):
        ev = get(txn, 20)
        forged = msgspec.structs.replace(ev, payload={**ev.payload, "digest": "evil"})
        txn.put(seq_key(20), encode_event(forged))

    rewrite(logdir, tamper)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 20" in out and "signature" in out


def test_changed_signature(capsys, logdir, ca_file):
    def tamper(txn, db):
        ev = get(txn, 33)
        sig = bytes([ev.sig[0] ^ 1]) + ev.sig[1:]
        txn.put(seq_key(33), encode_event(msgspec.structs.replace(ev, sig=sig)))

    rewrite(logdir, tamper)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 33" in out and "signature" in out


def test_deleted_event(capsys, logdir, ca_file):
    rewrite(logdir, lambda txn, db: txn.delete(seq_key(12)))
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 12" in out and "gap" in out


def test_swapped_events(capsys, logdir, ca_file):
    def tamper(txn, db):
        a, b = bytes(txn.get(seq_key(25))), bytes(txn.get(seq_key(26)))
        txn.put(seq_key(25), b)
        txn.put(seq_key(26), a)

    rewrite(logdir, tamper)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 25" in out and "reordered" in out


def test_truncated_bundle(capsys, tmp_path, logdir, ca_file):
    bundle = tmp_path / "b.tar"
    assert main(["audit", "export", str(logdir), "-o", str(bundle)]) == 0
    from events._bundle import _frame, read_bundle

    b = read_bundle(bundle.open("rb"))
    cut = b.events[:-5]
    import io
    import tarfile

    out = tmp_path / "cut.tar"
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "events.bin":
                data = _frame(cut)
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    code, text = verify(capsys, out, ca_file)
    last = len(b.events) - 5
    assert code == 1 and f"seq {last}" in text and "truncated" in text


def test_truncated_log_since_export(capsys, tmp_path, logdir, ca_file):
    old = tmp_path / "old.tar"
    assert main(["audit", "export", str(logdir), "-o", str(old)]) == 0

    def tamper(txn, db):
        for seq in range(40, 200):
            txn.delete(seq_key(seq))

    rewrite(logdir, tamper)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 0, "a cut log verifies alone: only an earlier checkpoint can show the cut"
    code, out = verify(capsys, logdir, ca_file, "--since-export", str(old))
    assert code == 1 and "seq 40" in out and "truncated" in out


def test_rolled_back_log(capsys, tmp_path, pki, ca_file):
    logdir = make_log(tmp_path / "log", pki, n=30, seal=False)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(logdir, snapshot)
    log = LmdbEventLog(logdir, pki.signer, boot_id="boot-2", checkpoint_every=CHECKPOINT_EVERY)
    for i in range(40):
        log.append(Kind.TASK_STARTED, {"i": i, "branch": "real"})
    log.close()
    old = tmp_path / "old.tar"
    assert main(["audit", "export", str(logdir), "-o", str(old)]) == 0
    # The attacker restores the snapshot and writes a different history on top of it.
    shutil.rmtree(logdir)
    shutil.copytree(snapshot, logdir)
    (logdir / "writer.lock").unlink()
    log = LmdbEventLog(logdir, pki.signer, boot_id="boot-2", checkpoint_every=CHECKPOINT_EVERY)
    for i in range(60):
        log.append(Kind.TASK_STARTED, {"i": i, "branch": "forged"})
    log.close()
    code, out = verify(capsys, logdir, ca_file)
    assert code == 0
    code, out = verify(capsys, logdir, ca_file, "--since-export", str(old))
    first_forged = 30 + 1 + 30 // CHECKPOINT_EVERY  # genesis + 30 events + their checkpoints
    assert code == 1 and "rolled back" in out and f"seq {first_forged}" in out


def test_key_the_ca_never_certified(capsys, tmp_path, pki, other_pki, ca_file):
    logdir = make_log(tmp_path / "log", pki, signer=other_pki.signer, cert_der=other_pki.cert_der)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 0" in out and "untrusted-key" in out


def test_event_signed_by_uncertified_key(capsys, logdir, ca_file):
    rogue = Ed25519Signer.generate()

    def tamper(txn, db):
        ev = get(txn, 18)
        body = msgspec.structs.replace(ev, key_id=rogue.key_id, payload={**ev.payload, "digest": "evil"})
        forged = msgspec.structs.replace(body, sig=rogue.sign(event_hash(body)))
        txn.put(seq_key(18), encode_event(forged))

    rewrite(logdir, tamper)
    code, out = verify(capsys, logdir, ca_file)
    assert code == 1 and "seq 18" in out and "untrusted-key" in out


def test_spliced_from_another_node(capsys, tmp_path, pki, ca_file):
    signer_b, cert_b = pki.new_signer("node2")
    a = make_log(tmp_path / "a", pki)
    b = make_log(tmp_path / "b", pki, signer=signer_b, cert_der=cert_b, origin="graven/node2")
    env_b = lmdb.open(str(b), max_dbs=2, readonly=True)
    with env_b.begin(db=env_b.open_db(b"events", create=False)) as txn:
        foreign = {s: bytes(txn.get(seq_key(s))) for s in (10, 11, 12)}
    env_b.close()
    rewrite(a, lambda txn, db: [txn.put(seq_key(s), raw) for s, raw in foreign.items()])
    code, out = verify(capsys, a, ca_file)
    assert code == 1 and "seq 10" in out


def test_partial_export_verifies_with_ca_alone(capsys, tmp_path, logdir, ca_file):
    part = tmp_path / "part.tar"
    assert main(["audit", "export", str(logdir), "-o", str(part), "--from", "20", "--to", "40"]) == 0
    capsys.readouterr()
    code, out = verify(capsys, part, ca_file)
    assert code == 0, out
    assert "seq 20..40" in out


def test_show_and_replay(capsys, logdir):
    assert main(["audit", "show", str(logdir), "--kind", "config.*", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["kind"] == "config.applied" and r["actor"]["id"] == "alice" for r in rows)
    assert main(["audit", "show", str(logdir), "--actor", "os:admin"]) == 0
    text = capsys.readouterr().out
    assert "alice[os:admin]" in text and "SEQ" in text
    assert main(["audit", "replay", str(logdir), "--at", "10", "-o", "json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["seq"] == 10 and state["config_digest"] == "d7"


def test_missing_path_is_a_clear_error(capsys, tmp_path, ca_file):
    code, out = verify(capsys, tmp_path / "nope", ca_file)
    assert code == 1 and "NOT_FOUND" in out and "nope" in out
