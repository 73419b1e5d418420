"""``python -m node ARGS`` under tracemalloc, for bench_rss.py: when ``$GRAVEN_TRACED_REPORT.go`` appears, a watcher
thread writes the traced Python heap grouped by package to ``$GRAVEN_TRACED_REPORT``.

An allocation counts for the package of the innermost frame that is not the import machinery: the module code
that ran, or that imported the module being loaded (so a package's figure includes the modules it imports for
itself, e.g. the parts of the standard library that only it needs)."""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

tracemalloc.start(16)
REPORT = Path(os.environ["GRAVEN_TRACED_REPORT"])
TOP = int(os.environ.get("GRAVEN_TRACED_TOP", "14"))


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for root in map(str, sys.path[1:]):
        if root and filename.startswith(root + "/") and "/lib/python" not in root:
            return "graven: " + filename[len(root) + 1:].split("/", 1)[0]
    if filename.startswith("<frozen"):
        return "importlib (module code objects)"
    if "/lib/python" in filename:
        return "stdlib: " + filename.rsplit("/lib/python", 1)[1].split("/", 2)[1].removesuffix(".py")
    return filename


def _watch() -> None:
    go = Path(str(REPORT) + ".go")
    while not go.exists():
        time.sleep(0.1)
    snap = tracemalloc.take_snapshot()
    sizes: dict[str, int] = defaultdict(int)
    for stat in snap.statistics("traceback"):
        frames = [f.filename for f in stat.traceback if not f.filename.startswith("<frozen")]
        sizes[_package(frames[-1] if frames else "<frozen importlib>")] += stat.size
    total = sum(sizes.values())
    lines = [f"{'package (where the memory was allocated)':<62} {'MiB':>8}", "-" * 71]
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:TOP]:
        lines.append(f"{name[:62]:<62} {size / 2**20:>8.2f}")
    lines.append(f"{'all traced Python allocations':<62} {total / 2**20:>8.2f}")
    tmp = REPORT.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(REPORT)


threading.Thread(target=_watch, daemon=True).start()
sys.argv = ["node", *sys.argv[1:]]
runpy.run_module("node", run_name="__main__", alter_sys=True)
