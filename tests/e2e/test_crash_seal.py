"""After a crash, the next boot seals the tail the dead agent left: SIGKILL a real agent while clients are writing
events, check that its log ends uncovered by a checkpoint, boot it again and find, as the first event after the
dead boot's last one, a sealed checkpoint covering all of them; the log then verifies offline with the CA alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agentproc import AgentProc, env

from api._pki import ClusterSecrets
from errors import GravenError
from storage._lmdb_log import RECOVERED

pytestmark = [pytest.mark.timeout(180)]


def _verify(root: Path, ca: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "cli", "audit", "verify", str(root), "--ca", str(ca), "-o", "json"],
                         capture_output=True, text=True, env=env(), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_boot_after_a_sigkill_seals_the_dead_boots_tail(tmp_path: Path) -> None:
    secrets = ClusterSecrets.generate("crash")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(secrets.ca_crt_pem)
    agent = AgentProc(tmp_path / "machine", secrets).start()
    try:
        agent.configure()
        stop = threading.Event()

        def busy(i: int) -> None:  # each applied config is a sequence of events
            n = 0
            while not stop.is_set():
                n += 1
                yaml_bytes = agent.config_yaml().replace(b"hostname: e2e", f"hostname: e2e-{i}-{n}".encode())
                try:
                    with agent.client() as c:
                        c.apply_configuration(yaml_bytes, mode="no-reboot")
                except GravenError:
                    time.sleep(0.05)  # another apply holds the lock, or the agent is gone

        writers = [threading.Thread(target=busy, args=(i,)) for i in range(2)]
        for t in writers:
            t.start()
        time.sleep(1.5)
        agent.kill()  # SIGKILL mid-run
        stop.set()
        for t in writers:
            t.join(15)
        dead = _verify(agent.root, ca)
        assert dead["sealed"] is False and int(str(dead["uncovered_tail"])) > 0, dead
        dead_last = int(str(dead["last_seq"]))

        agent.start()
        agent.wait_stage("running")
        with agent.client() as c:
            after = [e for e in c.events(since=dead_last) if e.seq > dead_last]
        seal = after[0]
        assert seal.kind == "log.checkpoint", [e.kind for e in after[:5]]
        assert seal.seq == dead_last + 1 and seal.payload["size"] == seal.seq
        assert seal.payload["sealed"] is True and seal.payload["reason"] == RECOVERED
        assert f"sealed seq 0..{dead_last}" in agent.output()
        alive = _verify(agent.root, ca)
        assert int(str(alive["last_seq"])) > seal.seq
    finally:
        agent.kill()
