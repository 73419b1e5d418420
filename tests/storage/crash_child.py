"""Child process of ``test_crash.py``: append forever from several threads (and asyncio tasks), printing one
line per acknowledged event, until the parent kills it.

    python crash_child.py LOG_DIR KEY_PEM CERT_DER RUN THREADS [TASKS CHECKPOINT_EVERY]

(TASKS asyncio tasks, 8 by default; with hundreds and checkpoints far apart, batches are big enough for part of
them to be signed by the signing process.)

Lines: ``READY <next seq>`` once the log is open, then ``ACK <seq> <run> <worker> <i>`` for every append that
returned (so it is durable); the payload of that event is ``{"run": run, "w": worker, "i": i}``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from events import Kind
from pki import Ed25519Signer, load_private_key
from storage import LmdbEventLog

_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> None:
    path, key_pem, cert_der, run, threads = sys.argv[1:6]
    n_tasks, every = (int(a) for a in sys.argv[6:8]) if len(sys.argv) > 7 else (8, 37)
    signer = Ed25519Signer(load_private_key(Path(key_pem).read_bytes()))
    log = LmdbEventLog(path, signer, boot_id=f"run-{run}", cert_der=Path(cert_der).read_bytes(),
                       checkpoint_every=every)
    say(f"READY {log.next_seq()}")

    def worker(w: int) -> None:
        i = 0
        while True:
            ev = log.append(Kind.TASK_STARTED, {"run": int(run), "w": w, "i": i})
            say(f"ACK {ev.seq} {run} {w} {i}")
            i += 1

    async def tasks() -> None:
        async def one(w: int) -> None:
            i = 0
            while True:
                ev = await log.append_async(Kind.TASK_STOPPED, {"run": int(run), "w": w, "i": i})
                say(f"ACK {ev.seq} {run} {w} {i}")
                i += 1

        await asyncio.gather(*(one(1000 + t) for t in range(n_tasks)))

    for w in range(int(threads)):
        threading.Thread(target=worker, args=(w,), daemon=True).start()
    asyncio.run(tasks())


if __name__ == "__main__":
    main()
