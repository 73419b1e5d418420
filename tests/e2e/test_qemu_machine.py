"""``graven machine --provisioner qemu``: the supervisor is the VM's firmware and bootloader. It reads META from
the disk image, picks the slot, spends a try, verifies the slot's image, starts qemu with the slot on the kernel
command line and reads each ending from QMP. A boot-crash image in the default slot panics the guest's kernel
(PID 1 died) on every try; when its tries are spent the machine falls back to the good slot, whose agent learns
the boot's decisions through fw_cfg and answers the API from the host.

Cost: about 70 s on two cores under TCG (two crashing boots of ~15 s, one good boot of ~18 s), one core busy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api._client import GravenClient
from boot import Slot, mark_good
from errors import GravenError
from image import build_image, install, load_signing_key, plan_install, verify, write_keypair
from node._qemu import free_port, make_disk, qemu_problem
from pki import public_raw
from storage import BlockDisk, block_problem

PROBLEM = qemu_problem() or block_problem()
pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(PROBLEM is not None, reason=f"no qemu machines here: {PROBLEM}")]
BUDGET_S = 240.0
TRIES = 2


def _prepare(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub, _ = write_keypair(tmp_path / "keys")
    key = load_signing_key(priv)
    build_image("1.0.0", key, tmp_path / "v1.img", created=1_700_000_000)
    build_image("1.1.0", key, tmp_path / "crash.img", created=1_700_000_000, fault="boot-crash")
    disk_path = tmp_path / "disk.raw"
    make_disk(disk_path, 400 << 20, run_dir=tmp_path / "prep")
    trusted = [public_raw(key.public_key())]
    disk = BlockDisk(disk_path, run_dir=tmp_path / "prep")
    try:
        install(disk, plan_install(disk.read_boot_env(), verify(tmp_path / "v1.img", trusted)))
        env = disk.read_boot_env()
        assert env is not None
        env, _ = mark_good(env, Slot.A)
        disk.write_boot_env(env)
        install(disk, plan_install(env, verify(tmp_path / "crash.img", trusted)), tries=TRIES)  # armed: default B
    finally:
        disk.close()
    return disk_path, pub


def test_crashing_slot_falls_back_by_boot_counting(tmp_path: Path) -> None:
    disk_path, pub = _prepare(tmp_path)
    port = free_port()
    log_path = tmp_path / "machine.log"
    root = tmp_path / "machine"
    cmd = [sys.executable, "-m", "node", "machine", "--root", str(root), "--disk", str(disk_path),
           "--provisioner", "qemu", "--listen", f"127.0.0.1:{port}", "--trusted-key", str(pub)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    version, last = None, ""
    started = time.monotonic()
    try:
        while time.monotonic() - started < BUDGET_S and proc.poll() is None:
            try:
                with GravenClient.insecure(f"127.0.0.1:{port}", quiet=True, timeout=5) as client:
                    version = client.version()
                    break
            except GravenError as exc:
                last = exc.message
            time.sleep(1)
        took = time.monotonic() - started
        text = log_path.read_text(errors="replace")
        assert version is not None, f"no API after {took:.0f} s ({last}); machine log:\n{text[-4000:]}"
        print(f"power-on to the API of the fallback slot, {TRIES} crashing boots first (TCG): {took:.1f} s")
        assert version["version"] == "1.0.0" and version["slot"] == "A"  # boot.json arrived through fw_cfg
        assert text.count("of slot B failed: the guest kernel panicked") == TRIES, text[-4000:]
        assert "the console's last line before it: graven agent: fault point boot-crash" in text
        assert "fault point boot-crash" in text  # the console reached the machine's log
        assert "FALLBACK from slot B to A" in text
        assert "console: graven-init: BOOT-A (/dev/vda2) mounted read-only as /" in text
        assert "qemu: 6.1." in text and ("(TCG)" in text or "(KVM)" in text)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    disk = BlockDisk(disk_path, run_dir=tmp_path / "after")
    try:
        env = disk.read_boot_env()
        assert env is not None and env.default is Slot.A
        assert "its last boot failed: the guest kernel panicked" in (env.last_fallback_reason or "")
    finally:
        disk.close()
