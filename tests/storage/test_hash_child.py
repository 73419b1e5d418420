"""A replay of the stored log takes its chain digests from a hashing process (storage/_hash_child.py): the same state,
the same errors at the same seqs as hashing in the caller, whatever the process does (dies mid-replay, is busy,
reads another file, exits after idling)."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest

from errors import GravenError, InvalidEvent, TamperedLog
from events import Kind, NodeState, replay_raw
from events._record import decode_event, encode_event
from storage import LmdbEventLog, LogReader, seq_key
from storage._hash_child import HashChild

EVENTS = 4000  # its digests fill the pipe: the process waits for the caller
CHUNK = 16


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, pki: Any) -> Path:
    """A log of ~700 events of kinds with and without apply functions (written once; tests copy it to alter it)."""
    path = tmp_path_factory.mktemp("hashlog") / "log"
    log = LmdbEventLog(path, pki.signer, boot_id="b0", cert_der=pki.cert_der)
    try:
        for i in range(EVENTS):
            kind, payload = [(Kind.TASK_STARTED, {"task": f"t{i}"}), (Kind.API_DENIED, {"method": "m"}),
                             (Kind.CONFIG_STAGED, {"digest": f"d{i}"})][i % 3]
            log.submit(kind, payload)
        log.flush()
    finally:
        log.close()
    return path


@pytest.fixture
def hashing() -> Iterator[HashChild]:
    child = HashChild(chunk=CHUNK, idle_s=30)
    yield child
    child.close()


def _raws(path: Path) -> list[bytes]:
    with LogReader(path) as r:
        return [raw for _, raw in r.read_raw()]


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    (dst / "data.mdb").write_bytes((src / "data.mdb").read_bytes())
    return dst


def _outcome(fn: Callable[[], NodeState]) -> object:
    try:
        return fn()
    except GravenError as exc:
        return type(exc), str(exc), exc.details


def _replay_with(child: HashChild, path: Path, *, pause: float = 0.0,
                 during: Callable[[int], None] | None = None) -> NodeState:
    """replay_raw of the whole log at ``path`` with digests from ``child``; after its first chunk the caller waits
    for the process's first record, then ``pause`` s (the process hashes until its pipe is full: 2,000 events and
    more), and it calls ``during(i)`` before event ``i``."""
    with LogReader(path) as r:
        items = list(r.read_raw())
        ident = r._ident

    def values() -> Iterator[bytes]:
        for i, (_, raw) in enumerate(items):
            if i == CHUNK and pause:
                proc = child._proc
                assert proc is not None and proc.stdout is not None
                assert select.select([proc.stdout], [], [], 30)[0], "the hashing process sent nothing"
                time.sleep(pause)
            if during is not None:
                during(i)
            yield raw

    with child.session(path, ident, seq_key(0), len(items)) as digests:
        assert digests is not None
        return replay_raw(values(), None, digests)


def test_replay_with_the_process_is_replay_raw(stored: Path, hashing: HashChild) -> None:
    raws = _raws(stored)
    want = replay_raw(raws)
    assert _replay_with(hashing, stored, pause=0.3) == want
    assert hashing.last.theirs > len(raws) // CHUNK // 2  # most chunks (the caller may catch up at the end)
    with LogReader(stored) as r:
        assert r.replay(hashing=hashing, min_events=0) == want  # however the chunks were shared
        assert r.replay(min_events=1 << 62) == want  # in the caller alone
        mid = replay_raw(raws[:333])
        assert r.replay(mid, hashing=hashing, min_events=0) == want
        assert r.replay(want, hashing=hashing, min_events=0) == want  # nothing left to fold
    assert hashing.started == 1  # kept for the next replay


def _alter(path: Path, seq: int, fn: Callable[[bytes], bytes | None]) -> None:
    env = lmdb.open(str(path), max_dbs=2, subdir=True)
    try:
        db = env.open_db(b"events", create=False)
        with env.begin(write=True, db=db) as txn:
            new = fn(txn.get(seq_key(seq)))
            if new is None:
                txn.delete(seq_key(seq))
            else:
                txn.put(seq_key(seq), new)
    finally:
        env.close()


def _flip(raw: bytes) -> bytes:
    i = raw.index(b"task") + 6  # inside the payload's value: the bytes still decode
    return raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:]


def _other_prev(raw: bytes) -> bytes:
    e = decode_event(raw)
    return encode_event(msgspec.structs.replace(e, prev=b"\x01" * 32))


def _small_time(raw: bytes) -> bytes:
    """The same event with its time in 64 bits although it is small: not the layout the cut is taken from."""
    e = decode_event(raw)
    return encode_event(msgspec.structs.replace(e, time_ns=5))


@pytest.mark.parametrize(("change", "error"), [
    (_flip, TamperedLog),  # the chain breaks at the next event
    (lambda raw: None, TamperedLog),  # a missing seq
    (lambda raw: b"\xc1" + raw[1:], InvalidEvent),  # bytes that do not decode
    (_other_prev, TamperedLog),
    (_small_time, TamperedLog),  # hashed in the caller (another cut); the next event's prev no longer matches
])
def test_tampered_logs_fail_alike(stored: Path, tmp_path: Path, hashing: HashChild,
                                  change: Callable[[bytes], bytes | None], error: type) -> None:
    path = _copy(stored, tmp_path / "log")
    seq = next(s for s, raw in enumerate(_raws(path)) if s >= 300 and b"task.started" in raw)
    _alter(path, seq, change)  # in a chunk the process hashes
    alone = _outcome(lambda: replay_raw(_raws(path)))
    assert isinstance(alone, tuple) and alone[0] is error
    assert _outcome(lambda: _replay_with(hashing, path, pause=0.3)) == alone
    assert hashing.last.theirs >= seq // CHUNK  # the digests up to the altered event came from the process
    with LogReader(path) as r:
        assert _outcome(lambda: r.replay(hashing=hashing, min_events=0)) == alone
    assert hashing.started == 1  # an error in the caller does not cost the process


def test_a_process_killed_mid_replay_costs_nothing(stored: Path, hashing: HashChild) -> None:
    want = replay_raw(_raws(stored))
    killed: list[int] = []

    def kill(i: int) -> None:
        if i == 2 * CHUNK and not killed:  # the process is stuck writing to a full pipe: it has not finished
            pid = hashing.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    assert _replay_with(hashing, stored, pause=0.3, during=kill) == want
    assert killed and hashing.last.theirs < (EVENTS + CHUNK - 1) // CHUNK - 1
    with LogReader(stored) as r:
        assert r.replay(hashing=hashing, min_events=0) == want  # a new process for the next replay
    assert hashing.started == 2


def test_a_busy_process_leaves_the_hashing_to_the_caller(stored: Path, hashing: HashChild) -> None:
    want = replay_raw(_raws(stored))
    got: list[NodeState] = []
    with LogReader(stored) as r:
        ident = r._ident

    def other() -> None:
        with LogReader(stored) as r2:
            got.append(r2.replay(hashing=hashing, min_events=0))

    with hashing.session(stored, ident, seq_key(0), EVENTS) as digests:
        assert digests is not None
        with hashing.session(stored, ident, seq_key(0), EVENTS) as second:
            assert second is None  # one replay at a time
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert replay_raw(_raws(stored), None, digests) == want
    assert got == [want]


def test_another_file_is_not_read(stored: Path, tmp_path: Path, hashing: HashChild) -> None:
    want = replay_raw(_raws(stored))
    with LogReader(stored) as r:
        items = [raw for _, raw in r.read_raw()]
    with hashing.session(stored, (0, 0), seq_key(0), len(items)) as digests:
        assert digests is not None
        assert replay_raw(items, None, digests) == want
    assert hashing.last.theirs == 0


def test_the_process_exits_when_idle_and_comes_back(stored: Path) -> None:
    child = HashChild(chunk=CHUNK, idle_s=0.3)
    try:
        want = replay_raw(_raws(stored))
        with LogReader(stored) as r:
            assert r.replay(hashing=child, min_events=0) == want
            pid = child.pid
            assert pid is not None
            deadline = time.monotonic() + 10
            while child.pid is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert child.pid is None, "the hashing process stayed after idling"
            assert r.replay(hashing=child, min_events=0) == want
        assert child.started == 2
    finally:
        child.close()


def test_a_claim_that_comes_after_the_replay_ended_is_skipped(stored: Path, hashing: HashChild) -> None:
    """The caller may claim a chunk while the process is ending the replay (its end record still in the pipe):
    the process reads the claim between replays and must not take its bytes for a request."""
    want = replay_raw(_raws(stored))
    assert _replay_with(hashing, stored, pause=0.05) == want
    proc = hashing._proc
    assert proc is not None and proc.stdin is not None
    os.write(proc.stdin.fileno(), b"K" + b"RRRR" + b"C")  # a late claim (of chunk 0x52525252), a late cancel
    assert _replay_with(hashing, stored, pause=0.3) == want
    assert hashing.last.theirs > EVENTS // CHUNK // 2 and hashing.started == 1
