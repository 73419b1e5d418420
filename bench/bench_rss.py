"""Agent memory at rest, and what takes it: a configured agent (log of PREFILL events) serving mutual TLS, 2 s
after it answered its first call (once up, the agent gives back what only start-up used), then again after it
served a round of calls on a new connection (each kind of read call, the log's events, a new TLS handshake): the
code pages those calls need are resident again, so that figure is the one held against the target.

    python bench/bench_rss.py [--prefill 20000] [--top 12]

Prints VmRSS / RssAnon / Pss (target: VmRSS < 60 MiB after the round of calls), then the resident memory from
/proc/PID/smaps grouped by mapping (the Python heap and other anonymous memory, libpython, each extension module's
shared library, the LMDB map of the log, ...), then a second agent, started the same way under tracemalloc, is
asked for the Python heap by package (what its imports and start-up allocated).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from agentproc import AgentProc, env
from bench_api import prefill

from api._pki import ClusterSecrets

TRACED = Path(__file__).with_name("_traced_agent.py")


def status_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, RssAnon) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


def pss_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                  if ":" in line)
    return int(fields["Pss"].split()[0]) / 1024


def serve_round(agent: AgentProc) -> int:
    """Each kind of read call once, on a new connection (a new TLS handshake); returns the calls made."""
    with agent.client() as c:
        c.version()
        c.status()
        c.get_configuration()
        c.resources("processes")
        c.resources("mounts")
        n = sum(1 for _ in c.events(tail=200))
        assert n == 200, n
        c.boot_trace()
    return 7


def _anonymous(size_kb: int) -> str:
    """Anonymous mappings told apart by their size: what allocated them."""
    if size_kb == 1024:
        return "anonymous: Python object arenas (pymalloc, 1 MiB each)"
    if size_kb in (8192, 8196) or 8180 <= size_kb <= 8200:
        return "anonymous: thread stacks (8 MiB reserved each)"
    if 60_000 <= size_kb <= 65_600:
        return "anonymous: malloc arenas of other threads (64 MiB reserved each)"
    # pymalloc's arenas are 1 MiB mappings, but the kernel merges adjacent ones into one (strace: most of this)
    return "anonymous: other (merged pymalloc arenas, C libraries' allocations)"


def _group(path: str, size_kb: int = 0) -> str:
    if not path:
        return _anonymous(size_kb)
    if path.startswith("["):
        return {"[heap]": "[heap]: the main malloc arena (C libraries, objects > 512 B)",
                "[stack]": "[stack]: the main thread's stack"}.get(path, path)
    name = Path(path).name
    if name == "data.mdb":
        return "LMDB map of the event log (data.mdb)"
    if name == "lock.mdb":
        return "LMDB lock file"
    if "libpython" in name or re.fullmatch(r"python3(\.\d+)?", name):
        return "python interpreter (libpython)"
    if "site-packages" in path:
        pkg = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return f"site-packages/{pkg} (shared library)"
    if name.endswith(".so") or ".so." in name:
        return f"{name} (system library)" if not name.startswith(("_", "math", "select")) else "stdlib extensions"
    return name


def smaps_groups(pid: int) -> dict[str, list[int]]:
    """mapping group -> [Rss kB, Pss kB, Anonymous kB]."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            current = _group(head[5].strip() if len(head) > 5 else "", (hi - lo) // 1024)
        elif line.startswith(("Rss:", "Pss:", "Anonymous:")):
            idx = ("Rss:", "Pss:", "Anonymous:").index(line.split()[0])
            groups[current][idx] += int(line.split()[1])
    return groups


def at_rest(agent: AgentProc) -> int:
    agent.start()
    with agent.client() as c:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.version()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    time.sleep(2.0)
    assert agent.proc is not None
    return agent.proc.pid


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="graven-bench-rss-"))
    try:
        return measure(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(tmp: Path) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", type=int, default=20_000, help="events in the node's log before it starts")
    ap.add_argument("--top", type=int, default=14, help="rows of each breakdown")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="run the agents with this in their environment (to try allocator settings)")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc breakdown")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    secrets = ClusterSecrets.generate("bench")
    agent = AgentProc(tmp / "node", secrets)
    prefill(agent.root, agent, args.prefill)
    try:
        pid = at_rest(agent)
        rss0, anon0 = status_mib(pid)
        pss0 = pss_mib(pid)
        calls = serve_round(agent)
        time.sleep(1.0)
        rss, anon = status_mib(pid)
        pss = pss_mib(pid)
        groups = smaps_groups(pid)
    finally:
        agent.kill()
    print(f"agent at rest (log of {args.prefill:,} events, serving mTLS), 2 s after its first answer: "
          f"VmRSS {rss0:.1f} MiB, RssAnon {anon0:.1f} MiB, Pss {pss0:.1f} MiB\n"
          f"the same agent 1 s after a round of {calls} calls on a new connection: "
          f"VmRSS {rss:.1f} MiB, RssAnon {anon:.1f} MiB, Pss {pss:.1f} MiB  "
          f"(target VmRSS < 60 MiB: {'met' if rss < 60 else 'NOT met'}; load average {os.getloadavg()[0]:.2f})")
    print(f"\n{'resident memory by mapping (/proc/PID/smaps)':<62} {'Rss MiB':>8} {'Pss MiB':>8} {'anon MiB':>9}")
    print("-" * 90)
    rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
    for name, (r, p, a) in rows[: args.top]:
        print(f"{name[:62]:<62} {r / 1024:>8.1f} {p / 1024:>8.1f} {a / 1024:>9.1f}")
    rest = rows[args.top:]
    print(f"{f'{len(rest)} more mappings':<62} {sum(v[0] for _, v in rest) / 1024:>8.1f} "
          f"{sum(v[1] for _, v in rest) / 1024:>8.1f} {sum(v[2] for _, v in rest) / 1024:>9.1f}")

    if args.no_trace:
        return 0
    # the Python heap by package, from a second agent started under tracemalloc
    report = tmp / "tracemalloc.txt"
    traced = AgentProc(tmp / "node", secrets)
    traced.root = agent.root
    e = env()
    e["GRAVEN_TRACED_REPORT"] = str(report)
    e["GRAVEN_TRACED_TOP"] = str(args.top)
    traced.log_path = agent.root / "agent-traced.log"
    traced.proc = subprocess.Popen(
        [sys.executable, str(TRACED), "agent", "--root", str(agent.root), "--listen", traced.endpoint],
        stdout=traced.log_path.open("wb"), stderr=subprocess.STDOUT, env=e, cwd=agent.root)
    try:
        traced.wait_port(timeout=90)
        with traced.client() as c:
            c.version()
        time.sleep(1.0)
        Path(str(report) + ".go").touch()  # the traced agent's watcher thread then writes the report
        deadline = time.monotonic() + 20
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        traced.kill()
    print("\nPython heap by package (tracemalloc, a second agent started the same way; tracing adds its own "
          "overhead, not shown)")
    print(report.read_text() if report.exists() else f"no report: {traced.output()[-2000:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
