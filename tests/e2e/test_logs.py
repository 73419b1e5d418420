"""``gravenctl logs``: the agent's own JSON lines through the API, followed across an agent restart without a gap
or a repeat, readable by os:reader; an unknown service is NOT_FOUND naming the known ones."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from agentproc import AgentProc, env

from api._clientconfig import ClientConfig, Context
from api._pki import ClusterSecrets
from errors import NotFound


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate("logs")


def test_logs_follow_an_agent_across_its_restart(tmp_path: Path, secrets: ClusterSecrets) -> None:
    agent = AgentProc(tmp_path / "machine", secrets).start()
    seen: list[tuple[int, dict[str, object]]] = []
    try:
        agent.configure()
        with agent.client(roles=("os:reader",)) as c:
            first = [(p, json.loads(line)) for p, line in c.logs()]
        assert any("serving the API with mutual TLS" in str(line["msg"]) for _, line in first)
        assert all(set(line) >= {"time", "level", "boot_id", "msg"} for _, line in first)
        boot1 = first[-1][1]["boot_id"]
        follower = agent.client(roles=("os:reader",))
        done = threading.Event()

        def follow() -> None:
            for pos, line in follower.logs(follow=True, retry_for=60, sleep=lambda _: None):
                seen.append((pos, json.loads(line)))
                if seen[-1][1]["boot_id"] != boot1 and "serving the API" in str(seen[-1][1]["msg"]):
                    done.set()
                    return

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        with agent.client() as c:
            c.reboot()
        assert agent.wait_exit(30) == 10
        agent.start()
        assert done.wait(60), f"no line from the second boot: {seen[-3:]}"
        follower.close()
    finally:
        agent.kill()
    positions = [p for p, _ in seen]
    assert positions == list(range(positions[0], positions[0] + len(positions)))  # no gap, no repeat
    assert {line["boot_id"] for _, line in seen} >= {boot1}
    assert len({line["boot_id"] for _, line in seen}) == 2


def test_gravenctl_logs_tail_json_and_an_unknown_service(tmp_path: Path, secrets: ClusterSecrets) -> None:
    agent = AgentProc(tmp_path / "machine", secrets).start()
    try:
        agent.configure()
        with agent.client() as c, pytest.raises(NotFound, match="services with logs: agent"):
            list(c.logs("nosuch"))
        with agent.client() as c:
            files = c.generate_client_configuration(["os:reader"], 3600, "reader")
        reader = Context(endpoints=[agent.endpoint], ca=files["ca"], crt=files["crt"], key=files["key"])
        path = ClientConfig(context="logs", contexts={"logs": reader}).save(tmp_path / "gravenconfig")
        base = [sys.executable, "-m", "cli", "--gravenconfig", str(path)]
        out = subprocess.run([*base, "logs", "--tail", "2", "-o", "json"], capture_output=True, text=True,
                             env=env(), timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        assert len(lines) == 2 and all(x["level"] in ("info", "warning", "error") for x in lines)
        human = subprocess.run([*base, "logs"], capture_output=True, text=True, env=env(), timeout=60, check=False)
        assert human.returncode == 0 and " info    serving the API with mutual TLS" in human.stdout
        dmesg = subprocess.run([*base, "dmesg"], capture_output=True, text=True, env=env(), timeout=60, check=False)
        assert dmesg.returncode != 0 and "shares its host's kernel" in dmesg.stderr  # a process machine
    finally:
        agent.kill()
