"""Every write path of the LMDB log at once: lone blocking appenders (written in their own thread), threads that
crowd the pipeline, bursts of asyncio appenders (big batches, partly signed by the child process), flushes, seals
and a key rotation in the middle. Every acknowledged event is stored once, in each appender's order, and the log
verifies with the CA alone and reopens writable."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from events import Event, Kind, verify_items
from storage import LmdbEventLog, LogReader


def test_every_write_path_at_once(tmp_path: Path, pki: Any) -> None:
    path = tmp_path / "log"
    log = LmdbEventLog(path, pki.signer, boot_id="mixed", cert_der=pki.cert_der, checkpoint_every=300)
    acked: dict[tuple[str, int, int], Event] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    new, new_cert = pki.new_signer()

    def note(who: str, w: int, i: int, ev: Event) -> None:
        with lock:
            acked[(who, w, i)] = ev

    def thread_appender(w: int) -> None:
        try:
            for i in range(120):
                note("thread", w, i, log.append(Kind.TASK_STARTED, {"who": "thread", "w": w, "i": i}))
                if w == 0 and i % 20 == 0:
                    time.sleep(0.002)  # now and then alone: the lone-appender path
        except BaseException as exc:
            errors.append(exc)

    def asyncio_bursts() -> None:
        async def worker(w: int) -> None:
            for i in range(6):
                note("task", w, i, await log.append_async(Kind.TASK_STOPPED, {"who": "task", "w": w, "i": i}))

        async def main() -> None:
            for burst in range(3):
                await asyncio.gather(*(worker(burst * 1000 + w) for w in range(256)))

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    def control() -> None:
        try:
            for k in range(6):
                time.sleep(0.01)
                if k == 2:
                    log.rotate(new, new_cert)
                elif k % 2:
                    log.seal(f"test {k}")
                else:
                    log.flush()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=thread_appender, args=(w,)) for w in range(4)]
    workers += [threading.Thread(target=asyncio_bursts), threading.Thread(target=control)]
    try:
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert not errors, errors
        child_used = log._child._proc is not None
    finally:
        log.close()

    assert child_used, "no batch was big enough for the signing process"
    assert len(acked) == 4 * 120 + 3 * 256 * 6
    with LogReader(path) as reader:
        stored = list(reader.read())
        report = verify_items(reader.read_raw(), pki.ca_cert)
    assert [e.seq for e in stored] == list(range(len(stored)))
    by_key: dict[tuple[str, int, int], list[Event]] = {}
    for e in stored:
        if e.kind in (Kind.TASK_STARTED, Kind.TASK_STOPPED):
            by_key.setdefault((e.payload["who"], e.payload["w"], e.payload["i"]), []).append(e)
    assert set(by_key) == set(acked)
    assert all(by_key[k] == [ev] for k, ev in acked.items()), "an acknowledged event is missing, doubled or changed"
    for who, w in {(who, w) for who, w, _ in acked}:
        seqs = [ev.seq for (h, x, _), ev in sorted(acked.items()) if (h, x) == (who, w)]
        assert seqs == sorted(seqs)
    assert report.events == len(stored)
    assert [k.key_id for k in report.keys] == [pki.signer.key_id, new.key_id]
    # the next writer (with the rotated key) continues the chain
    with LmdbEventLog(path, new, boot_id="after", checkpoint_every=300) as again:
        assert again.broken is None
        again.append(Kind.TASK_STARTED, {"after": True})
