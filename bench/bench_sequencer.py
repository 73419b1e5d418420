"""Sequencer overhead: what the runner adds per task and per phase, beside an empty asyncio task in the same run.

    python bench/bench_sequencer.py [--tasks 200] [--rounds 5] [--dir DIR]

A task here does nothing (``async def noop(ctx): pass``), so its time is all runner: the task's asyncio task,
its timeout scope, its two signed events (``task.started``, ``task.stopped``) submitted to the log, and the
payload building. Rows:

  empty task     ``await asyncio.create_task(noop())``: the floor any concurrent task pays (the limit)
  per task       one sequence, one phase of N concurrent tasks; (time - one-task sequence) / (N - 1)
  per phase      one sequence of N phases of one task each; (time - one-phase sequence) / (N - 1), which
                 includes that phase's one task (4 events: phase and task START/STOP)
  sequence       a one-phase, one-task sequence end to end, durable (6 events + the durability wait)

for the in-memory log and for the LMDB log (group commit, fsync) in a temp dir. Target: per task below
200 µs including its two events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Pki, agent_gc

from events import EventLog, MemoryEventLog
from fsm import NodeFSM, Trigger
from sequencer import SEQUENCES, Context, Phase, SequenceName, Sequencer, UpgradeRequest, task
from sequencer.memory import memory_ports
from storage import LmdbEventLog

TARGET_US = 200.0


@task(timeout=10)
async def noop(ctx: Context) -> None:
    return None


def _sequencer(log: EventLog, phases: tuple[Phase, ...]) -> Sequencer:
    fsm = NodeFSM(log)
    fsm.fire(Trigger.BOOTED)
    table = dict(SEQUENCES)
    # stage-upgrade, stripped of its FSM triggers and real tasks: only the runner is measured
    table[SequenceName.STAGE_UPGRADE] = replace(SEQUENCES[SequenceName.STAGE_UPGRADE], phases=phases, enter=None,
                                                done=None, failed=None)
    return Sequencer(log, fsm, memory_ports(), sequences=table)


async def _time_sequence(seq: Sequencer) -> float:
    t = time.perf_counter()
    result = await seq.run(SequenceName.STAGE_UPGRADE, UpgradeRequest("bench"))
    elapsed = time.perf_counter() - t
    assert result.ok, result
    return elapsed


def measure(make_log: Callable[[], EventLog], n: int, rounds: int) -> dict[str, float]:
    """Seconds, median over rounds (after one warm-up) of each shape."""
    log = make_log()
    wide = _sequencer(log, (Phase("wide", tuple(replace(noop, name=f"t{i}") for i in range(n))),))
    one = _sequencer(log, (Phase("one", (noop,)),))
    long = _sequencer(log, tuple(Phase(f"p{i}", (noop,)) for i in range(n)))

    async def run_all() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"wide": [], "one": [], "long": []}
        for r in range(rounds + 1):
            for name, seq in (("one", one), ("wide", wide), ("long", long)):
                elapsed = await _time_sequence(seq)
                if r:
                    out[name].append(elapsed)
        return out

    try:
        times = asyncio.run(run_all())
    finally:
        close = getattr(log, "close", None)
        if close is not None:
            close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "per_task": (med["wide"] - med["one"]) / (n - 1),
        "per_phase": (med["long"] - med["one"]) / (n - 1),
        "sequence": med["one"],
    }


def empty_task(n: int, rounds: int) -> float:
    async def nothing() -> None:
        return None

    async def loop() -> float:
        t = time.perf_counter()
        for _ in range(n):
            await asyncio.create_task(nothing())
        return (time.perf_counter() - t) / n

    runs = [asyncio.run(loop()) for _ in range(rounds + 1)]
    return statistics.median(runs[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per phase / phases per sequence")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the LMDB log goes (default: a temp dir)")
    args = parser.parse_args()
    gc_note = agent_gc()
    print(f"graven sequencer benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {gc_note}")
    pki = Pki.new()
    signer, cert = pki.log_key()
    floor = empty_task(args.tasks * 10, args.rounds)
    print(f"\nempty asyncio task (create + await): {floor * 1e6:8.1f} µs   <- limit\n")
    root = Path(tempfile.mkdtemp(prefix="graven-bench-seq-", dir=args.dir))
    backends: dict[str, Callable[[], Any]] = {
        "memory": lambda: MemoryEventLog(signer, cert, checkpoint_every=1024),
        "lmdb": lambda: LmdbEventLog(root / "log", signer, boot_id="bench", cert_der=cert, checkpoint_every=1024),
    }
    print(f"{'log':8} {'per task':>10} {'x empty':>8} {'per phase':>11} {'x empty':>8} {'sequence':>10}  target")
    ok = True
    for name, make in backends.items():
        m = measure(make, args.tasks, args.rounds)
        verdict = m["per_task"] * 1e6 < TARGET_US
        ok = ok and verdict
        print(f"{name:8} {m['per_task'] * 1e6:8.1f}µs {m['per_task'] / floor:7.1f}x "
              f"{m['per_phase'] * 1e6:9.1f}µs {m['per_phase'] / floor:7.1f}x {m['sequence'] * 1e6:8.0f}µs  "
              f"per task < {TARGET_US:.0f} µs: {'ok' if verdict else 'MISSED'}")
    print("\nper task includes its two signed events (task.started, task.stopped); per phase includes its one task "
          "and 4 events;\nsequence = one phase of one task, end to end, waiting until its 6 events are durable.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
