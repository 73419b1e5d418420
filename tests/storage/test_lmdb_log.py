"""The LMDB event log beyond the shared contract: the writer lock, reopening, tail verification on open, map
growth, the lmdb error boundary, a full disk, asyncio appenders and readers beside the writer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest

from errors import DiskFull, LogLocked, LogReadOnly, StorageError, UntrustedKey
from events import Event, Kind, decode_event, encode_event, verify_items
from storage import LmdbEventLog, LogReader, seq_key
from storage._lmdb_errors import LMDB_ERRORS, translate

ROOT = Path(__file__).resolve().parents[2]


def _open(path: Path, pki: Any, **kw: Any) -> LmdbEventLog:
    kw.setdefault("boot_id", "boot-0")
    signer = kw.pop("signer", pki.signer)
    return LmdbEventLog(path, signer, cert_der=kw.pop("cert_der", pki.cert_der), **kw)


def _rewrite(path: Path, seq: int, value: bytes | None) -> None:
    """Change (or with ``None`` delete) one stored value behind the log's back, with the lmdb module itself."""
    env = lmdb.open(str(path), max_dbs=2, subdir=True)
    try:
        db = env.open_db(b"events", create=False)
        with env.begin(write=True, db=db) as txn:
            if value is None:
                assert txn.delete(seq_key(seq))
            else:
                assert txn.get(seq_key(seq)) is not None
                txn.put(seq_key(seq), value)
    finally:
        env.close()


def _stored(path: Path, seq: int) -> bytes:
    with LogReader(path) as r:
        return dict(r.read_raw(seq, seq + 1))[seq]


# -- one writer -----------------------------------------------------------------------------------------------------
def test_second_writer_in_another_process_gets_log_locked(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    with _open(path, pki):
        child = textwrap.dedent(f"""
            import sys
            from pki import Ed25519Signer
            from errors import LogLocked
            from storage import LmdbEventLog
            try:
                LmdbEventLog({str(path)!r}, Ed25519Signer.generate(), boot_id="intruder")
            except LogLocked as exc:
                print("LogLocked:", exc.message, exc.details.get("pid"))
                sys.exit(3)
            print("opened")
        """)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"already open for writing by process {os.getpid()}" in res.stdout
    assert str(path) in res.stdout


def test_second_writer_in_the_same_process_gets_log_locked(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    first = _open(path, pki)
    with pytest.raises(LogLocked) as info:
        _open(path, pki, boot_id="again")
    assert f"process {os.getpid()}" in info.value.message
    first.append(Kind.TASK_STARTED, {"still": "writable"})  # the refused open did not disturb the writer
    first.close()
    first.close()  # closing twice is harmless
    with _open(path, pki, boot_id="boot-1") as second:
        assert second.next_seq() == 2


def test_a_failed_open_releases_the_lock(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    with pytest.raises(StorageError, match="certificate"):
        LmdbEventLog(path, pki.signer, boot_id="b")  # a new log needs the certificate for its genesis
    with _open(path, pki) as log:  # ... and that refusal left no lock behind
        assert log.next_seq() == 1


def test_reopen_with_another_key_is_refused(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    _open(path, pki).close()
    other, other_cert = pki.new_signer("node2")
    with pytest.raises(UntrustedKey):
        _open(path, pki, signer=other, cert_der=other_cert)
    with _open(path, pki) as log:  # and the refusal released the lock
        assert log.next_seq() == 1


def test_closed_log_refuses_appends(tmp_path: Path, pki: Any) -> None:
    log = _open(tmp_path / "log", pki)
    log.close()
    with pytest.raises(LogReadOnly):
        log.append(Kind.TASK_STARTED, {})


# -- reopening ------------------------------------------------------------------------------------------------------
def test_reopen_continues_the_chain_across_many_boots(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    boot_ids = [str(uuid.uuid4()) for _ in range(12)]
    expected_next = 0
    for i, boot_id in enumerate(boot_ids):
        with _open(path, pki, boot_id=boot_id, checkpoint_every=7, origin=f"ignored-after-genesis-{i}") as log:
            assert log.next_seq() == max(expected_next, 1)
            assert log.origin == "ignored-after-genesis-0"
            assert log.broken is None
            for j in range(i * 3 + 1):
                log.append(Kind.TASK_STARTED, {"boot": i, "j": j})
            if i % 3 == 0:
                log.seal("reboot")
            expected_next = log.next_seq()
        report = verify_items(LogReader(path).read_raw(), pki.ca_cert)
        assert report.last_seq == expected_next - 1
    with LogReader(path) as r:
        events = list(r.read())
    assert [e.seq for e in events] == list(range(len(events)))
    seen_boots = list(dict.fromkeys(e.boot_id for e in events[1:]))
    assert seen_boots == boot_ids
    report = verify_items(LogReader(path).read_raw(), pki.ca_cert)
    assert report.boots == len(boot_ids) and len(report.checkpoints) > 10


def test_reopen_after_rotation_without_a_checkpoint(tmp_path: Path, pki: Any) -> None:
    """Rotate, then stop before the next checkpoint: the tail now holds events of two keys, and the node comes
    back with the new one. The log must open writable and go on."""
    path = tmp_path / "log"
    new, new_cert = pki.new_signer()
    with _open(path, pki, checkpoint_every=10) as log:
        for i in range(12):
            log.append(Kind.TASK_STARTED, {"i": i})
        log.rotate(new, new_cert)
        log.append(Kind.TASK_STARTED, {"after": 1})
    with _open(path, pki, signer=new, cert_der=new_cert, checkpoint_every=10, boot_id="b2") as log:
        assert log.broken is None
        log.append(Kind.TASK_STARTED, {"after": 2})
        log.seal("shutdown")
    with pytest.raises(UntrustedKey):  # the retired key may not write any more
        _open(path, pki, checkpoint_every=10)
    report = verify_items(LogReader(path).read_raw(), pki.ca_cert)
    assert [k.key_id for k in report.keys] == [pki.signer.key_id, new.key_id] and report.sealed


def test_reopen_a_log_without_any_checkpoint(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    with _open(path, pki, checkpoint_every=1000) as log:
        for i in range(30):
            log.append(Kind.TASK_STARTED, {"i": i})
    with _open(path, pki, checkpoint_every=5, boot_id="b2") as log:
        for i in range(10):
            log.append(Kind.TASK_STARTED, {"i": i})
    verify_items(LogReader(path).read_raw(), pki.ca_cert)


# -- tail verification on open --------------------------------------------------------------------------------------
def _tail_log(path: Path, pki: Any) -> tuple[int, int]:
    """25 events with a checkpoint every 10: returns (last checkpoint seq, last seq)."""
    with _open(path, pki, checkpoint_every=10) as log:
        for i in range(25):
            log.append(Kind.CONFIG_APPLIED, {"digest": f"d{i}", "mode": "auto", "diff": [], "version": 1})
        events = list(log.read())
    cps = [e.seq for e in events if e.kind == Kind.CHECKPOINT]
    return cps[-1], events[-1].seq


def _assert_read_only(path: Path, pki: Any, seq: int, reason: str | None = None) -> None:
    log = _open(path, pki, boot_id="after-tamper")
    try:
        assert log.broken is not None and log.broken.seq == seq, log.broken
        if reason:
            assert log.broken.reason == reason
        for attempt in (lambda: log.append(Kind.TASK_STARTED, {}), lambda: log.submit(Kind.TASK_STARTED, {}),
                        lambda: log.seal("x"), log.flush):
            with pytest.raises(LogReadOnly) as info:
                attempt()
            assert info.value.details["seq"] == seq and f"seq {seq}" in info.value.message
        before = list(log.read_raw())
        assert len(before) >= seq  # still readable, for the audit
    finally:
        log.close()
    assert list(LogReader(path).read_raw()) == before  # nothing was appended


@pytest.mark.parametrize("where", ["first-after-checkpoint", "middle", "last"])
def test_tampered_tail_opens_read_only(tmp_path: Path, pki: Any, where: str) -> None:
    path = tmp_path / "log"
    cp, last = _tail_log(path, pki)
    seq = {"first-after-checkpoint": cp + 1, "middle": (cp + last) // 2, "last": last}[where]
    raw = bytearray(_stored(path, seq))
    i = raw.index(b"time_ns\xcf") + 15
    raw[i] ^= 0x01  # one bit of the timestamp
    _rewrite(path, seq, bytes(raw))
    _assert_read_only(path, pki, seq, "signature")


def test_tampered_checkpoint_opens_read_only(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    cp, _ = _tail_log(path, pki)
    ev = decode_event(_stored(path, cp))
    forged = msgspec.structs.replace(ev, payload={**ev.payload, "frontier": [b"\x00" * 32] * len(
        ev.payload["frontier"])})
    _rewrite(path, cp, encode_event(forged))
    _assert_read_only(path, pki, cp, "checkpoint")


@pytest.mark.parametrize("how", ["garbage", "re-encoded", "deleted"])
def test_other_tail_damage_opens_read_only(tmp_path: Path, pki: Any, how: str) -> None:
    path = tmp_path / "log"
    cp, _ = _tail_log(path, pki)
    seq = cp + 3
    if how == "garbage":
        _rewrite(path, seq, b"\xc1not msgpack")
        _assert_read_only(path, pki, seq, "undecodable")
    elif how == "re-encoded":
        ev = decode_event(_stored(path, seq))
        _rewrite(path, seq, encode_event(msgspec.structs.replace(ev, time_ns=ev.time_ns + 1)))
        _assert_read_only(path, pki, seq, "signature")
    else:
        _rewrite(path, seq, None)
        _assert_read_only(path, pki, seq, "gap")


def test_tampering_before_the_last_checkpoint_is_left_to_the_auditor(tmp_path: Path, pki: Any) -> None:
    """Opening verifies only the tail (fast boots); full verification still finds an older change."""
    path = tmp_path / "log"
    cp, _ = _tail_log(path, pki)
    seq = cp - 4
    ev = decode_event(_stored(path, seq))
    _rewrite(path, seq, encode_event(msgspec.structs.replace(ev, payload={**ev.payload, "digest": "evil"})))
    with _open(path, pki, boot_id="b2") as log:
        assert log.broken is None
    from errors import TamperedLog

    with pytest.raises(TamperedLog) as info:
        verify_items(LogReader(path).read_raw(), pki.ca_cert)
    assert info.value.seq == seq


# -- growth, errors, a full disk ------------------------------------------------------------------------------------
def test_map_grows_when_full(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    pad = "x" * 1000
    n = 5000  # ~5 MB of events into a 64 KiB map
    with _open(path, pki, map_size=64 * 1024, checkpoint_every=256) as log:
        futures = [log.submit(Kind.TASK_STARTED, {"i": i, "pad": pad}) for i in range(n)]
        acked = [f.result(timeout=120) for f in futures]
        for i in range(50):  # and one at a time, so growth also happens under single small transactions
            acked.append(log.append(Kind.TASK_STARTED, {"i": n + i, "pad": pad}))
        assert log._env.info()["map_size"] >= 5 * 1024 * 1024
    with LogReader(path) as r:
        stored = {e.seq: e for e in r.read()}
    for ev in acked:
        assert stored[ev.seq] == ev
    assert verify_items(LogReader(path).read_raw(), pki.ca_cert).events == len(stored)


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


def test_every_lmdb_error_is_mapped() -> None:
    classes = {cls for cls in _all_subclasses(lmdb.Error) if cls.__module__.startswith("lmdb")} | {lmdb.Error}
    named = {getattr(lmdb, n) for n in dir(lmdb) if isinstance(getattr(lmdb, n), type)
             and issubclass(getattr(lmdb, n), lmdb.Error)}
    classes |= named
    assert len(classes) > 20
    missing = sorted(c.__name__ for c in classes if c not in LMDB_ERRORS)
    assert not missing, f"lmdb exceptions without a Graven error: {missing}"
    for cls in classes:
        err = translate(cls("boom"), "/x")
        assert isinstance(err, StorageError) and "/x" in err.message
    assert isinstance(translate(lmdb.MapFullError("full"), "/x"), DiskFull)
    assert isinstance(translate(OSError(28, "No space left on device"), "/x"), DiskFull)
    assert isinstance(translate(lmdb.Error("mdb_txn_commit: No space left on device"), "/x"), DiskFull)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the disk-full test needs root")
    path.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(log: LmdbEventLog, how: str, tag: str) -> tuple[list[Event], list[BaseException]]:
    """Append until the disk is full: from this thread alone (the lone appender's path, in the caller's thread),
    from 8 threads at once (group commits through the pipeline), from one asyncio task (the sequencer writes
    small batches itself), or from 256 asyncio tasks (big batches in parts, prepared ahead and partly signed by the
    child process)."""
    acked: list[Event] = []
    errors: list[BaseException] = []

    def one(w: int) -> None:
        try:
            for i in range(100_000):
                acked.append(log.append(Kind.TASK_STARTED, {tag: i, "w": w, "pad": "y" * 400}))
        except DiskFull as exc:
            errors.append(exc)

    if how == "lone":
        one(0)
    elif how == "threads":
        threads = [threading.Thread(target=one, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        async def task(w: int) -> None:
            try:
                for i in range(100_000):
                    acked.append(await log.append_async(Kind.TASK_STARTED, {tag: i, "w": w, "pad": "y" * 400}))
            except DiskFull as exc:
                errors.append(exc)

        async def crowd(n: int) -> None:
            await asyncio.gather(*(task(w) for w in range(n)))

        asyncio.run(crowd(256 if how == "crowd" else 1))
    return acked, errors


@pytest.mark.parametrize("how", ["lone", "threads", "asyncio", "crowd"])
def test_disk_full_reaches_the_caller_and_loses_nothing(tmp_path: Path, pki: Any, how: str) -> None:
    with _tmpfs(tmp_path / "small", "4m" if how == "crowd" else "2m") as mnt:
        path = mnt / "log"
        filler = mnt / "filler"
        filler.write_bytes(b"\x00" * 512 * 1024)
        every = 1000 if how == "crowd" else 50  # a crowd's parts are prepared ahead between checkpoints only
        log = _open(path, pki, map_size=64 * 1024, checkpoint_every=every)
        try:
            acked, errors = _fill(log, how, "i")
            assert errors and len(errors) == {"threads": 8, "crowd": 256}.get(how, 1)
            assert all("space" in e.message for e in errors if isinstance(e, DiskFull)), errors
            assert len(acked) > 100
            # room again: the same log object goes on, its chain re-read from disk
            filler.unlink()
            after = [log.append(Kind.TASK_STARTED, {"after": j}) for j in range(20)]
            assert after[0].seq > max(e.seq for e in acked)
            acked += after
        finally:
            log.close()
        with LogReader(path) as r:
            stored = {e.seq: e for e in r.read()}
        for ev in acked:
            assert stored[ev.seq] == ev, f"acknowledged seq {ev.seq} lost"
        with _open(path, pki, boot_id="after-full", checkpoint_every=every) as log:
            assert log.broken is None
            log.append(Kind.TASK_STARTED, {"reopened": True})
            log.seal("shutdown")
        report = verify_items(LogReader(path).read_raw(), pki.ca_cert)
        assert report.sealed and report.last_seq == max(stored) + 2


# -- asyncio, readers -----------------------------------------------------------------------------------------------
def test_append_async(tmp_path: Path, pki: Any) -> None:
    log = _open(tmp_path / "log", pki, checkpoint_every=100)

    async def main() -> list[Event]:
        async def worker(t: int) -> list[Event]:
            return [await log.append_async(Kind.TASK_STARTED, {"t": t, "i": i}) for i in range(50)]

        bad = log.append_async(Kind.TASK_STARTED, {"bad": object()})
        results = await asyncio.gather(*(worker(t) for t in range(40)))
        from errors import InvalidEvent

        with pytest.raises(InvalidEvent):
            await bad
        return [e for r in results for e in r]

    try:
        acked = asyncio.run(main())
        assert len({e.seq for e in acked}) == 2000
        stored = {e.seq: e for e in log.read()}
        assert all(stored[e.seq] == e for e in acked)
    finally:
        log.close()
    verify_items(LogReader(tmp_path / "log").read_raw(), pki.ca_cert)


def test_reader_follows_the_writer(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    with _open(path, pki) as log:
        reader = LogReader(path)
        got: list[int] = []

        def follow() -> None:
            seq = 0
            while seq < 101:
                assert reader.wait_for(seq, timeout=10, poll=0.005)
                got.extend(s for s, _ in reader.read_raw(seq))
                seq = got[-1] + 1

        th = threading.Thread(target=follow)
        th.start()
        for i in range(100):
            log.append(Kind.TASK_STARTED, {"i": i})
        th.join(timeout=30)
        assert got == list(range(101))
        assert reader.wait_for(500, timeout=0.05, poll=0.01) is False
        reader.close()


def test_reader_in_another_process_beside_the_writer(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    with _open(path, pki) as log:
        for i in range(20):
            log.append(Kind.TASK_STARTED, {"i": i})
        child = f"from storage import LogReader; r = LogReader({str(path)!r}); print(r.next_seq(), len(list(r.read())))"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["21", "21"]
        log.append(Kind.TASK_STARTED, {"still": "writing"})


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no event log"):
        LogReader(tmp_path / "nothing-here")
    env = lmdb.open(str(tmp_path / "other"), max_dbs=2)
    env.close()
    with pytest.raises(StorageError, match="events"):
        LogReader(tmp_path / "other")
