"""Opening a log: the tail verification every agent start pays (``storage.read_tail`` -> ``events.verify_tail``,
the offline verifier's checks from the last checkpoint), against its physical limit measured in the same run.

- measured: ``read_tail`` on a real LMDB log of 2,048 events whose last checkpoint is followed by TAIL events
  (0: a log sealed at shutdown, the usual boot; up to 1,023: a crash just before the next checkpoint, which
  comes every 1,024 events). Median of ROUNDS, wall and CPU time.
- the limit: what any verification of those events must do at least, each part bare here on the same stored
  bytes: read them from LMDB, decode each (msgspec), hash each (SHA-256, twice: the chain hash and the Merkle
  leaf), check each signature (one Ed25519 verify, the key object made once), and the checkpoint's note.

Run: ``.venv/bin/python bench/bench_tail.py``. Prints the load average beside the figures.

Measured here (2 shared vCPUs, load 4.8-5.0, 2026-12-06): tail 0: 0.31 ms (limit 0.26, 1.18x); 10: 1.67 ms
(1.06x); 100: 13.0 ms (1.03x); 1000: 170 ms (1.07x). The verifier's own read_tail before it was the one set of
checks: the same within noise (0.99-1.03x of it from 10 events on; +0.14 ms at 0, the checkpoint note's signature,
which it did not check).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import Pki
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from events import Kind, decode_event, leaf_hash, trusted_event_hash, verify_note
from storage import LmdbEventLog, LogReader
from storage._lmdb_tail import read_tail

ROUNDS = 21
TAILS = (0, 10, 100, 1000)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def _limit(reader: LogReader, start: int, pub: bytes) -> float:
    """The bare work: read, decode, the chain hash, the Merkle leaf, one Ed25519 verify per event (the key object
    made once), and the checkpoint's note."""
    key = Ed25519PublicKey.from_public_bytes(pub)
    t0 = time.perf_counter()
    for _, raw in reader.read_raw(start):
        event = decode_event(raw)
        key.verify(event.sig, trusted_event_hash(raw, event))
        leaf_hash(raw)
        if event.kind == Kind.CHECKPOINT:
            verify_note(str(event.payload["note"]), pub)
    return time.perf_counter() - t0


def main() -> None:
    pki = Pki.new()
    signer, cert = pki.log_key()
    keys = {signer.key_id: signer.public_raw}
    print(f"tail verification on open: median of {ROUNDS}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'tail':>6} {'read_tail ms':>13} {'cpu ms':>8} {'limit ms':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for tail in TAILS:
            path = Path(tmp) / f"log{tail}"
            with LmdbEventLog(path, signer, cert_der=cert, boot_id="bench", checkpoint_every=1024) as log:
                for _ in range(2048 - 2):
                    log.append(Kind.TASK_STARTED, {"sequence": "boot", "phase": "network", "task": "links"})
                log.seal("bench")
                for _ in range(tail):
                    log.append(Kind.TASK_STARTED, {"sequence": "boot", "phase": "network", "task": "links"})
            with LogReader(path) as reader:
                start = reader.next_seq() - tail - 1  # the sealing checkpoint
                wall, cpu, limit = [], [], []
                for _ in range(ROUNDS):
                    t0, c0 = time.perf_counter(), time.process_time()
                    got = read_tail(reader, keys)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    limit.append(_limit(reader, start, signer.public_raw))
                assert got.next_seq == reader.next_seq() and got.since_checkpoint == tail
                print(f"{tail:>6} {_median(wall):>13.2f} {_median(cpu):>8.2f} {_median(limit):>9.2f} "
                      f"{statistics.median(wall) / statistics.median(limit):>5.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
