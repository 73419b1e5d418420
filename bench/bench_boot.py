"""Boot benchmark: from ``graven machine`` starting to the node Running with its boot committed.

An installed machine (v1 in slot A, committed) is powered on again and again. Each boot is timed from just
before the supervisor's process starts to the ``boot.committed`` event's own timestamp in the node's log (so
polling the API adds nothing), and split: supervisor (its start-up, META, slot verification and mount, until it
starts the agent: ``agent_started_ns`` of ``boot.selected``), agent start (the interpreter, the agent's imports,
the log opened, up to ``boot.started``), and the boot sequences (``boot.started`` to ``boot.committed``:
initialize, boot, health checks, commit). The physical limit measured in the same run: a bare
``python -S -P -c "import node.agent"`` from the image's code, i.e. the interpreter and the agent's imports with
nothing done. Target: under 1.5 s (sandbox).

``--backend container``: the agent is PID 1 of its own namespaces on the slot's squashfs (``node._launch``); the
limit is then the image's own interpreter importing the agent, chrooted in the unpacked image; goal under 1 s. It
also reports the machine's memory at rest from its cgroup (goal under 100 MiB, what Talos claims for its OS) and
what takes it: anonymous memory vs page cache (the cgroup's memory.stat) and PID 1's resident set.

Run: PYTHONPATH=. python bench/bench_boot.py [--rounds 5] [--backend sandbox|block|container|both]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import BenchMachine

TARGET_S = 1.5
CONTAINER_TARGET_S = 1.0
MEMORY_TARGET = 100 << 20


class Node(BenchMachine):
    def __init__(self, base: Path, backend: str) -> None:
        super().__init__(base)
        self.device = self.root / "disk.img" if backend == "block" else None
        self.container = backend == "container"
        if self.device is not None:
            with open(self.device, "wb") as f:
                f.truncate(512 << 20)
            self.install_disk = str(self.device)

    def machine_args(self) -> list[str]:
        return [*super().machine_args(), *(["--disk", str(self.device)] if self.device is not None else []),
                *(["--provisioner", "container"] if self.container else [])]

    def memory(self) -> dict[str, float]:
        """The container machine at rest: its cgroup's memory now, split as the cgroup accounts it, and PID 1's
        resident set (MiB)."""
        from node._launch import memory_current

        spec = json.loads((self.root / "run" / "container.json").read_text())
        cg = Path(spec["cgroup"])
        stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
        anon = int(stat.get("anon", stat.get("rss", 0)))
        cache = int(stat.get("file", stat.get("cache", 0)))
        pid = int((self.root / "run" / "pid1.pid").read_text())
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        kib = {k: int(status[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
        mib = 1 << 20
        return {"cgroup": (memory_current(cg, spec["cgroup_version"]) or 0) / mib, "anon": anon / mib,
                "cache": cache / mib, "rss": kib["VmRSS"] / mib, "rss_anon": kib["RssAnon"] / mib,
                "rss_file": kib["RssFile"] / mib}

    def boot_once(self) -> dict[str, float]:
        t0 = self.start()
        st = self.running()
        mem: dict[str, float] = {}
        if self.container:
            time.sleep(1.0)  # at rest: the boot's transient allocations are done
            mem = {f"mem_{k}": v for k, v in self.memory().items()}
        mine = self.boot_events(st["boot_id"])
        spawned = next(e["payload"]["agent_started_ns"] for e in mine if e["kind"] == "boot.selected")
        started = next(e["time_ns"] for e in mine if e["kind"] == "boot.started")
        committed = next(e["time_ns"] for e in mine if e["kind"] == "boot.committed")
        self.stop()
        steps = self.steps(spawned, started)
        return {"total": (committed - t0) / 1e9, "supervisor": (spawned - t0) / 1e9,
                "agent_start": (started - spawned) / 1e9, "sequences": (committed - started) / 1e9, **mem, **steps}

    def steps(self, spawned: int, started: int) -> dict[str, float]:
        """The agent's start split by the boot's trace marks (node._boottrace): each step's time since the one
        before (the first since the supervisor's hand-over, ``started`` since the last)."""
        trace = self.root / "run" / "boot-trace"
        try:
            marks = [(step, int(ns)) for step, ns in (line.split() for line in trace.read_text().splitlines())]
        except (OSError, ValueError):
            return {}
        finally:
            trace.unlink(missing_ok=True)
        out, prev = {}, spawned
        for step, ns in [*marks, ("boot.started", started)]:
            out[f"step_{step}"] = (ns - prev) / 1e9
            prev = ns
        return out


def floor_import(node: Node) -> float:
    """python -S -P -c 'import node.agent' from the image's code: the interpreter and imports alone."""
    from node._supervisor import agent_env

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(Path(tmp) / "root"), str(node.image)], check=True,
                       capture_output=True)
        code = Path(tmp) / "root" / "usr/lib/graven"
        env = agent_env(code, Path(tmp) / "none.json")
        cmd = [sys.executable, "-S", "-P", "-c", "import node.agent"]
        if node.container:  # the image's own interpreter and libraries, as PID 1 runs them
            from node._launch import PYTHON
            from node._launch import agent_env as container_env

            env = container_env("sandbox")
            cmd = [shutil.which("chroot") or "chroot", str(Path(tmp) / "root"), f"/{PYTHON}", *cmd[1:]]
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=tmp, check=True)
            times.append(time.perf_counter() - t)
    return min(times)


def run(backend: str, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"bench-boot-{backend}-") as tmp:
        node = Node(Path(tmp), backend)
        try:
            node.install()
            results = [node.boot_once() for _ in range(rounds)]
            floor = floor_import(node)
        finally:
            node.kill()
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        best = min(r["total"] for r in results)
        target = CONTAINER_TARGET_S if node.container else TARGET_S
        verdict = "OK" if med["total"] < target else "ABOVE TARGET"
        print(f"{backend:8} boot to Running+committed: median {med['total'] * 1000:7.0f} ms, "
              f"best {best * 1000:6.0f} ms (target < {target * 1000:.0f} ms: {verdict}); {rounds} boots")
        print(f"{'':8}   supervisor (start, META, verify, mount) {med['supervisor'] * 1000:6.0f} ms | agent start "
              f"(python, imports, log) {med['agent_start'] * 1000:5.0f} ms | sequences to commit "
              f"{med['sequences'] * 1000:5.0f} ms")
        steps = [k for k in results[0] if k.startswith("step_") and all(k in r for r in results)]
        if steps:
            print(f"{'':8}   agent start by step (median ms, since the previous mark): " + ", ".join(
                f"{k.removeprefix('step_')} {statistics.median(r[k] for r in results) * 1000:.0f}" for k in steps))
        print(f"{'':8}   limit: python + the agent's imports alone {floor * 1000:.0f} ms; the boot is "
              f"{med['total'] / floor:.1f}x that")
        if node.container:
            ok = "OK" if med["mem_cgroup"] * (1 << 20) < MEMORY_TARGET else "ABOVE TARGET"
            print(f"{'':8}   memory at rest (cgroup): {med['mem_cgroup']:.1f} MiB (target < "
                  f"{MEMORY_TARGET >> 20} MiB: {ok}) = anonymous {med['mem_anon']:.1f} + page cache "
                  f"{med['mem_cache']:.1f} MiB; PID 1 resident {med['mem_rss']:.1f} MiB (anonymous "
                  f"{med['mem_rss_anon']:.1f}, file {med['mem_rss_file']:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", choices=["sandbox", "block", "container", "both"], default="both")
    args = ap.parse_args()
    backends = ["sandbox", "block"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "block":
            from storage import block_problem

            problem = block_problem()
            if problem:
                print(f"block    skipped: {problem}")
                continue
        if backend == "container":
            from node._launch import container_problem

            problem = container_problem()
            if problem:
                print(f"container skipped: {problem}")
                continue
        run(backend, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
