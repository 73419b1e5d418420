"""The memory cgroup's rules for both cgroup versions: what the launcher writes to limit a machine, and the OOM
verdict read from the kernel's counters. The texts below are the files' formats as the kernel's documentation
(cgroup-v2.rst, cgroup-v1/memory.rst) and its source (mm/memcontrol.c) give them; the last test reads the real
file of this host's memory controller around a real OOM kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node import _cgroup
from node._launch import ContainerResult, classify, memory_cgroup_root
from node._machine_cgroups import DEVICES_FS

# v2 memory.events of a machine whose group was killed once (5.19+: oom_group_kill)
V2_KILLED = "low 0\nhigh 0\nmax 1187\noom 3\noom_kill 4\noom_group_kill 1\n"
# v2 before 5.19: no oom_group_kill line
V2_OLD_KERNEL = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n"
V2_QUIET = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"
# v2: the limit was hit (allocations reclaimed their way through) but nothing was killed
V2_HIT_NOT_KILLED = "low 0\nhigh 0\nmax 57\noom 2\noom_kill 0\noom_group_kill 0\n"
V1_KILLED = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
V1_QUIET = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
V1_BEFORE_4_13 = "oom_kill_disable 0\nunder_oom 1\n"  # no oom_kill counter yet


def test_v2_group_kill_is_a_kill():
    v = _cgroup.oom_verdict(2, V2_KILLED)
    assert v.killed and v.kills == 4 and v.group_kills == 1 and v.limit_hits == 3 and v.counted


def test_v2_before_group_kill_counter():
    v = _cgroup.oom_verdict(2, V2_OLD_KERNEL)
    assert v.killed and v.kills == 1 and v.group_kills == 0 and v.counted


def test_v2_limit_hits_without_a_kill_are_no_verdict():
    v = _cgroup.oom_verdict(2, V2_HIT_NOT_KILLED)
    assert not v.killed and v.limit_hits == 2
    assert not _cgroup.oom_verdict(2, V2_QUIET).killed


def test_v1_counts_kills():
    v = _cgroup.oom_verdict(1, V1_KILLED)
    assert v.killed and v.kills == 1 and not v.under_oom and v.counted
    assert not _cgroup.oom_verdict(1, V1_QUIET).killed


def test_v1_before_4_13_says_it_does_not_count():
    v = _cgroup.oom_verdict(1, V1_BEFORE_4_13)
    assert not v.counted and v.under_oom and not v.killed


@pytest.mark.parametrize(("version", "text", "line"), [(2, "low 0\nhigh lots\n", 2), (1, "oom_kill\n", 1)])
def test_a_garbled_counter_file_names_the_file_and_line(version: int, text: str, line: int):
    name = "memory.events" if version == 2 else "memory.oom_control"
    with pytest.raises(ValueError, match=f"{name} line {line}"):
        _cgroup.oom_verdict(version, text)


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="cgroup version 3"):
        _cgroup.oom_verdict(3, V2_QUIET)
    with pytest.raises(ValueError, match="cgroup version 0"):
        _cgroup.limit_settings(0, 1 << 20)


@given(st.dictionaries(st.sampled_from(["low", "high", "max", "oom", "oom_kill", "oom_group_kill"]),
                       st.integers(0, 2**63 - 1)))
def test_v2_verdict_reads_back_what_the_kernel_wrote(counters: dict[str, int]):
    text = "".join(f"{k} {v}\n" for k, v in counters.items())
    v = _cgroup.oom_verdict(2, text)
    assert v.kills == counters.get("oom_kill", 0) and v.group_kills == counters.get("oom_group_kill", 0)
    assert v.killed == (counters.get("oom_kill", 0) > 0 or counters.get("oom_group_kill", 0) > 0)


def test_v2_settings_leave_no_swap_and_kill_the_whole_group():
    got = {s.name: (s.value, s.required) for s in _cgroup.limit_settings(2, 512 << 20)}
    assert got == {"memory.max": (str(512 << 20), True), "memory.swap.max": ("0", False),
                   "memory.oom.group": ("1", False)}
    assert _cgroup.limit_settings(2, 64 << 20)[0].name == "memory.max"  # the limit first: the rest is optional


def test_v1_settings_cap_memory_and_swap_alike():
    got = {s.name: (s.value, s.required) for s in _cgroup.limit_settings(1, 64 << 20)}
    assert got == {"memory.limit_in_bytes": (str(64 << 20), True),
                   "memory.memsw.limit_in_bytes": (str(64 << 20), False), "memory.swappiness": ("0", False)}


def test_files_by_role_differ_per_version():
    assert _cgroup.files(2)["events"] == "memory.events" and _cgroup.files(1)["events"] == "memory.oom_control"
    assert _cgroup.files(2)["limit"] == "memory.max" and _cgroup.files(1)["limit"] == "memory.limit_in_bytes"


def test_classify_names_a_group_kill_out_of_memory():
    v = _cgroup.oom_verdict(2, V2_KILLED)
    code, why = classify(ContainerResult(signal="SIGKILL", oom_kills=max(v.kills, v.group_kills),
                                         memory_limit=256 << 20), 1)
    assert code == -signal.SIGKILL and why is not None and "256 MiB" in why and "killed 4 process" in why


def test_a_real_oom_kill_reads_as_killed_on_this_hosts_cgroup_version():
    """A process over its cgroup's limit, limited by the same settings as a machine: the kernel's own counters
    file (whichever version this host's memory controller runs) reads as killed, and before it as quiet."""
    found = memory_cgroup_root()
    assert found is not None, "the tests run as root on a host with a memory cgroup"
    base, version = found
    cg = base / f"oom-test-{os.getpid()}"
    cg.mkdir(parents=True, exist_ok=True)
    if version == 2:
        with contextlib.suppress(OSError):
            (cg.parent / "cgroup.subtree_control").write_text("+memory")
    try:
        for s in _cgroup.limit_settings(version, 32 << 20):
            try:
                (cg / s.name).write_text(s.value)
            except OSError:
                assert not s.required, s.name
        events = cg / _cgroup.files(version)["events"]
        assert not _cgroup.oom_verdict(version, events.read_text()).killed
        hog = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (256 << 20); time.sleep(30)"],
                               preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
        assert hog.wait(timeout=60) == -signal.SIGKILL
        verdict = _cgroup.oom_verdict(version, events.read_text())
        assert verdict.killed and verdict.counted and verdict.kills >= 1
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        assert not Path(cg).exists()


def test_device_rules_allow_the_machines_devices_and_new_partitions_only_when_asked():
    rules = _cgroup.device_rules([(1, 3), (5, 0)], [(7, 4), (259, 2)], new_partitions=False)
    assert rules == ["c 1:3 rwm", "c 5:0 rwm", "b 7:4 rwm", "b 259:2 rwm"]
    with_new = _cgroup.device_rules([(1, 3)], [(7, 4)], new_partitions=True)
    assert with_new[-1] == f"b {_cgroup.BLOCK_EXT_MAJOR}:* rwm" and not any(r.startswith("b 7:*") for r in with_new)


# a process in the machine's cgroups, as PID 1 is: it may open its /dev's devices and its disk, nothing else
_PROBE = """
import errno, json, os, sys
from pathlib import Path
from node._launch import ContainerResult, ContainerSpec
from node._machine_cgroups import enter_cgroup, leave_cgroup
spec = ContainerSpec(**json.loads(sys.argv[1]))
cg = enter_cgroup(spec, ContainerResult())
got = {}
for name, path in (("null", "/dev/null"), ("kmsg", "/dev/kmsg"), ("loop-control", "/dev/loop-control")):
    try:
        os.close(os.open(path, os.O_RDONLY))
        got[name] = "ok"
    except OSError as exc:
        got[name] = errno.errorcode[exc.errno]
node = Path(sys.argv[2])
try:
    os.mknod(node, 0o600 | 0o060000, os.makedev(7, 250))
    got["mknod-loop250"] = "ok"
except OSError as exc:
    got["mknod-loop250"] = errno.errorcode[exc.errno]
leave_cgroup(cg, spec, ContainerResult())
print(json.dumps(got))
"""


# the launcher makes a devices cgroup only where this file exists (node._launch.prepare): elsewhere there is no
# restriction to test (v2 device control needs a BPF program, documented as not done); this host has it, so it runs
@pytest.mark.skipif(not (DEVICES_FS / "devices.allow").exists(),
                    reason="no v1 devices controller here (v2 device control needs a BPF program, not loaded)")
def test_a_machine_opens_only_its_own_devices(tmp_path: Path):
    """The launcher's own cgroup set-up (v1 devices controller, where the host has one) in a process that then
    tries the devices: /dev/null is allowed, the kernel log, loop-control and any other block device are not."""
    import json
    from dataclasses import asdict

    from node import _launch

    found = memory_cgroup_root()
    assert found is not None
    base, version = found
    spec = _launch.ContainerSpec(root="/", machine_dir=str(tmp_path), argv=[], env={}, result="", pid_file="",
                                 cgroup=str(base / f"devtest-{os.getpid()}"), memory=64 << 20, cgroup_version=version,
                                 devices_cgroup=str(_launch.DEVICES_FS / "graven" / f"devtest-{os.getpid()}"),
                                 device_rules=_cgroup.device_rules(_launch.DEVICES.values(), [], new_partitions=False))
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(asdict(spec)), str(tmp_path / "loop250")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got == {"null": "ok", "kmsg": "EPERM", "loop-control": "EPERM", "mknod-loop250": "EPERM"}
    assert not Path(spec.cgroup).exists() and not Path(spec.devices_cgroup).exists()
