"""Big batches are partly signed by a child process (storage/_sign_child.py): the log it helps write verifies, a
child that dies mid-way costs no append, and the child goes away with the log (or with the writer's process)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import Event, Kind, verify_items
from pki import private_key_pem
from storage import LmdbEventLog, LogReader, _sign_child
from storage._sign_child import ChildSigner

ROOT = Path(__file__).resolve().parents[2]


def _burst(log: LmdbEventLog, tasks: int, each: int, during: Any = None) -> list[Event]:
    """``tasks`` asyncio tasks appending ``each`` events at once (batches well over CHILD_BATCH)."""

    async def main() -> list[Event]:
        async def worker(t: int) -> list[Event]:
            out = []
            for i in range(each):
                out.append(await log.append_async(Kind.TASK_STARTED, {"t": t, "i": i}))
                if during is not None and t == 0 and i == each // 2:
                    during()
            return out

        return [e for r in await asyncio.gather(*(worker(t) for t in range(tasks))) for e in r]

    return asyncio.run(main())


def _child_pid(log: LmdbEventLog) -> int | None:
    proc = log._child._proc
    return None if proc is None else proc.pid


def test_big_batches_signed_by_the_child_verify(tmp_path: Path, pki: Any) -> None:
    log = LmdbEventLog(tmp_path / "log", pki.signer, boot_id="b", cert_der=pki.cert_der, checkpoint_every=300)
    try:
        acked = _burst(log, 256, 12)
        pid = _child_pid(log)
        assert pid is not None and not log._child.failed, "no batch went to the signing process"
        second = log._child2._proc.pid if log._child2._proc is not None else None
        assert second is not None and not log._child2.failed, "the rest of a big batch went to no second child"
        assert len({e.seq for e in acked}) == 256 * 12
    finally:
        log.close()
    for p in (pid, second):
        assert not Path(f"/proc/{p}").exists() or _zombie(p), "a signing process outlived its log"
    with LogReader(tmp_path / "log") as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
        stored = {e.seq: e for e in reader.read()}
    assert report.events == len(stored) and all(stored[e.seq] == e for e in acked)


def test_the_second_child_is_given_the_next_part_while_it_signs_this_one(tmp_path: Path, pki: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A part prepared ahead hands its rest to the second child at once: the child then has it queued while the
    part before is collected and completed, rather than waiting for it idle."""
    log = LmdbEventLog(tmp_path / "log", pki.signer, boot_id="b", cert_der=pki.cert_der)
    in_flight: list[int] = []
    give = log._child2.give

    def counting_give(signer: object, digests: list[bytes]) -> int:
        took = give(signer, digests)
        in_flight.append(len(log._child2._pending))
        return took

    monkeypatch.setattr(log._child2, "give", counting_give)
    try:
        acked = _burst(log, 256, 16)
    finally:
        log.close()
    assert in_flight and max(in_flight) >= 2, f"the second child never had a next part queued: {in_flight[:20]}"
    with LogReader(tmp_path / "log") as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
        stored = {e.seq: e for e in reader.read()}
    assert report.events == len(stored) and len(acked) == 256 * 16 and all(stored[e.seq] == e for e in acked)


def test_a_child_that_dies_costs_no_append(tmp_path: Path, pki: Any) -> None:
    log = LmdbEventLog(tmp_path / "log", pki.signer, boot_id="b", cert_der=pki.cert_der)
    try:
        acked = _burst(log, 256, 4)
        pid = _child_pid(log)
        assert pid is not None
        second = log._child2._proc.pid if log._child2._proc is not None else None
        assert second is not None

        def kill_both() -> None:
            os.kill(pid, signal.SIGKILL)
            os.kill(second, signal.SIGKILL)

        acked += _burst(log, 256, 8, during=kill_both)
        assert log._child.failed  # noticed; the rest was signed in the writer's process (without the second)
        acked += _burst(log, 256, 2)
    finally:
        log.close()
    with LogReader(tmp_path / "log") as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
        stored = {e.seq: e for e in reader.read()}
    assert report.events == len(stored) and len(acked) == 256 * 14
    assert all(stored[e.seq] == e for e in acked)


def test_a_stuck_child_is_given_up_and_the_batch_signed_here(tmp_path: Path, pki: Any,
                                                              monkeypatch: Any) -> None:
    monkeypatch.setattr(_sign_child, "TIMEOUT_S", 0.5)
    log = LmdbEventLog(tmp_path / "log", pki.signer, boot_id="b", cert_der=pki.cert_der)
    try:
        acked = _burst(log, 256, 2)
        pid = _child_pid(log)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        t = time.monotonic()
        acked += _burst(log, 256, 4)
        assert log._child.failed and time.monotonic() - t < 30
    finally:
        log.close()
    with LogReader(tmp_path / "log") as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
        stored = {e.seq: e for e in reader.read()}
    assert report.events == len(stored) and all(stored[e.seq] == e for e in acked)


def test_the_child_ends_with_the_writers_process(tmp_path: Path, pki: Any) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(private_key_pem(pki.signer.private_key))
    (tmp_path / "cert.der").write_bytes(pki.cert_der)
    code = textwrap.dedent(f"""
        import asyncio, sys, time
        from pathlib import Path
        from events import Kind
        from pki import Ed25519Signer
        from pki import load_private_key
        from storage import LmdbEventLog
        signer = Ed25519Signer(load_private_key(Path({str(key)!r}).read_bytes()))
        log = LmdbEventLog({str(tmp_path / "log")!r}, signer, boot_id="b",
                           cert_der=Path({str(tmp_path / "cert.der")!r}).read_bytes())
        async def main():
            await asyncio.gather(*(log.append_async(Kind.TASK_STARTED, {{"i": i}}) for i in range(512)))
        asyncio.run(main())
        print(log._child._proc.pid, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and not _zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or _zombie(child), "the signing process outlived the writer"


def test_child_signer_answers_two_requests_in_the_order_sent() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    first, second = [os.urandom(32) for _ in range(100)], [os.urandom(32) for _ in range(70)]
    child = ChildSigner()
    try:
        assert child.send(raw, first) and child.send(raw, second)  # the second waits in the child's pipe
        assert child.receive() == [key.sign(d) for d in first]
        assert child.receive() == [key.sign(d) for d in second]
        assert child.receive() is None  # nothing left in flight
    finally:
        child.close()


def test_child_signer_refuses_what_it_cannot_sign() -> None:
    child = ChildSigner()
    try:
        assert not child.send(b"short key", [b"\x00" * 32])
        assert not child.send(b"\x01" * 32, [b"not 32 bytes"])
        assert child.receive() is None
    finally:
        child.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False


def test_pipe_io_holding_the_gil_falls_back_when_the_pipe_is_full_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write and read keep the GIL (libc through ctypes); a pipe that is full, empty, delivers in parts or
    closes takes the usual path: every byte arrives in order, a short read means the writer closed its end, and
    silence is a TimeoutError."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    data = os.urandom(1 << 20)  # far more than a pipe holds: the first write is partial, the rest waits for room
    got = bytearray()

    def drain() -> None:
        while len(got) < len(data):
            time.sleep(0.001)
            got.extend(_sign_child._read_exactly(r, min(50_000, len(data) - len(got))))

    reader = threading.Thread(target=drain)
    reader.start()
    _sign_child._write_all(w, data)
    reader.join(10)
    assert bytes(got) == data

    def later() -> None:  # nothing there at first, then two parts
        time.sleep(0.05)
        os.write(w, b"abc")
        time.sleep(0.05)
        os.write(w, b"defg")

    writer = threading.Thread(target=later)
    writer.start()
    assert _sign_child._read_exactly(r, 7) == b"abcdefg"
    writer.join()
    monkeypatch.setattr(_sign_child, "TIMEOUT_S", 0.2)
    with pytest.raises(TimeoutError):
        _sign_child._read_exactly(r, 1)
    os.write(w, b"xy")
    os.close(w)
    assert _sign_child._read_exactly(r, 5) == b"xy"  # the writer closed its end
    os.close(r)
