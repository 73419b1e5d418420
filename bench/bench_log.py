"""Event-log benchmark: each figure beside the physical limit measured in the same run, and the issue's target.

    python bench/bench_log.py [--events 100000] [--rounds 3] [--dir DIR]

Rows:
  appends    durable signed appends/s with group commit (LmdbEventLog): asyncio tasks using append_async,
             and threads using append, for 1, 16 and 256 concurrent appenders; limit = raw Ed25519 signing
             on one core (target with 256 appenders: >= 0.8x), and for 1 appender raw single durable LMDB puts
  verify     full offline verification (verify_items, 2 threads) of a hammer.py log; limit = raw Ed25519
             verification on one thread times the 2 cores used (target >= 0.8x), and raw on 2 threads
  replay     replay_raw: decode + hash chain + fold, without signature or encoding checks (target >= 400,000/s);
             also replay() over decode_event, which adds the canonical-encoding check; limit = raw msgspec decoding
  raw        Ed25519 sign / verify (1 and 2 threads), LMDB durable puts 256 per transaction and one per
             transaction (values of the log's mean event size)

The process runs with the agent's collector settings (gc.freeze after start-up, a larger young generation).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hammer
import lmdb
import msgspec
from _util import Pki, agent_gc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import Event, Kind, replay, replay_raw, verify_items
from events._record import decode_event
from storage import LmdbEventLog, LogReader, seq_key

SIGN_N = 20_000
VERIFY_N = 10_000


@dataclass
class Row:
    what: str
    value: float
    limit_name: str = ""
    limit: float | None = None
    target: str = ""
    ok: bool | None = None


def median_rate(rounds: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(rounds))


# -- raw limits ---------------------------------------------------------------------------------------------------
def raw_sign(rounds: int) -> float:
    key = Ed25519PrivateKey.generate()
    msg = os.urandom(32)  # the log signs a 32-byte event hash

    def once() -> float:
        t = time.perf_counter()
        for _ in range(SIGN_N):
            key.sign(msg)
        return SIGN_N / (time.perf_counter() - t)

    return median_rate(rounds, once)


def raw_verify(rounds: int, threads: int) -> float:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msgs = [os.urandom(32) for _ in range(256)]
    sigs = [key.sign(m) for m in msgs]

    def chunk(n: int) -> None:
        for i in range(n):
            pub.verify(sigs[i & 255], msgs[i & 255])

    def once() -> float:
        t = time.perf_counter()
        if threads == 1:
            chunk(VERIFY_N)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(chunk, [VERIFY_N // threads] * threads))
        return VERIFY_N / (time.perf_counter() - t)

    return median_rate(rounds, once)


def raw_lmdb(root: Path, rounds: int, per_txn: int, value_size: int, n: int) -> float:
    value = os.urandom(value_size)

    def once() -> float:
        path = Path(tempfile.mkdtemp(dir=root, prefix="raw-lmdb-"))
        env = lmdb.open(str(path), map_size=1 << 30, max_dbs=2, sync=True, metasync=True)
        db = env.open_db(b"events")
        try:
            t = time.perf_counter()
            seq = 0
            while seq < n:
                with env.begin(write=True, db=db) as txn:
                    for _ in range(per_txn):
                        txn.put(seq_key(seq), value, append=True)
                        seq += 1
            return seq / (time.perf_counter() - t)
        finally:
            env.close()
            shutil.rmtree(path)

    return median_rate(rounds, once)


def raw_decode(raws: list[bytes]) -> float:
    dec = msgspec.msgpack.Decoder(Event)
    t = time.perf_counter()
    for r in raws:
        dec.decode(r)
    return len(raws) / (time.perf_counter() - t)


# -- the log ---------------------------------------------------------------------------------------------------------
PAYLOAD = {"sequence": "boot", "phase": "network", "task": "addresses", "duration_ns": 12_345_678, "outcome": "ok"}


def appends_async(root: Path, pki: Pki, appenders: int, n: int) -> float:
    signer, cert = pki.log_key()
    path = Path(tempfile.mkdtemp(dir=root, prefix="appends-"))
    log = LmdbEventLog(path, signer, boot_id="bench", cert_der=cert)
    per = max(1, n // appenders)

    async def worker() -> None:
        for _ in range(per):
            await log.append_async(Kind.TASK_STOPPED, PAYLOAD)

    async def main() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(appenders)))
        return per * appenders / (time.perf_counter() - t)

    try:
        return asyncio.run(main())
    finally:
        log.close()
        shutil.rmtree(path)


def appends_threads(root: Path, pki: Pki, appenders: int, n: int) -> float:
    signer, cert = pki.log_key()
    path = Path(tempfile.mkdtemp(dir=root, prefix="appends-"))
    log = LmdbEventLog(path, signer, boot_id="bench", cert_der=cert)
    per = max(1, n // appenders)
    start = threading.Barrier(appenders + 1)

    def worker() -> None:
        start.wait()
        for _ in range(per):
            log.append(Kind.TASK_STOPPED, PAYLOAD)

    threads = [threading.Thread(target=worker) for _ in range(appenders)]
    try:
        for th in threads:
            th.start()
        start.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        return per * appenders / (time.perf_counter() - t)
    finally:
        log.close()
        shutil.rmtree(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="size of the hammer log to verify and replay")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (median)")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one under /var/tmp)")
    args = ap.parse_args()
    rounds = args.rounds
    root = Path(tempfile.mkdtemp(prefix="graven-bench-log-", dir=args.dir or "/var/tmp"))
    pki = Pki.new()
    gc_note = agent_gc()
    print(f"graven event-log benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"lmdb {'.'.join(map(str, lmdb.version()))}, work dir {root}\n"
          f"gc as in the agent: {gc_note}\n"
          f"each figure is the median of {rounds} runs; each limit is measured right beside its figure\n", flush=True)
    rows: list[Row] = []
    try:
        t = time.perf_counter()
        made = hammer.write_log(root / "hammer", args.events, appenders=256, pki=pki)
        print(f"hammer: {made.events} events, {made.boots} boots, in {time.perf_counter() - t:.1f} s "
              f"({made.appends_per_s:,.0f} appends/s, 256 in flight, reopening the log at every boot)", flush=True)
        with LogReader(made.path) as reader:
            items = list(reader.read_raw())
        raws = [raw for _, raw in items]
        mean = sum(map(len, raws)) // len(raws)

        def note(row: Row) -> None:
            rows.append(row)
            lim = f" (limit {row.limit:,.0f})" if row.limit else ""
            print(f"  {row.what}: {row.value:,.0f}/s{lim}", flush=True)

        # appends: 1, 16 and 256 concurrent appenders, asyncio tasks then threads
        for label, fn in (("asyncio tasks (append_async)", appends_async), ("threads (append)", appends_threads)):
            for k in (1, 16, 256):
                n = 3000 if k == 1 else 60_000
                value = median_rate(rounds, lambda fn=fn, k=k, n=n: fn(root, pki, k, n))
                what = f"appends, {k} {label}" if k > 1 else f"appends, 1 {label.split()[0][:-1]}"
                if k == 1:
                    note(Row(what, value, "raw durable put, 1/txn", raw_lmdb(root, rounds, 1, mean, 2000)))
                else:
                    sign = raw_sign(rounds)
                    target = k == 256
                    note(Row(what, value, "raw sign, 1 core", sign, ">= 0.8x" if target else "",
                             value >= 0.8 * sign if target else None))

        # full verification with both cores
        ca = pki.ca_cert

        def verify_once() -> float:
            t = time.perf_counter()
            verify_items(iter(items), ca, threads=2)
            return len(items) / (time.perf_counter() - t)

        v = median_rate(rounds, verify_once)
        verify1, verify2 = raw_verify(rounds, 1), raw_verify(rounds, 2)
        note(Row("verify_items, 2 threads", v, "raw verify 1 thread x 2", 2 * verify1, ">= 0.8x",
                 v >= 0.8 * 2 * verify1))
        rows.append(Row("  same, against raw verify on 2 threads", v, "raw verify 2 threads", verify2))

        # replay without signature checks
        def replay_once(strict: bool) -> float:
            t = time.perf_counter()
            if strict:
                replay(decode_event(r, seq=i) for i, r in enumerate(raws))
            else:
                replay_raw(raws)
            return len(raws) / (time.perf_counter() - t)

        r = median_rate(rounds, lambda: replay_once(False))
        decode = median_rate(rounds, lambda: raw_decode(raws))
        note(Row("replay_raw (decode + chain + fold)", r, "raw msgspec decode", decode, ">= 400,000/s",
                 r >= 400_000))
        note(Row("  replay(decode_event): + canonical check", median_rate(rounds, lambda: replay_once(True)),
                 "raw msgspec decode", decode))

        rows += [Row("raw Ed25519 sign, 1 thread", raw_sign(rounds)), Row("raw Ed25519 verify, 1 thread", verify1),
                 Row("raw Ed25519 verify, 2 threads", verify2),
                 Row(f"raw LMDB durable puts, 256 per txn ({mean} B)", raw_lmdb(root, rounds, 256, mean, 256 * 200)),
                 Row(f"raw LMDB durable puts, 1 per txn ({mean} B)", raw_lmdb(root, rounds, 1, mean, 2000))]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'measure':<46} {'per second':>11}  {'limit (same run)':<24} {'limit/s':>10} {'ratio':>6}  "
          f"{'target':<13} met")
    print("-" * 124)
    for row in rows:
        limit = f"{row.limit:>10,.0f}" if row.limit else " " * 10
        ratio = f"{row.value / row.limit:>6.2f}" if row.limit else " " * 6
        ok = "" if row.ok is None else ("yes" if row.ok else "NO")
        print(f"{row.what:<46} {row.value:>11,.0f}  {row.limit_name:<24} {limit} {ratio}  {row.target:<13} {ok}")
    missed = [r.what for r in rows if r.ok is False]
    print(f"\n{'targets missed: ' + '; '.join(missed) if missed else 'all targets met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
