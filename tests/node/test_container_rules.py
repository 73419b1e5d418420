"""The container provisioner's pure rules: how a PID 1's end reads as reboot, power off or a failed boot; which
zombies PID 1 reaps; sizes for --memory; and the node's own view of its processes and mounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node import _pid1, _resources
from node._launch import ContainerResult, classify, parse_size


def test_reboot_and_power_off_come_from_reboot2_signals():
    assert classify(ContainerResult(signal="SIGHUP"), 10) == (10, None)
    assert classify(ContainerResult(signal="SIGINT"), 0) == (0, None)


@pytest.mark.parametrize("code", [0, 10])
def test_a_pid1_that_just_exits_is_a_failed_boot_even_with_a_good_code(code: int):
    got, why = classify(ContainerResult(exit_code=code), 1)
    assert got == 1 and why is not None and "instead of calling reboot(2)" in why


def test_crash_codes_and_signals_pass_through():
    assert classify(ContainerResult(exit_code=70), 70) == (70, None)
    assert classify(ContainerResult(signal="SIGSEGV"), 1) == (-signal.SIGSEGV, None)


def test_oom_kill_is_a_failed_boot_naming_the_limit():
    code, why = classify(ContainerResult(signal="SIGKILL", oom_kills=1, memory_limit=64 << 20), 1)
    assert code == -signal.SIGKILL and why is not None and why.startswith("out of memory")
    assert "exceeded its memory limit (64 MiB" in why


def test_setup_errors_and_missing_results_are_failed_boots_with_a_reason():
    code, why = classify(ContainerResult(setup_error="mount squashfs: EINVAL", exit_code=126), 126)
    assert code == 126 and why == "the container could not start: mount squashfs: EINVAL"
    code, why = classify(None, -9)
    assert code == -9 and why is not None and "no result" in why


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("1G", 1 << 30), ("300MiB", 300 << 20),
                                            (str(64 << 20), 64 << 20)])
def test_parse_size(text: str, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "4M", "", "-5G"])
def test_parse_size_refuses(text: str):
    with pytest.raises(ValueError, match="--memory"):
        parse_size(text)


@given(st.sets(st.integers(2, 10_000)), st.sets(st.integers(2, 10_000)))
def test_only_zombies_seen_twice_are_reaped(before: set[int], now: set[int]):
    reaped = _pid1.to_reap(before, now)
    assert reaped <= now and reaped <= before


def test_zombie_children_are_found_in_proc():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while child.pid not in _pid1.zombie_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.pid in _pid1.zombie_children()
    child.wait()
    assert child.pid not in _pid1.zombie_children()


def test_power_outside_a_pid_namespace_never_calls_reboot():
    assert not _pid1.is_pid1()  # the test runner is not PID 1 of its own pid namespace
    assert _pid1.power(10) == 10 and _pid1.power(0) == 0


def test_the_node_sees_its_processes_and_mounts():
    rows = _resources.processes()
    me = next(r for r in rows if r["pid"] == os.getpid())
    assert me["ppid"] == os.getppid() and me["rss_bytes"] > 0 and "pytest" in me["command"]
    mounts = _resources.mounts()
    assert any(m["mountpoint"] == "/" for m in mounts)
    with pytest.raises(Exception, match="unknown resource 'fish'"):
        _resources.read("fish")


def test_os_image_reads_pretty_name(tmp_path: Path):
    (tmp_path / "os-release").write_text('NAME="Graven"\nPRETTY_NAME="Graven v7"\n')
    assert _resources.os_image(str(tmp_path / "os-release")) == "Graven v7"
    assert _resources.os_image(str(tmp_path / "missing")) == ""
