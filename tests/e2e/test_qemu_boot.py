"""A qemu machine boots from its raw GPT disk image: Debian's cloud kernel, Graven's initramfs (no shell), the
slot's squashfs as ``/``, the agent as PID 1 answering the API from the host through user-mode networking.

Cost: about 25 s on two cores under TCG (the image build reuses the cached runtime layer; the kernel reaches
the initramfs in ~2-3 s, the agent answers ~18 s after qemu starts), one core busy meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api._client import GravenClient
from errors import GravenError, StorageError
from image import build_image, install, plan_install, verify
from image._kernel import find_kernel
from node._qemu import Boot, QemuSpec, free_port, initramfs_for, make_disk, qemu_problem, start
from pki import public_raw
from storage import BlockDisk, block_problem

PROBLEM = qemu_problem() or block_problem()
pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(PROBLEM is not None, reason=f"no qemu machines here: {PROBLEM}")]
BOOT_BUDGET_S = 180.0


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Boot, int]]:
    key = Ed25519PrivateKey.generate()
    build_image("1.0.0", key, tmp_path / "v1.img", created=1_700_000_000)
    disk_path = tmp_path / "disk.raw"
    make_disk(disk_path, 400 << 20, run_dir=tmp_path / "run")
    disk = BlockDisk(disk_path, run_dir=tmp_path / "run")
    try:
        install(disk, plan_install(disk.read_boot_env(), verify(tmp_path / "v1.img", [public_raw(key.public_key())])))
    finally:
        disk.close()
    kernel = find_kernel()
    port = free_port()
    spec = QemuSpec(kernel, initramfs_for(kernel, tmp_path), disk_path, "BOOT-A", tmp_path / "console.log",
                    tmp_path / "qmp.sock", ((port, 50000),))
    boot = start(spec)
    try:
        yield boot, port
    finally:
        if boot.proc.poll() is None:
            boot.stop()


def test_agent_is_pid1_of_a_qemu_machine(machine: tuple[Boot, int]) -> None:
    boot, port = machine
    version, last = None, ""
    while time.monotonic() - boot.started < BOOT_BUDGET_S and boot.proc.poll() is None:
        try:
            with GravenClient.insecure(f"127.0.0.1:{port}", quiet=True, timeout=5) as client:
                version = client.version()
                break
        except GravenError as exc:
            last = exc.message
        time.sleep(1)
    took = time.monotonic() - boot.started
    assert version is not None, f"no API after {took:.0f} s ({last}); console:\n{boot.console_tail()}"
    print(f"qemu (TCG) start to the API answering: {took:.1f} s")
    assert version["version"] == "1.0.0"  # the code of the slot's image, run by the image's interpreter
    console = boot.spec.console.read_text(errors="replace")
    assert "graven-init: BOOT-A (/dev/vda2) mounted read-only as /" in console
    assert "graven agent: maintenance mode on 0.0.0.0:50000" in console
    assert "Kernel panic" not in console
    # the same disk image cannot be booted twice at once
    other = QemuSpec(boot.spec.kernel, boot.spec.initramfs, boot.spec.disk, "BOOT-A",
                     boot.spec.console.with_name("other.log"), boot.spec.qmp.with_name("other.sock"))
    with pytest.raises(StorageError, match="in use by another running machine"):
        start(other)
    ending = boot.stop()
    assert ending.reason == "qemu stopped: host-qmp-quit"
