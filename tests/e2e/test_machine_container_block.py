"""A container machine on a block disk (a loop device over a disk image file, as process machines take one with
``--disk``): the installer, as PID 1 of its container, partitions and formats the blank disk with the image's own
sfdisk and mkfs.ext4 and installs v1 into slot A; PID 1's root is then the squashfs on the BOOT-A partition of that
loop device, B after an upgrade, A again after a rollback; a forced reset returns it to maintenance; and a config
naming another disk is refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from machinekit import Images, Machine, Machines, kinds, requires_block

from node._launch import container_problem

pytestmark = [pytest.mark.timeout(300), requires_block,
              pytest.mark.skipif(container_problem() is not None, reason=f"container machines: {container_problem()}")]


def _root_partition(m: Machine) -> dict[str, str]:
    """PID 1's root as the host sees it: its filesystem, the GPT name of the partition it is on and the file
    behind the loop device that partition belongs to."""
    pid = m.pid1()
    assert pid is not None, m.log()
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if fields[4] != "/":
            continue
        part = Path(f"/sys/dev/block/{fields[2]}").resolve()  # .../block/loopN/loopNpK
        backing = (part.parent / "loop" / "backing_file").read_text().strip()
        start = int((part / "start").read_text())  # the GPT name, from the table (partx adds none to sysfs)
        table = json.loads(subprocess.run(["sfdisk", "--json", backing], capture_output=True, text=True,
                                          check=True).stdout)["partitiontable"]["partitions"]
        name = next((p.get("name", "") for p in table if int(p["start"]) == start), "")
        return {"fstype": right.split()[0], "options": fields[5], "partname": name, "backing": backing}
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def _devices_allowed(m: Machine) -> list[str] | None:
    """PID 1's devices cgroup's rules (None where the host has no v1 devices controller)."""
    pid = m.pid1()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "devices" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/devices{path}/devices.list").read_text().splitlines()
    return None


def test_install_upgrade_and_rollback_on_a_block_disk(machines: Machines, images: Images) -> None:
    m = machines.new("cblock", disk="block", boot_from=images.v1, provisioner="container").start()
    m.wait_maintenance()
    assert m.device is not None
    wrong = m.config(install_image=images.v1.as_uri()).read_text().replace(f"disk: {m.device}", "disk: /dev/sdz")
    (m.root / "wrong.yaml").write_text(wrong)
    r = m.ctl("apply-config", "-f", str(m.root / "wrong.yaml"), insecure=True)
    assert r.returncode == 1 and f"names /dev/sdz, but this machine's disk is {m.device}" in r.stderr, r.stderr
    assert subprocess.run(["sfdisk", "--dump", str(m.device)], capture_output=True).returncode != 0  # no table

    m.apply(m.config(install_image=images.v1.as_uri()))
    m.wait_running(version="v1", slot="A")
    install = [e["payload"]["phase"] for e in m.events()
               if e["kind"] == "phase.started" and e["payload"]["sequence"] == "install"]
    assert install == ["disk", "format", "image", "state", "bootloader", "reboot"]
    labels = subprocess.run(["sfdisk", "--json", str(m.device)], capture_output=True, text=True, check=True).stdout
    assert all(f'"name":"{n}"' in labels.replace(" ", "") for n in ("BOOT-A", "BOOT-B", "META", "STATE", "EPHEMERAL"))
    root = _root_partition(m)
    assert (root["fstype"], root["partname"], root["backing"]) == ("squashfs", "BOOT-A", str(m.device))
    assert root["options"].startswith("ro")
    allowed = _devices_allowed(m)
    if allowed is not None:  # the v1 devices controller: /dev's devices, the disk and its partitions by number
        assert "a *:* rwm" not in allowed and "b 259:* rwm" not in allowed and "c 1:3 rwm" in allowed
        assert sum(1 for rule in allowed if rule.startswith("b ")) == 7  # the disk and its six partitions

    r = m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    assert _root_partition(m)["partname"] == "BOOT-B"
    assert (m.ctl_json("version")["server"]["version"], m.ctl_json("version")["server"]["slot"]) == ("v2", "B")

    r = m.ctl("rollback", "--wait", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    assert _root_partition(m)["partname"] == "BOOT-A"
    assert m.ctl_json("version")["server"]["version"] == "v1"
    assert "boot.failed" not in kinds(m.events())
    assert m.audit_verify().returncode == 0

    # a forced reset wipes STATE (the agent, inside) and EPHEMERAL (the supervisor, once the log is closed): back to
    # maintenance on the installed slot, and configured again
    r = m.ctl("reset", "--force", "--reboot", "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    st = m.wait_maintenance(10)
    assert (st["slot"], st["version"]) == ("A", "v1")
    m.apply(m.config(install_image=images.v1.as_uri()))
    m.wait_running(version="v1", slot="A")
    assert "disk.wiped" in kinds(m.events()) and m.audit_verify().returncode == 0
    assert m.stop() == 0
    from provision._destroy import _loops_below, _mounts_below

    assert _mounts_below(m.root) == [] and _loops_below(m.root) == []
