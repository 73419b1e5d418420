"""Crash safety: a child appends from threads and asyncio tasks, acknowledging each durable event on stdout;
we SIGKILL it at random moments, and after every kill the log must open writable, verify with the CA
certificate alone, and hold every acknowledged event with its payload. The next child continues the chain."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from errors import StorageError
from events import Kind, verify_items
from pki import private_key_pem
from storage import LmdbEventLog, LogReader

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 22  # kills while appending (each 20-200 ms after the child is ready)
EARLY_KILLS = 3  # and a few during start-up: imports, opening, the tail check, the genesis event


def _spawn(path: Path, key: Path, cert: Path, run: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # every third run appends from 200 asyncio tasks with checkpoints 500 apart: big batches, partly signed by
    # the signing process (storage/_sign_child.py), are killed too
    tasks, every = ("200", "500") if run % 3 == 2 else ("8", "37")
    return subprocess.Popen([sys.executable, str(CHILD), str(path), str(key), str(cert), str(run), "3", tasks, every],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if not line.startswith("READY") or time.monotonic() > deadline:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"child did not start: {line!r} {err[-2000:]}")
    return line


def _acks(stdout: str) -> list[tuple[int, int, int, int]]:
    out = []
    for line in stdout.splitlines(keepends=True):
        if line.startswith("ACK ") and line.endswith("\n"):  # a line cut by the kill was never acknowledged
            _, seq, run, w, i = line.split()
            out.append((int(seq), int(run), int(w), int(i)))
    return out


def _empty(path: Path) -> bool:
    try:
        with LogReader(path) as reader:
            return reader.next_seq() == 0
    except StorageError:  # no data.mdb yet, or no events database in it
        return True


def _check(path: Path, pki: Any, acked: dict[int, tuple[int, int, int]]) -> int:
    """The log opens writable, verifies, and holds every acknowledged event; returns its length."""
    if _empty(path):  # killed before its genesis event was durable: nothing was acknowledged, nothing to check
        assert not acked
        return 0
    log = LmdbEventLog(path, pki.signer, boot_id="checker", checkpoint_every=37)
    try:
        assert log.broken is None, f"log opened read-only after a kill: {log.broken}"
        n = log.next_seq()
    finally:
        log.close()
    with LogReader(path) as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
        assert report.events == n
        stored = {e.seq: e for e in reader.read()}
    for seq, (run, w, i) in acked.items():
        ev = stored.get(seq)
        assert ev is not None, f"acknowledged seq {seq} (run {run}) is missing after the kill"
        assert ev.payload == {"run": run, "w": w, "i": i}, f"seq {seq} holds {ev.payload}"
        assert ev.kind in (Kind.TASK_STARTED, Kind.TASK_STOPPED) and ev.boot_id == f"run-{run}"
    return n


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path, pki: Any) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    key, cert = tmp_path / "log-key.pem", tmp_path / "log-cert.der"
    key.write_bytes(private_key_pem(pki.signer.private_key))
    cert.write_bytes(pki.cert_der)
    path = tmp_path / "log"
    acked: dict[int, tuple[int, int, int]] = {}
    plan = ["ready"] * KILLS + ["early"] * EARLY_KILLS
    rng.shuffle(plan)
    length, per_run = 0, []
    for run, when in enumerate(plan):
        proc = _spawn(path, key, cert, run)
        if when == "ready":
            ready = _wait_ready(proc)
            assert int(ready.split()[1]) >= length  # it picked up where the last one stopped
        time.sleep(rng.uniform(0.02, 0.2) if when == "ready" else rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}): {err[-2000:]}"
        new = _acks(out)
        for seq, r, w, i in new:
            assert seq not in acked, f"seq {seq} acknowledged twice"
            assert r == run
            acked[seq] = (r, w, i)
        per_run.append(len(new))
        length = _check(path, pki, acked)
    # most kills landed while appending (a very slow machine may let a 20 ms one land before the first ack)
    assert sum(1 for p, n in zip(plan, per_run, strict=True) if p == "ready" and n > 0) >= KILLS // 2, per_run
    assert len(acked) > 500, per_run
    # one last, clean run continues the chain and seals it
    with LmdbEventLog(path, pki.signer, boot_id="final", checkpoint_every=37) as log:
        log.append(Kind.TASK_STARTED, {"final": True})
        log.seal("shutdown")
    with LogReader(path) as reader:
        report = verify_items(reader.read_raw(), pki.ca_cert)
    assert report.sealed and report.last_seq in (length + 1, length + 2)  # + a checkpoint, when one was due
    assert report.boots >= KILLS // 2  # every run that got as far as appending wrote under its own boot id
