"""The cost of metrics on the append path: appends/s through the node's log with and without metrics.

With metrics, every append's time to durability is observed (a done-callback on its future) and a scrape folds
the log into the projection once a second (Prometheus scrapes every 15 s by default: this is 15x harsher).
The limit is the same work without metrics, measured in the same run, alternating rounds; the goal is to stay
within 5% (ratio >= 0.95).

    python bench/bench_metrics.py [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Pki, agent_gc

from node._log import NodeLog
from node._metrics import NodeMetrics, NodeView
from storage import LmdbEventLog

GOAL = 0.95


def run(events: int, with_metrics: bool, pki: Pki) -> float:
    signer, cert = pki.log_key()
    with tempfile.TemporaryDirectory() as tmp:
        durable = LmdbEventLog(Path(tmp) / "log", signer, boot_id="bench", cert_der=cert, origin="graven/bench")
        log = NodeLog(boot_id="bench", node="bench", durable=durable)
        stop = threading.Event()
        scraper = None
        if with_metrics:
            metrics = NodeMetrics(read_raw=log.read_raw,
                                  view=lambda: NodeView(stage="running", boot_id="bench", next_seq=log.next_seq(),
                                                        log_bytes=0))
            log.on_durable = metrics.observe_append

            def scrape() -> None:
                while not stop.wait(1.0):
                    metrics.sync()

            scraper = threading.Thread(target=scrape, daemon=True)
            scraper.start()
        payload = {"method": "Version", "args": {"n": 1}}
        start = time.perf_counter()
        window = []
        for _ in range(events):
            window.append(log.submit("api.request", payload))
            if len(window) >= 256:  # 256 appenders in flight, as the log benchmark's concurrency
                window.pop(0).result()
        for f in window:
            f.result()
        elapsed = time.perf_counter() - start
        stop.set()
        if scraper is not None:
            scraper.join()
        log.close()
        return events / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    agent_gc()
    pki = Pki.new()
    without, with_ = [], []
    for _ in range(args.rounds):
        without.append(run(args.events, False, pki))
        with_.append(run(args.events, True, pki))
    a, b = statistics.median(without), statistics.median(with_)
    print(f"{'case':<34} {'appends/s':>10} {'ratio':>7}")
    print(f"{'without metrics (the limit)':<34} {a:>10,.0f} {1.0:>7.2f}")
    print(f"{'with metrics, scraped every 1 s':<34} {b:>10,.0f} {b / a:>7.2f}   goal >= {GOAL}: "
          f"{'met' if b / a >= GOAL else 'NOT met'}")
    print(f"(median of {args.rounds} alternating rounds, {args.events} events each, 256 in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
