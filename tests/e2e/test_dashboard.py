"""``gravenctl dashboard`` in a pseudo-terminal, read back through a terminal emulator (pyte): the node's stage is
on screen, an unreachable node shows as such while the dashboard keeps running, and a node that reboots shows
offline, then running again."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyte
import pytest
from agentproc import AgentProc, env, free_port

from api._clientconfig import ClientConfig, Context
from api._pki import ClusterSecrets

ROWS, COLS = 40, 200


class Terminal:
    def __init__(self, argv: list[str]) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                     env={**env(), "TERM": "xterm-256color", "COLUMNS": str(COLS),
                                          "LINES": str(ROWS)})
        os.close(slave)
        self.master, self.lock = master, threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.stream.feed(data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait(self, ok: Callable[[str], bool], what: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if ok(screen):
                return screen
            assert self.proc.poll() is None, f"the dashboard exited ({self.proc.returncode}):\n{screen}"
            time.sleep(0.2)
        raise AssertionError(f"not on screen after {timeout}s: {what}\n{self.text()}")


def row_of(screen: str, endpoint: str) -> str:
    return next((line for line in screen.splitlines() if endpoint in line and "recent" not in line), "")


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate("dash")


def test_the_dashboard_follows_a_node_through_a_reboot(tmp_path: Path, secrets: ClusterSecrets) -> None:
    agent = AgentProc(tmp_path / "machine", secrets).start()
    nowhere = f"127.0.0.1:{free_port()}"
    term = None
    try:
        agent.configure()
        with agent.client() as c:
            files = c.generate_client_configuration(["os:reader"], 3600, "dash")
        ctx = Context(endpoints=[agent.endpoint], ca=files["ca"], crt=files["crt"], key=files["key"])
        path = ClientConfig(context="d", contexts={"d": ctx}).save(tmp_path / "gravenconfig")
        base = [sys.executable, "-m", "cli", "--gravenconfig", str(path), "-n", f"{agent.endpoint},{nowhere}"]
        term = Terminal([*base, "dashboard"])
        screen = term.wait(lambda s: "running" in row_of(s, agent.endpoint) and "unreachable" in row_of(s, nowhere),
                           "the node running and the other unreachable")
        assert "online" in row_of(screen, agent.endpoint) and "yes" in row_of(screen, agent.endpoint)
        with agent.client() as c:
            c.reboot()
        assert agent.wait_exit(30) == 10
        term.wait(lambda s: "offline" in row_of(s, agent.endpoint), "the node offline")
        agent.start()
        term.wait(lambda s: "online" in row_of(s, agent.endpoint) and "running" in row_of(s, agent.endpoint),
                  "the node back and running")
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(30) == 0
        once = subprocess.run([*base, "dashboard", "--once", "-o", "json"], capture_output=True, text=True,
                              env=env(), timeout=60, check=False)
        rows = {r["node"]: r for r in json.loads(once.stdout)}
        assert once.returncode == 1  # one node does not answer
        assert rows[agent.endpoint]["stage"] == "running" and rows[nowhere]["link"] == "unreachable"
    finally:
        if term is not None and term.proc.poll() is None:
            term.proc.kill()
        agent.kill()
