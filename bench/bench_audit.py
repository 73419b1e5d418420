"""Audit-proof benchmark: consistency proofs and the bundle's consistency.json beside the physical limit, measured
in the same run on a hammer.py log.

    python bench/bench_audit.py [--events 50000] [--rounds 3] [--dir DIR]

Rows:
  prove         gravenctl audit prove's work: the RFC 6962 tree of the whole log and one consistency proof
                from its first checkpoint to its last. Limit: the same 2n-1 SHA-256 calls in a bare loop (every
                leaf over the stored bytes, every interior node), nothing else (target >= 0.7x: it also finds
                and decodes the checkpoints, for their notes)
  consistency   consistency.json of a full export (the tree, then a proof from every checkpoint to the last);
                same limit (target >= 0.8x)
  verify        checking that consistency.json (every proof, RFC 9162), per checkpoint
  export share  the part of a full export (write_bundle) that consistency.json takes

A ratio is limit time / figure time, the median over the rounds (1.0 = as fast as the hashing alone).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hammer

from events import MerkleLevels, leaf_hash, verify_consistency
from events._bundle import write_bundle
from events._consistency import bundle_consistency, checkpoints_of, prove
from storage import LogReader


def _best(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _hash_limit(raws: list[bytes]) -> None:
    sha = hashlib.sha256
    level = [sha(b"\x00" + r).digest() for r in raws]
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="size of the hammer log")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the log (default: a temporary dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"writing a hammer log of {args.events} events ...", file=sys.stderr, flush=True)
        hammer.write_log(Path(tmp) / "h", args.events, appenders=64)
        with LogReader(Path(tmp) / "h" / "log") as reader:
            raw = list(reader.read_raw())
    raws = [r for _, r in raw]
    sizes = sorted(checkpoints_of(raw))
    first, last = sizes[0], sizes[-1]
    rows: dict[str, list[float]] = {"prove": [], "consistency": [], "verify": [], "export share": []}
    per_cp = 0.0
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        limit = _best(lambda: _hash_limit(raws[:last]))
        rows["prove"].append(limit / _best(lambda: prove(raw, first)))
        docs: list[dict[str, Any]] = []

        def consistency(docs: list[dict[str, Any]] = docs) -> None:
            docs.append(bundle_consistency(raw, last))

        t_cons = _best(consistency)
        rows["consistency"].append(limit / t_cons)
        root = MerkleLevels([leaf_hash(x) for x in raws[:last]]).root()

        def check(entries: list[dict[str, Any]] = docs[0]["from"], root: bytes = root) -> None:
            for e in entries:
                ok = verify_consistency(e["size"], last, bytes.fromhex(e["root"]), root,
                                        [bytes.fromhex(h) for h in e["proof"]])
                assert ok, e["size"]

        per_cp = _best(check) / max(1, len(docs[0]["from"]))
        rows["verify"].append(per_cp)
        rows["export share"].append(t_cons / _best(lambda: write_bundle(io.BytesIO(), raw, exported_at_ns=0)))
    print(f"\nlog: {len(raw)} events, {len(sizes)} checkpoints; proof from size {first} to {last}\n")
    print(f"{'row':14} {'figure':>28}   target")
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{'prove':14} {med['prove']:>26.2f}x   >= 0.7x of bare SHA-256 over the tree")
    print(f"{'consistency':14} {med['consistency']:>26.2f}x   >= 0.8x of bare SHA-256 over the tree")
    print(f"{'verify':14} {med['verify'] * 1e6:>23.1f} us   per checkpoint (RFC 9162, O(log n) hashes)")
    print(f"{'export share':14} {med['export share'] * 100:>25.1f} %   of a full export")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
