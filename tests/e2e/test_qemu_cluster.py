"""``gravenctl cluster create --provisioner qemu --nodes 2``: two virtual machines (a control plane and a worker),
each with a blank disk image, each NIC on a tap device in the node's network namespace, bridged to the cluster's
bridge. Each VM boots the installer image (a second, read-only virtio disk), is configured in maintenance over the
bridge, and the install sequence partitions and formats its disk and writes slot A from inside the guest (the
initramfs's sfdisk and mkfs.ext4); the VM reboots (QMP guest-reset) into slot A and Running. The worker's
NIC follows its machine config (an address added live, with netlink inside the guest, answers the host).
``version`` and ``dmesg`` answer from the guest's own kernel, and ``trace boot`` starts at the kernel's zero; an
upgrade v1 -> v2 of the control plane streams the image into its VM, which writes slot B through its virtio disk and
reboots into it while the worker keeps serving; a rollback reboots it into slot A; no boot failed; a boot-crash v3
panics the guest on each of its three tries and the machine falls back to A, each boot's bootloader events logged
once; the VM's log verifies with the cluster's CA alone; a forced reset wipes the worker's STATE and EPHEMERAL from
inside its VM, which reboots into maintenance on its installed slot; `bootstrap` starts etcd inside the controlplane VM
from the image's own root.

Cost: about 4-5 min on two cores under TCG (232 s here, 59 s of it the create: both VMs boot the installer,
install and reboot side by side; 288 s with other suites running; 241 s before, for one VM on a preinstalled
disk), both cores busy while both VMs boot.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from machinekit import gravenctl

from api import _clientconfig
from api._client import GravenClient
from errors import GravenError
from image import build_image, load_signing_key
from node._qemu import qemu_problem
from provision._cluster import netns_problem
from storage import block_problem

PROBLEM = qemu_problem() or block_problem() or netns_problem()  # two VMs share a bridge: network namespaces
pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600),
              pytest.mark.skipif(PROBLEM is not None, reason=f"no qemu machines here: {PROBLEM}")]


class _Watch(threading.Thread):
    """Polls a node's status once a second until stopped: how often it answered, and the boots it reported."""

    def __init__(self, gravenconfig: Path, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.ctx = _clientconfig.load(gravenconfig).current()[1]
        self.endpoint = endpoint
        self.answers = 0
        self.failures: list[str] = []
        self.boot_ids: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                with GravenClient.from_context(self.ctx, self.endpoint, timeout=5) as client:
                    st = client.status()
                self.answers += 1
                self.boot_ids.add(st["boot_id"])
            except GravenError as exc:
                self.failures.append(exc.message)


def _bridged_nic_follows_the_config(worker: dict[str, object], env: dict[str, str], tmp_path: Path) -> None:
    """The worker's VM owns its address on the bridge; an address its machine config adds is set live by the agent
    in the guest (netlink on the virtio NIC) and answers the host."""
    ep = str(worker["endpoint"])
    addrs = json.loads(gravenctl("-n", ep, "-e", ep, "get", "addresses", "-o", "json", env=env).stdout)
    assert any(a["interface"] == "eth0" and a["address"] == f"{worker['address']}/24" for a in addrs), addrs
    extra = str(worker["address"]).rsplit(".", 1)[0] + ".200"
    text = Path(str(worker["config"])).read_text()
    line = f"      - {worker['address']}/24\n"
    assert line in text
    patched = tmp_path / "worker-more.yaml"
    patched.write_text(text.replace(line, line + f"      - {extra}/24\n"))
    r = gravenctl("-n", ep, "-e", ep, "apply-config", "-f", str(patched), "-m", "no-reboot", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    addrs = json.loads(gravenctl("-n", ep, "-e", ep, "get", "addresses", "-o", "json", env=env).stdout)
    assert any(a["interface"] == "eth0" and a["address"] == f"{extra}/24" and a["graven"] for a in addrs), addrs
    socket.create_connection((extra, 50000), timeout=10).close()


def _etcd_runs_in_the_controlplane_vm(node: dict[str, object], env: dict[str, str]) -> None:
    """``gravenctl bootstrap`` on the controlplane VM starts etcd from the VM's own root (the OS image carries it):
    one voting member, and the process inside the guest is the image's /usr/bin/etcd."""
    ep = str(node["endpoint"])
    r = gravenctl("-n", ep, "-e", ep, "bootstrap", "-o", "json", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr + Path(str(node["log"])).read_text(errors="replace")[-3000:]
    r = gravenctl("-n", ep, "-e", ep, "etcd", "members", "-o", "json", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    members = json.loads(r.stdout)
    members = members[0] if isinstance(members, list) else members
    assert [(m["name"], m["learner"]) for m in members["members"]] == [(node["name"], False)], members
    r = gravenctl("-n", ep, "-e", ep, "processes", "-o", "json", env=env, timeout=60)
    assert r.returncode == 0 and "/usr/bin/etcd" in r.stdout, r.stdout + r.stderr


def _reset_wipes_the_disk_from_inside_the_vm(worker: dict[str, object], env: dict[str, str]) -> None:
    """A forced reset of the worker wipes STATE and EPHEMERAL through the guest's virtio disk; the VM reboots from
    its installed slot A into maintenance (the install stays), on the same address."""
    ep = str(worker["endpoint"])
    r = gravenctl("-n", ep, "-e", ep, "reset", "--force", "--reboot", "--wait", "--timeout", "200", "-o", "json",
                  env=env, timeout=260)
    log = Path(str(worker["log"])).read_text(errors="replace")
    assert r.returncode == 0, r.stdout + r.stderr + log[-3000:]
    done = json.loads(r.stdout)
    done = done[0] if isinstance(done, list) else done
    assert done["ok"] and "in maintenance" in done["message"] and "slot A, version v1" in done["message"], done
    assert "wiped EPHEMERAL" in log and log.count("console: graven-init: BOOT-A (/dev/vda2) mounted") >= 2


def test_qemu_cluster_create_upgrade_destroy(tmp_path: Path) -> None:
    state, client = tmp_path / "clusters", tmp_path / "client-config"
    env = {"GRAVENCONFIG": str(client)}
    started = time.monotonic()
    r = gravenctl("cluster", "create", "--name", "q1", "--state", str(state), "--provisioner", "qemu", "--nodes", "2",
                  "--timeout", "400", "-o", "json", timeout=480, env=env)
    try:
        created = time.monotonic() - started
        data = json.loads((state / "q1" / "cluster.json").read_text())
        node, worker = data["nodes"]
        log = Path(node["log"]).read_text(errors="replace")
        assert r.returncode == 0, r.stderr + log[-3000:]
        print(f"cluster create --provisioner qemu --nodes 2 (TCG), to running and ready: {created:.1f} s")
        assert data["network"] == "netns" and (node["type"], worker["type"]) == ("controlplane", "worker")
        assert r.stderr.count("running, ready (slot A, v1)") == 2
        installed = log.index("console: graven-init: the installer image (/dev/vdb) mounted read-only as /")
        assert "the installer image /dev/vdb" in log and "console: graven-init: BOOT-A (/dev/vda2) mounted " \
            "read-only as /" in log[installed:]  # installed from inside the VM, then booted from its disk
        assert f"NIC 52:54:{':'.join(f'{int(b):02x}' for b in node['address'].split('.'))} on tap0" in log
        assert "reboot" in log  # the install's reboot, read from QMP's guest-reset
        ep = node["endpoint"]
        assert ep == f"{node['address']}:50000"  # the VM's own address on the bridge, no forwarded port
        r = gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env)
        assert r.returncode == 0, r.stderr
        server = json.loads(r.stdout)["server"]
        assert server["version"] == "v1" and server["slot"] == "A" and server["node"] == node["name"]
        assert server["kernel"].startswith("6.1.") and server["provisioner"] == "qemu"  # the guest's kernel
        _bridged_nic_follows_the_config(worker, env, tmp_path)

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
        watch = _Watch(Path(data["gravenconfig"]), worker["endpoint"])
        watch.start()
        r = gravenctl("-n", ep, "-e", ep, "upgrade", "--image", str(v2), "--wait", env=env, timeout=300)
        watch.stop.set()
        watch.join()
        log = Path(node["log"]).read_text(errors="replace")
        assert r.returncode == 0, r.stderr + log[-3000:]
        r = gravenctl("-n", ep, "-e", ep, "version", "-o", "json", env=env)
        server = json.loads(r.stdout)["server"]
        assert server["version"] == "v2" and server["slot"] == "B"
        assert "console: graven-init: BOOT-B (/dev/vda3) mounted read-only as /" in log
        # the worker served all along, from the same boot, while the control plane's VM rebooted into v2
        assert watch.answers >= 10 and not watch.failures and len(watch.boot_ids) == 1, (watch.answers, watch.failures)

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
        r = gravenctl("-n", ep, "-e", ep, "events", "-o", "json", env=env, timeout=60)
        events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        selected = [e["payload"]["agent_started_ns"] for e in events if e["kind"] == "boot.selected"]
        assert len(selected) == len(set(selected)), selected  # a crashed boot's events are not logged again
        failed = [e for e in events if e["kind"] == "boot.failed"]
        assert len(failed) == 3 and len({e["payload"]["boot_id"] for e in failed}) == 3, failed
        r = gravenctl("-n", ep, "-e", ep, "audit", "verify", "--ca", data["ca_cert"], env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr  # the VM's whole log, from the cluster's CA alone
        _etcd_runs_in_the_controlplane_vm(node, env)
        _reset_wipes_the_disk_from_inside_the_vm(worker, env)
    finally:
        r = gravenctl("cluster", "destroy", "--name", "q1", "--state", str(state), timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert not (state / "q1").exists()
    print(f"test_qemu_cluster: {time.monotonic() - started:.0f} s")
