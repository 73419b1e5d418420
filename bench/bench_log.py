"""Event-log benchmark: each figure beside the physical limit measured in the same run, the issue's target, and
the same work done by the ``eventsourcing`` library on SQLite (the ``bench`` extra), also in the same run.

    python bench/bench_log.py [--events 100000] [--rounds 3] [--dir DIR]

Rows:
  appends    durable signed appends/s with group commit (LmdbEventLog): asyncio tasks using append_async,
             and threads using append, for 1, 16 and 256 concurrent appenders. Limit for 1 appender: raw single
             durable LMDB puts (target >= 0.9x; peer: one durable save per event); for 16 and 256: raw Ed25519
             signing on both cores (target with 256 >= 0.6x; peer: 256 events per durable save, target >= 1.2x
             although Graven signs every event and the peer signs none)
  verify     full offline verification (verify_items, 2 threads) of a hammer.py log; limit = raw Ed25519
             verification on 2 threads (target >= 0.9x)
  replay     the stored log's fold (LogReader.replay: read from LMDB, decode + hash chain + fold, without signature
             or encoding checks, the hashing on the other core); limit = raw msgspec decoding of the bytes in
             memory (target >= 0.6x; peer: rebuilding one aggregate from all its events); also replay_raw over the
             bytes in memory on one core, and replay() over decode_event, which adds the canonical-encoding check
  raw        Ed25519 sign (1 and 2 threads) / verify (1 and 2 threads), LMDB durable puts 256 per transaction and
             one per transaction (values of the log's mean event size)

Every round measures the limit, then the figure, then the peer; a ratio is the median of the per-round ratios.
The process runs with the agent's collector settings (gc.freeze after start-up, a larger young generation).
Notes on where the time goes (profiles) and the measured history: bench/NOTES-log.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
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
from _peer import PEER, peer_setup, with_peer
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
    ratio: float | None = None
    target: float | None = None
    peer: float | None = None
    peer_ratio: float | None = None
    peer_target: float | None = None

    def met(self) -> list[bool]:
        out = []
        if self.target is not None and self.ratio is not None:
            out.append(self.ratio >= self.target)
        if self.peer_target is not None and self.peer_ratio is not None:
            out.append(self.peer_ratio >= self.peer_target)
        return out


def median_of(rounds: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(rounds))


Measured = tuple[float, float, float, float | None, float | None]


def paired(rounds: int, figure: Callable[[], float], limit: Callable[[], float],
           peer: Callable[[], float | None] | None = None) -> Measured:
    """Each round measures the limit, the figure, then the peer; medians of figure, limit, figure/limit per round,
    peer and figure/peer per round (a machine whose load changes during the run then still gives fair ratios)."""
    rows = []
    for _ in range(rounds):
        lim = limit()
        value = figure()
        rows.append((value, lim, peer() if peer else None))
    med = statistics.median
    peers = [(v, p) for v, _, p in rows if p]
    return (med(v for v, _, _ in rows), med(lim for _, lim, _ in rows), med(v / lim for v, lim, _ in rows),
            med(p for _, p in peers) if peers else None, med(v / p for v, p in peers) if peers else None)


def cpu_seconds() -> float:
    """CPU time of this process and of its children waited for (the log's signing process, at close)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_per_item(fn: Callable[[], float], n: int, into: list[float]) -> Callable[[], float]:
    """``fn`` that also records its CPU time per item in ``into``: unlike a rate, this hardly depends on what
    else the machine runs."""

    def run() -> float:
        before = cpu_seconds()
        value = fn()
        into.append((cpu_seconds() - before) / n)
        return value

    return run


# -- raw limits (one run each) --------------------------------------------------------------------------------
_SIGN_KEY = Ed25519PrivateKey.generate()
_VERIFY_MSGS = [os.urandom(32) for _ in range(256)]  # the log signs 32-byte event hashes
_VERIFY_SIGS = [_SIGN_KEY.sign(m) for m in _VERIFY_MSGS]


def raw_sign(threads: int = 1) -> float:
    msg, sign = _VERIFY_MSGS[0], _SIGN_KEY.sign

    def chunk(n: int) -> None:
        for _ in range(n):
            sign(msg)

    t = time.perf_counter()
    if threads == 1:
        chunk(SIGN_N)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(chunk, [SIGN_N // threads] * threads))
    return SIGN_N / (time.perf_counter() - t)


def raw_verify(threads: int) -> float:
    pub = _SIGN_KEY.public_key()

    def chunk(n: int) -> None:
        for i in range(n):
            pub.verify(_VERIFY_SIGS[i & 255], _VERIFY_MSGS[i & 255])

    t = time.perf_counter()
    if threads == 1:
        chunk(VERIFY_N)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(chunk, [VERIFY_N // threads] * threads))
    return VERIFY_N / (time.perf_counter() - t)


def raw_lmdb(root: Path, per_txn: int, value_size: int, n: int) -> float:
    value = os.urandom(value_size)
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


def _x(value: float | None, target: float | None) -> str:
    if value is None:
        return ""
    met = "" if target is None else (" ok" if value >= target else " NO")
    return f"{value:.2f}x{met}"


def print_table(rows: list[Row]) -> None:
    print(f"\n(ratios: medians of per-round ratios, each figure over the limit measured just before it, and over "
          f"{PEER} measured just after it; a target follows each ratio's 'ok' or 'NO')")
    print(f"{'measure':<44} {'Graven/s':>9}  {'limit (same run)':<23} {'limit/s':>8} {'ratio':>11} "
          f"{'target':>6}  {PEER + '/s':>16} {'Graven/peer':>11} {'target':>6}")
    print("-" * 149)
    for r in rows:
        limit = f"{r.limit:>8,.0f}" if r.limit else ""
        peer = f"{r.peer:>16,.0f}" if r.peer else ""
        target = f"{r.target:.1f}x" if r.target else ""
        peer_target = f"{r.peer_target:.1f}x" if r.peer_target else ""
        print(f"{r.what:<44} {r.value:>9,.0f}  {r.limit_name:<23} {limit:>8} {_x(r.ratio, r.target):>11} "
              f"{target:>6}  {peer:>16} {_x(r.peer_ratio, r.peer_target):>11} {peer_target:>6}")
    missed = [r.what.strip() for r in rows if not all(r.met())]
    print(f"\n{'targets missed: ' + '; '.join(missed) if missed else 'all targets met'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000, help="size of the hammer log to verify and replay")
    ap.add_argument("--appends", type=int, default=60_000, help="events per concurrent appends figure")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (median)")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one under /var/tmp)")
    args = ap.parse_args()
    rounds = args.rounds
    start_load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="graven-bench-log-", dir=args.dir or "/var/tmp"))
    pki = Pki.new()
    gc_note = agent_gc()
    print(f"graven event-log benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"lmdb {'.'.join(map(str, lmdb.version()))}, work dir {root}\n"
          f"gc as in the agent: {gc_note}\n"
          f"each figure is the median of {rounds} runs; each limit is measured right before its figure, every round\n"
          f"peer: {peer_setup(root)}\n",
          flush=True)
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

        def row(what: str, measured: Measured, limit_name: str, target: float | None = None,
                peer_target: float | None = None) -> Row:
            value, limit, ratio, peer, peer_ratio = measured
            return Row(what, value, limit_name, limit, ratio, target, peer, peer_ratio,
                       peer_target if peer is not None else None)

        def peer_appends(per_save: int, n: int) -> Callable[[], float | None]:
            return lambda: with_peer(root, lambda p: p.appends(PAYLOAD, n, per_save))

        # appends: 1, 16 and 256 concurrent appenders, asyncio tasks then threads
        cpu: dict[str, list[float]] = {}
        sign_cpu: list[float] = []
        cpu_per_item(raw_sign, SIGN_N, sign_cpu)()
        for one, label, fn in (("asyncio task (append_async)", "asyncio tasks (append_async)", appends_async),
                               ("thread (append)", "threads (append)", appends_threads)):
            for k in (1, 16, 256):
                n = 3000 if k == 1 else args.appends
                figure = functools.partial(fn, root, pki, k, n)
                if k > 1:  # a lone appender waits for its fsync: its CPU time says little
                    figure = cpu_per_item(figure, n // k * k, cpu.setdefault(f"{k} {label}", []))
                if k == 1:
                    note(row(f"appends, 1 {one}", paired(rounds, figure, lambda: raw_lmdb(root, 1, mean, 2000),
                                                         peer_appends(1, 1500)),
                             "raw durable put, 1/txn", 0.9))
                elif k == 16:
                    note(row(f"appends, {k} {label}", paired(rounds, figure, lambda: raw_sign(2)),
                             "raw sign, 2 threads"))
                else:
                    note(row(f"appends, {k} {label}", paired(rounds, figure, lambda: raw_sign(2),
                                                             peer_appends(256, 256 * 160)),
                             "raw sign, 2 threads", 0.6, 1.2))

        # full verification with both cores
        ca = pki.ca_cert

        def verify_once() -> float:
            t = time.perf_counter()
            verify_items(iter(items), ca, threads=2)
            return len(items) / (time.perf_counter() - t)

        note(row("verify_items, 2 threads", paired(rounds, verify_once, lambda: raw_verify(2)),
                 "raw verify, 2 threads", 0.9))

        # replay without signature checks: from the stored log (LogReader.replay: its hashing process takes the
        # chain's SHA-256 to the other core), then replay_raw over the bytes in memory on one core
        stored = LogReader(made.path)

        def replay_once(how: str) -> float:
            t = time.perf_counter()
            if how == "strict":
                replay(decode_event(r, seq=i) for i, r in enumerate(raws))
            elif how == "stored":
                stored.replay()
            else:
                replay_raw(raws)
            return len(raws) / (time.perf_counter() - t)

        # the limit is the better of two raw decodes: the first after a stored replay can find the bytes evicted
        # from the CPU's caches by the replay's reads and run slower, which would flatter the ratio
        def best_raw_decode() -> float:
            return max(raw_decode(raws), raw_decode(raws))

        note(row("replay (stored log, hashing process)",
                 paired(rounds, lambda: replay_once("stored"), best_raw_decode,
                        lambda: with_peer(root, lambda p: p.replay(PAYLOAD, 50_000))),
                 "raw msgspec decode", 0.6))
        note(row("  replay_raw (in memory, one core)", paired(rounds, lambda: replay_once("raw"), best_raw_decode),
                 "raw msgspec decode"))
        note(row("  replay(decode_event): + canonical check", paired(rounds, lambda: replay_once("strict"),
                                                                     best_raw_decode),
                 "raw msgspec decode"))
        stored.close()

        rows += [Row("raw Ed25519 sign, 1 thread", median_of(rounds, cpu_per_item(raw_sign, SIGN_N, sign_cpu))),
                 Row("raw Ed25519 sign, 2 threads", median_of(rounds, lambda: raw_sign(2))),
                 Row("raw Ed25519 verify, 1 thread", median_of(rounds, lambda: raw_verify(1))),
                 Row("raw Ed25519 verify, 2 threads", median_of(rounds, lambda: raw_verify(2))),
                 Row(f"raw LMDB durable puts, 256 per txn ({mean} B)",
                     median_of(rounds, lambda: raw_lmdb(root, 256, mean, 256 * 200))),
                 Row(f"raw LMDB durable puts, 1 per txn ({mean} B)",
                     median_of(rounds, lambda: raw_lmdb(root, 1, mean, 2000)))]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print_table(rows)
    per_sign = statistics.median(sign_cpu)
    print(f"\nCPU time per append (this process and its signing child) in signatures ({per_sign * 1e6:.1f} us "
          "CPU each, same run):\nload-independent where appends/s are not; with both cores to itself a row's rate "
          "is at most 2 / x signatures' worth, i.e. 1 / x of raw signing on 2 threads")
    for label, values in cpu.items():
        x = statistics.median(values) / per_sign
        print(f"  appends, {label:<40} {x:5.2f}x   (bound: {1 / x:.2f}x of raw signing on 2 threads)")
    end_load = os.getloadavg()[0]
    print(f"load average (1 min) before {start_load:.2f}, after {end_load:.2f}" + (
        ": other processes shared these cores; every figure and limit is lower, the ratios less so"
        if max(start_load, end_load) > 2.2 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
