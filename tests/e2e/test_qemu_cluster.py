"""``gravenctl cluster create --provisioner qemu``: a virtual machine booted from its own disk image, configured
in maintenance, rebooted (QMP guest-reset) into Running; ``version`` and ``dmesg`` answer from the guest's own
kernel, and ``trace boot`` starts at the kernel's zero; an upgrade v1 -> v2 streams the image into the VM, which
writes slot B through its virtio disk and reboots into it; a rollback reboots it into slot A; no boot failed; a
boot-crash v3 panics the guest on each of its three tries and the machine falls back to A; the VM's log verifies
with the cluster's CA alone.

Cost: about 4 min on two cores under TCG (241 s here; eight boots of the VM of ~15-30 s each, two image builds and
uploads), one core busy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from machinekit import gravenctl

from image import build_image, load_signing_key
from node._qemu import qemu_problem
from storage import block_problem

PROBLEM = qemu_problem() or block_problem()
pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600),
              pytest.mark.skipif(PROBLEM is not None, reason=f"no qemu machines here: {PROBLEM}")]


def test_qemu_cluster_create_upgrade_destroy(tmp_path: Path) -> None:
    state, client = tmp_path / "clusters", tmp_path / "client-config"
    env = {"GRAVENCONFIG": str(client)}
    started = time.monotonic()
    r = gravenctl("cluster", "create", "--name", "q1", "--state", str(state), "--port", "0", "--provisioner", "qemu",
                  "--timeout", "300", "-o", "json", timeout=360, env=env)
    try:
        created = time.monotonic() - started
        data = json.loads((state / "q1" / "cluster.json").read_text())
        node = data["nodes"][0]
        log = Path(node["log"]).read_text(errors="replace")
        assert r.returncode == 0, r.stderr + log[-3000:]
        print(f"cluster create --provisioner qemu (TCG), to running and ready: {created:.1f} s")
        assert "running, ready (slot A, v1)" in r.stderr
        assert "console: graven-init: BOOT-A (/dev/vda2) mounted read-only as /" in log
        assert "reboot" in log  # the install's reboot, read from QMP's guest-reset
        ep = node["endpoint"]
        r = gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env)
        assert r.returncode == 0, r.stderr
        server = json.loads(r.stdout)["server"]
        assert server["version"] == "v1" and server["slot"] == "A" and server["node"] == node["name"]
        assert server["kernel"].startswith("6.1.") and server["provisioner"] == "qemu"  # the guest's kernel

        r = gravenctl("-n", ep, "-e", ep, "dmesg", "-o", "json", env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "Linux version 6.1." in r.stdout  # the guest's own kernel, not the host's

        r = gravenctl("-n", ep, "-e", ep, "trace", "boot", "-o", "json", env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        trace = json.loads(r.stdout)
        names = [s["name"] for s in trace["spans"]]
        assert names[:3] == ["kernel", "initramfs", "agent start"], names[:6]  # time zero is the kernel's
        assert trace["spans"][0]["start_ns"] == 0 and 0 < trace["spans"][0]["duration_ns"] < 60e9
        assert "boot" in names

        v2 = tmp_path / "v2.img"
        build_image("v2", load_signing_key(data["image_key"]), v2)
        r = gravenctl("-n", ep, "-e", ep, "upgrade", "--image", str(v2), "--wait", env=env, timeout=300)
        log = Path(node["log"]).read_text(errors="replace")
        assert r.returncode == 0, r.stderr + log[-3000:]
        r = gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env)
        server = json.loads(r.stdout)["server"]
        assert server["version"] == "v2" and server["slot"] == "B"
        assert "console: graven-init: BOOT-B (/dev/vda3) mounted read-only as /" in log

        r = gravenctl("-n", ep, "-e", ep, "rollback", "--wait", env=env, timeout=300)
        assert r.returncode == 0, r.stderr + Path(node["log"]).read_text(errors="replace")[-3000:]
        server = json.loads(gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env).stdout)["server"]
        assert (server["version"], server["slot"]) == ("v1", "A")
        r = gravenctl("-n", ep, "-e", ep, "events", "-o", "json", env=env, timeout=60)
        kinds = [json.loads(line)["kind"] for line in r.stdout.splitlines() if line.strip()]
        assert "boot.failed" not in kinds  # every reboot was the guest's reboot(2), read from QMP as guest-reset
        assert kinds.count("boot.committed") >= 3

        # v3 crashes early in every boot (PID 1 dies: a kernel panic, pvpanic): its 3 tries spent, back to A
        v3 = tmp_path / "v3.img"
        build_image("v3", load_signing_key(data["image_key"]), v3, fault="boot-crash")
        r = gravenctl("-n", ep, "-e", ep, "upgrade", "--image", str(v3), "--wait", env=env, timeout=300)
        assert r.returncode != 0
        deadline, server = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            r = gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env)
            if r.returncode == 0:
                server = json.loads(r.stdout)["server"]
                if (server["version"], server["slot"]) == ("v1", "A"):
                    break
            time.sleep(2)
        log = Path(node["log"]).read_text(errors="replace")
        assert (server.get("version"), server.get("slot")) == ("v1", "A"), log[-3000:]
        assert log.count("of slot B failed: the guest kernel panicked") == 3
        assert "FALLBACK from slot B to A" in log
        r = gravenctl("-n", ep, "-e", ep, "audit", "verify", "--ca", data["ca_cert"], env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr  # the VM's whole log, from the cluster's CA alone
    finally:
        r = gravenctl("cluster", "destroy", "--name", "q1", "--state", str(state), timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert not (state / "q1").exists()
