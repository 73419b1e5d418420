"""``make run`` (``python -m node.demo``): the demo node comes up Running, and what the demo prints works — the
log it names exists, and the commands it suggests reach the node with the client config it set up."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from machinekit import PY, REPO, _env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_the_demo_comes_up_and_its_printed_commands_work(tmp_path: Path) -> None:
    name = f"demo{tmp_path.name[-4:].replace('_', '')}"
    env = _env({"GRAVEN_STATE": str(tmp_path / "clusters"), "GRAVEN_DEMO_NAME": name, "HOME": str(tmp_path)})
    try:
        r = subprocess.run([PY, "-m", "node.demo"], capture_output=True, text=True, timeout=200, env=env, cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        logs = re.search(r"its log: (.+)\)\.", r.stdout)
        assert logs is not None, r.stdout
        assert all(Path(p).is_file() for p in logs.group(1).split(", ")), logs.group(1)
        status_cmd = next(line.split("#")[0] for line in r.stdout.splitlines() if line.strip().endswith(
            "# stage, readiness, slot, version, last fallback"))
        status = subprocess.run([*shlex.split(status_cmd), "-o", "json"], capture_output=True, text=True, timeout=60,
                                env=env, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        row = rows[0] if isinstance(rows, list) else rows
        assert row["stage"] == "running" and row["ready"] is True, row
        verify_cmd = next(line.split("#")[0] for line in r.stdout.splitlines() if "audit verify --ca" in line)
        verified = subprocess.run(shlex.split(verify_cmd), capture_output=True, text=True, timeout=60, env=env,
                                  cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert (verified.stdout + verified.stderr).count("fetched the audit bundle") == 1, verified.stderr
        trace_cmd = next(line.split("#")[0] for line in r.stdout.splitlines() if line.strip().endswith(
            "# per-phase timings of the last boot"))
        traced = subprocess.run(shlex.split(trace_cmd), capture_output=True, text=True, timeout=60, env=env,
                                cwd=tmp_path)
        assert traced.returncode == 0, traced.stderr
        # the footnote is a line of its own, so the next thing printed starts a line of its own too
        assert traced.stdout.endswith("* critical path: the longest task of each phase\n"), traced.stdout[-200:]
        assert traced.stderr.count("fetched the audit bundle") == 1, traced.stderr
        assert (tmp_path / ".graven" / "config").is_file()  # the client config went to this HOME, not yours
    finally:
        subprocess.run([PY, "-m", "cli", "cluster", "destroy", "--name", name, "--state",
                        str(tmp_path / "clusters")], capture_output=True, timeout=120, env=env, cwd=REPO)
