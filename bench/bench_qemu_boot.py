"""qemu boot benchmark: from ``graven machine --provisioner qemu`` starting to the node Running and ready with
its boot committed, the accelerator named.

An installed machine (v1 in slot A of its disk image, committed, a config on STATE) is powered on again and again.
Each boot is timed on the host, from just before the supervisor starts to the first status poll (every 0.2 s)
that sees Running and ready, and split from the guest's own clock (the boot trace's timeline, whose zero is the
kernel's start): kernel (to init), initramfs (modules, the slot mounted as /), agent start (the image's
interpreter and the agent's imports, to its first event), sequences (``boot.started`` to ``boot.committed``).
What is left is the host's part: the supervisor (META, slot verification, initramfs), qemu's start, the firmware
(SeaBIOS) and polling. The limit measured in the same run: the kernel and initramfs, plus the interpreter
importing the agent, with nothing done (the kernel, initramfs and agent-start spans); under TCG these are
software-emulated, about 45x slower than native.

Measured here (2 cores, KVM unusable: TCG): median 21.6 s (best 19.6 s) = kernel 2.7 s, initramfs 0.8 s, agent
start 13.5 s, sequences 1.3 s, host 3.2 s; limit 17.0 s, ratio 1.28x.

Run: PYTHONPATH=. python bench/bench_qemu_boot.py [--rounds 2]   (root; one core busy per boot)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ctl(cfg: Path, endpoint: str, *args: str, insecure: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli", "--gravenconfig", str(cfg), "-e", endpoint, *args]
    return subprocess.run(cmd + (["--insecure"] if insecure else []), capture_output=True, text=True, env=_env(),
                          timeout=120, check=False)


class VM:
    def __init__(self, base: Path) -> None:
        from api._pki import gen_config
        from image import build_image, load_signing_key
        from node._qemu import GUEST_DISK_SIZE, preinstalled_disk

        self.base = base
        self.root = base / "machine"
        self.root.mkdir(parents=True)
        self.endpoint = f"127.0.0.1:{_port()}"
        gen_config("bench", self.endpoint, base)
        self.image = base / "v1.img"
        build_image("v1", load_signing_key(base / "image.key"), self.image)
        self.disk = base / "disk.raw"
        preinstalled_disk(self.disk, GUEST_DISK_SIZE, self.image, (base / "image.pub").read_bytes(),
                          run_dir=base / "prep")
        self.cfg = base / "gravenconfig"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        cmd = [sys.executable, "-m", "node", "machine", "--root", str(self.root), "--listen", self.endpoint,
               "--disk", str(self.disk), "--provisioner", "qemu", "--trusted-key", str(self.base / "image.pub")]
        with open(self.root / "machine.log", "ab") as log:
            t0 = time.monotonic_ns()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=self.base,
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

    def wait(self, pred: Any, insecure: bool = False, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "machine.log").read_text()[-3000:]
            st = self.status(insecure)
            if st is not None and pred(st):
                return st
            time.sleep(0.2)
        raise TimeoutError((self.root / "machine.log").read_text()[-3000:])

    def install(self) -> None:
        import config
        from api._pki import ClusterSecrets

        self.start()
        self.wait(lambda s: s["stage"] == "maintenance", insecure=True)
        secrets = ClusterSecrets.load("bench", (self.base / "ca.crt").read_bytes(), (self.base / "ca.key").read_bytes(),
                                      (self.base / "image.key").read_bytes())
        cfg = config.default_config("bench", f"https://{self.endpoint}", secrets.ca_crt_pem, secrets.ca_key_pem,
                                    [secrets.image_pub_pem], install_image=str(self.image), install_disk="/dev/vda")
        path = self.base / "node.yaml"
        path.write_text(config.dump_yaml(cfg))
        r = _ctl(self.cfg, self.endpoint, "apply-config", "-f", str(path), insecure=True)
        assert r.returncode == 0, r.stderr
        self.wait(lambda s: s["stage"] == "running" and s["ready"])
        self.stop()

    def stop(self) -> None:
        assert self.proc is not None
        r = _ctl(self.cfg, self.endpoint, "shutdown")  # the agent seals its log and powers the VM off
        if r.returncode != 0:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)

    def boot_once(self) -> dict[str, float]:
        t0 = self.start()
        st = self.wait(lambda s: s["stage"] == "running" and s["ready"])
        total = (time.monotonic_ns() - t0) / 1e9
        r = _ctl(self.cfg, self.endpoint, "events", "-o", "json", "--tail", "400")
        events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        mine = [e for e in events if e["boot_id"] == st["boot_id"]]
        guest = next(e["payload"]["guest_ns"] for e in mine if e["kind"] == "boot.selected")
        first = mine[0]["mono_ns"]
        started = next(e["mono_ns"] for e in mine if e["kind"] == "boot.started")
        committed = next(e["mono_ns"] for e in mine if e["kind"] == "boot.committed")
        self.stop()
        return {"total": total, "kernel": guest["init"] / 1e9, "initramfs": (guest["exec"] - guest["init"]) / 1e9,
                "agent_start": (first - guest["exec"]) / 1e9, "sequences": (committed - started) / 1e9,
                "host": total - committed / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from node._qemu import qemu_problem
    from storage import block_problem

    problem = qemu_problem() or block_problem()
    if problem:
        print(f"qemu skipped: {problem}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp:
        vm = VM(Path(tmp))
        try:
            vm.install()
            results = [vm.boot_once() for _ in range(args.rounds)]
            log = (vm.root / "machine.log").read_text(errors="replace")
        finally:
            if vm.proc is not None and vm.proc.poll() is None:
                vm.proc.kill()
    accel = "KVM" if "(KVM)" in log else "TCG"
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    floor = med["kernel"] + med["initramfs"] + med["agent_start"]
    print(f"qemu ({accel}) power-on to Running+ready, committed: median {med['total']:.1f} s, best "
          f"{min(r['total'] for r in results):.1f} s; {args.rounds} boots")
    print(f"   kernel {med['kernel']:.1f} s | initramfs {med['initramfs']:.2f} s | agent start (python, imports) "
          f"{med['agent_start']:.1f} s | sequences to commit {med['sequences']:.1f} s | host (supervisor, qemu, "
          f"firmware, polling) {med['host']:.1f} s")
    print(f"   limit: kernel + initramfs + the interpreter importing the agent {floor:.1f} s; the boot is "
          f"{med['total'] / floor:.2f}x that")
    return 0


if __name__ == "__main__":
    sys.exit(main())
