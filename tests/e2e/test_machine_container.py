"""Container machines (``--provisioner container``): the agent is PID 1 of its own pid namespace with the slot's
squashfs as its root, seen from the host's /proc; upgrade, rollback, the fallback from a broken image and reset work
there as they do for process machines, and a machine that allocates past its memory limit is killed whole (an image
built with the test-only fault point ``oom``) and counted as a failed boot, out of memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from machinekit import Images, Machine, Machines, kinds

from node._launch import container_problem

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(container_problem() is not None, reason=f"container machines: {container_problem()}")]


def _root_of(pid: int) -> dict[str, str]:
    """PID ``pid``'s root as the host sees it: its mount (from /proc/PID/mountinfo), and the file behind the
    loop device it is on."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if fields[4] == "/":
            fstype, source = right.split()[:2]
            backing = ""
            if source.startswith("/dev/loop"):
                backing = Path(f"/sys/block/{Path(source).name}/loop/backing_file").read_text().strip()
            return {"fstype": fstype, "source": source, "mount_options": fields[5], "backing": backing}
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def _pid1(m: Machine) -> dict[str, Any]:
    pid = m.pid1()
    assert pid is not None, m.log()
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return {"pid": pid, "nspid": status["NSpid"].split(), "cmdline": [c.decode() for c in cmdline if c],
            "own_pidns": os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid"),
            "own_mntns": os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"),
            "root": _root_of(pid)}


# run inside the machine's pid namespace: fork a child that outlives its parent by two seconds
ORPHAN = "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(2.0)\n    os._exit(7)\nprint(pid)\n"


def _host_pid(pid1: int, nspid: int) -> int:
    """The host's pid of process ``nspid`` of PID 1's pid namespace."""
    ns = os.readlink(f"/proc/{pid1}/ns/pid")
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.readlink(d / "ns" / "pid") == ns:
                status = dict(x.split(":\t", 1) for x in (d / "status").read_text().splitlines() if ":\t" in x)
                if int(status["NSpid"].split()[-1]) == nspid:
                    return int(d.name)
        except (OSError, KeyError, ValueError):
            continue
    raise AssertionError(f"no process {nspid} in the pid namespace of {pid1}")


def _orphan_is_reaped(m: Machine) -> None:
    """A process whose parent exits is re-parented to the machine's PID 1 (the agent), which reaps it once it
    exits: without a reaper it would stay a zombie for the machine's whole life."""
    pid1 = m.pid1()
    assert pid1 is not None, m.log()
    done = subprocess.run(["nsenter", f"--target={pid1}", "--pid", "--", sys.executable, "-S", "-c", ORPHAN],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    orphan = _host_pid(pid1, int(done.stdout))
    ppid = next(x for x in Path(f"/proc/{orphan}/status").read_text().splitlines() if x.startswith("PPid:"))
    assert int(ppid.split()[1]) == pid1  # re-parented to the agent
    deadline = time.monotonic() + 10
    while Path(f"/proc/{orphan}").exists():
        assert time.monotonic() < deadline, f"orphan {orphan} not reaped: {Path(f'/proc/{orphan}/stat').read_text()}"
        time.sleep(0.2)


def test_pid1_is_the_agent_on_the_slot_squashfs_and_an_upgrade_moves_it_to_the_other_slot(
        machines: Machines, images: Images) -> None:
    m = machines.installed("pid1", provisioner="container")
    first = _pid1(m)
    assert first["own_pidns"] and first["own_mntns"] and first["nspid"][-1] == "1"
    assert first["cmdline"][0] == "/usr/bin/python3.11" and first["cmdline"][2:6] == ["-P", "-m", "node", "agent"]
    assert first["root"]["fstype"] == "squashfs" and first["root"]["mount_options"].startswith("ro")
    assert first["root"]["backing"] == str(m.root / "disk" / "BOOT-A")

    r = m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    after = _pid1(m)
    assert after["pid"] != first["pid"] and after["nspid"][-1] == "1"
    assert after["root"]["fstype"] == "squashfs" and after["root"]["backing"] == str(m.root / "disk" / "BOOT-B")
    version = m.ctl_json("version")["server"]
    assert (version["version"], version["slot"]) == ("v2", "B")

    r = m.ctl("rollback", "--wait", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    assert _pid1(m)["root"]["backing"] == str(m.root / "disk" / "BOOT-A")
    assert m.ctl_json("version")["server"]["version"] == "v1"
    # each reboot was PID 1's reboot(2), read by the supervisor as a reboot, not as a failed boot
    assert "boot.failed" not in kinds(m.events())
    assert m.audit_verify().returncode == 0


def test_a_crashing_image_spends_its_tries_and_falls_back(machines: Machines, images: Images) -> None:
    m = machines.installed("fallback", provisioner="container")
    v3 = images.build("v3", fault="boot-crash")
    r = m.ctl("upgrade", "--image", str(v3), "--wait", timeout=180)
    assert r.returncode != 0
    m.wait_running(90, version="v1", slot="A")
    events = m.events()
    failed = [e["payload"] for e in events if e["kind"] == "boot.failed"]
    assert len(failed) == 3 and all(f["slot"] == "B" and f["exit_code"] == 70 for f in failed), failed
    fallback = [e["payload"] for e in events if e["kind"] == "boot.fallback"]
    assert fallback and (fallback[-1]["from_slot"], fallback[-1]["to_slot"]) == ("B", "A")
    assert _pid1(m)["root"]["backing"] == str(m.root / "disk" / "BOOT-A")


def test_pid1_reaps_orphans_and_a_reset_returns_to_maintenance(machines: Machines) -> None:
    m = machines.installed("reset", provisioner="container")
    _orphan_is_reaped(m)
    r = m.ctl("reset", "--force", "--reboot", "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    st = m.wait_maintenance(20)
    assert st["slot"] == "A" and st["version"] == "v1"
    assert list((m.root / "disk" / "STATE").iterdir()) == []
    assert _pid1(m)["nspid"][-1] == "1"


def test_a_machine_past_its_memory_limit_is_killed_whole_and_spends_a_try(machines: Machines, images: Images) -> None:
    """The fault image's agent starts a process that allocates without end: the kernel's OOM killer picks that
    process, and the machine's cgroup takes PID 1 with it (had the agent lived on, the boot would commit)."""
    m = machines.installed("oom", provisioner="container", memory="160M")
    bad = images.build("v4", fault="oom")
    r = m.ctl("upgrade", "--image", str(bad), "--wait", timeout=180)
    assert r.returncode != 0, r.stdout + m.log()
    m.wait_running(90, version="v1", slot="A")
    failed = [e["payload"] for e in m.events() if e["kind"] == "boot.failed"]
    assert len(failed) == 3, failed
    for f in failed:
        assert f["slot"] == "B" and f["signal"] == "SIGKILL", f
        assert f["reason"].startswith("out of memory: the machine exceeded its memory limit (160 MiB"), f
    env = m.meta()
    assert env.default.value == "A" and not env.b.good and env.b.tries_left == 0
    assert "out of memory" in m.log_path.read_text(errors="replace")
    assert _pid1(m)["root"]["backing"] == str(m.root / "disk" / "BOOT-A")
