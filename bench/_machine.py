"""What the boot benchmarks share (bench_boot, bench_qemu_boot): a machine of one node that ``graven machine``
powers on again and again, installed once through maintenance mode, its API polled until a predicate holds, its
events read back per boot. A benchmark says how its machine starts (``machine_args``), what the config's install
disk is, how often to poll and how to stop it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT)
    out.setdefault("GRPC_VERBOSITY", "ERROR")
    out.setdefault("GRAVEN_BOOT_TRACE", "1")  # the agent's start-up marks (node._boottrace), for bench_boot
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ctl(cfg: Path, endpoint: str, *args: str, insecure: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli", "--gravenconfig", str(cfg), "-e", endpoint, *args]
    return subprocess.run(cmd + (["--insecure"] if insecure else []), capture_output=True, text=True, env=env(),
                          timeout=120, check=False)


class BenchMachine:
    """One machine under ``base``: its secrets and client config, a v1 image, the supervisor's process."""

    poll_s = 0.02  # between two status polls
    timeout_s = 60.0  # for one boot to reach what ``wait`` waits for
    install_disk = "/dev/sda"  # the machine config's install disk

    def __init__(self, base: Path) -> None:
        from api._pki import gen_config
        from image import build_image, load_signing_key

        self.base = base
        self.root = base / "machine"
        self.root.mkdir(parents=True)
        self.endpoint = f"127.0.0.1:{free_port()}"
        gen_config("bench", self.endpoint, base)
        self.image = base / "v1.img"
        build_image("v1", load_signing_key(base / "image.key"), self.image)
        self.cfg = base / "gravenconfig"
        self.proc: subprocess.Popen[bytes] | None = None

    def machine_args(self) -> list[str]:
        """``graven machine``'s arguments beyond the root, the listen address and the trusted key."""
        return ["--boot-from", str(self.image)]

    def log_text(self) -> str:
        return (self.root / "machine.log").read_text(errors="replace")

    def start(self) -> int:
        """Start the supervisor; the wall clock (ns) just before, comparable with the events' ``time_ns``."""
        cmd = [sys.executable, "-m", "node", "machine", "--root", str(self.root), "--listen", self.endpoint,
               "--trusted-key", str(self.base / "image.pub"), *self.machine_args()]
        with open(self.root / "machine.log", "ab") as log:  # the child has its own copy of the descriptor
            t0 = time.time_ns()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=self.base,
                                         start_new_session=True)
        return t0

    def status(self, insecure: bool = False) -> dict[str, Any] | None:
        from api import _clientconfig
        from api._client import GravenClient
        from errors import GravenError

        try:
            if insecure:
                client = GravenClient.insecure(self.endpoint, quiet=True, timeout=2)
            else:
                client = GravenClient.from_context(_clientconfig.load(self.cfg).current()[1], self.endpoint, timeout=2)
            with client:
                return dict(client.status())
        except GravenError:
            return None

    def wait(self, pred: Any, insecure: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_text()[-3000:]
            st = self.status(insecure)
            if st is not None and pred(st):
                return st
            time.sleep(self.poll_s)
        raise TimeoutError(self.log_text()[-3000:])

    def running(self) -> dict[str, Any]:
        return self.wait(lambda s: s["stage"] == "running" and s["ready"])

    def install(self) -> None:
        """Boot into maintenance, apply a config (v1 from the image file, onto ``install_disk``), wait for
        Running, stop."""
        import config
        from api._pki import ClusterSecrets

        self.start()
        self.wait(lambda s: s["stage"] == "maintenance", insecure=True)
        secrets = ClusterSecrets.load("bench", (self.base / "ca.crt").read_bytes(), (self.base / "ca.key").read_bytes(),
                                      (self.base / "image.key").read_bytes())
        cfg = config.default_config("bench", f"https://{self.endpoint}", secrets.ca_crt_pem, secrets.ca_key_pem,
                                    [secrets.image_pub_pem], install_image=str(self.image),
                                    install_disk=self.install_disk)
        path = self.base / "node.yaml"
        path.write_text(config.dump_yaml(cfg))
        r = ctl(self.cfg, self.endpoint, "apply-config", "-f", str(path), insecure=True)
        assert r.returncode == 0, r.stderr
        self.running()
        self.stop()

    def boot_events(self, boot_id: str) -> list[dict[str, Any]]:
        r = ctl(self.cfg, self.endpoint, "events", "-o", "json", "--tail", "400")
        events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return [e for e in events if e["boot_id"] == boot_id]

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
