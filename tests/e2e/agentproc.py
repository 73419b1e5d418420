"""A real agent process on a sandbox disk, configured through the API (used by the API end-to-end tests)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import config
from api._client import GravenClient
from api._pki import ClusterSecrets, issue_client_certificate

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@dataclass
class AgentProc:
    root: Path
    secrets: ClusterSecrets
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    metrics_port: int | None = None  # serve metrics there

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config_yaml(self) -> bytes:
        """The machine config without ``machine.install``: the sandbox node adopts its folders at apply."""
        cfg = config.default_config("e2e", f"https://{self.endpoint}", self.secrets.ca_crt_pem.decode(),
                                    self.secrets.ca_key_pem.decode(), [self.secrets.image_pub_pem.decode()],
                                    hostname="e2e")
        tree = config.to_dict(cfg)
        tree["machine"].pop("install", None)
        if self.metrics_port is not None:
            tree["machine"]["metrics"] = {"enabled": True, "port": self.metrics_port}
        return config.dump_yaml(config.load(yaml.safe_dump(tree))).encode()

    def start(self) -> AgentProc:
        self.log_path = self.root / f"agent-{time.time_ns()}.log"
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "agent", "--root", str(self.root), "--listen", self.endpoint],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, env=env(), cwd=self.root)
        self.wait_port()
        return self

    def wait_port(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"agent did not listen within {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def configure(self) -> None:
        with GravenClient.insecure(self.endpoint, quiet=True) as c:
            c.apply_configuration(self.config_yaml())
        self.wait_stage("running")

    def client(self, roles: tuple[str, ...] = ("os:admin",), cn: str = "tester",
               ttl: dt.timedelta = dt.timedelta(hours=1)) -> GravenClient:
        crt, key = issue_client_certificate(self.secrets.ca_key, self.secrets.ca_cert, cn=cn, roles=roles, ttl=ttl)
        return GravenClient(self.endpoint, self.secrets.ca_crt_pem, crt, key, timeout=10)

    def wait_stage(self, stage: str, timeout: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                with self.client() as c:
                    st = c.status()
                if st["stage"] == stage:
                    return st
                last = st
            except Exception as exc:  # not serving yet
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"stage {stage!r} not reached: {last}; {self.output()}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
