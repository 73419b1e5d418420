"""The one place that knows Graven's system tools: what is missing, what a person without root is told, and that
a machine with everything present is left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storage import _systools
from storage._systools import TOOLS, ensure, missing, plan_messages

SCRIPT = Path(_systools.__file__)


def test_every_tool_names_its_package_and_why():
    assert {t.command for t in TOOLS} >= {"mksquashfs", "sfdisk", "mkfs.ext4", "losetup", "mount", "ip"}
    assert all(t.package and t.why for t in TOOLS)
    assert "prometheus" not in {t.command for t in _systools.needed(tests=False)}  # make run does not need it
    assert "prometheus" in {t.command for t in _systools.needed(tests=True)}


def test_missing_uses_the_lookup_it_is_given():
    have = {"mksquashfs", "mount"}
    absent = missing(which=lambda c: f"/x/{c}" if c in have else None)
    assert "mksquashfs" not in {t.command for t in absent} and "sfdisk" in {t.command for t in absent}


def test_no_root_message_is_one_line_per_tool_and_the_command_to_run():
    absent = [t for t in TOOLS if t.command in ("mksquashfs", "sfdisk")]
    lines = plan_messages(absent, root=False, apt=True)
    assert lines == [
        "missing: mksquashfs (Debian package squashfs-tools): builds the signed OS images",
        "missing: sfdisk (Debian package fdisk): partitions GPT block disks",
        "run: sudo apt-get update && sudo apt-get install -y fdisk squashfs-tools",
    ]
    assert plan_messages(absent, root=True, apt=True)[-1] == (
        "run: apt-get update && apt-get install -y fdisk squashfs-tools")
    assert "no apt-get" in plan_messages(absent, root=True, apt=False)[-1]


def test_ensure_without_root_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GRAVEN_TOOLS_PATH", str(tmp_path))

    def no_apt(packages: list[str], out: object) -> int:
        raise AssertionError(f"apt-get was called for {packages}")

    monkeypatch.setattr(_systools, "_apt_install", no_apt)
    out: list[str] = []
    assert ensure(install=True, out=out.append, root=False, apt=True) == 2
    assert out[-1] == "graven set-up: not root, so nothing was installed"
    assert any(line.startswith("graven set-up: run: sudo apt-get") for line in out)


def test_apt_waits_for_a_lock_held_by_another_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh machine's unattended upgrades (or a parallel set-up) hold apt's lock: wait, do not give up."""
    calls = tmp_path / "calls"
    fake = tmp_path / "apt-get"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
if [ "$(wc -l < {calls})" -lt 3 ]; then
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4602 (apt-get)" >&2; exit 100
fi
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(_systools, "APT_LOCK_POLL_S", 0.01)
    out: list[str] = []
    assert _systools._apt_install(["fdisk"], out.append) == 0
    lines = calls.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["update", "update", "update", "install"]
    assert all(line.startswith("-o DPkg::Lock::Timeout=") for line in lines)
    assert out == ["graven set-up: another apt-get holds its lock; waiting for it (up to 300 s)"]


def test_apt_failure_that_is_not_a_lock_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package nosuch' >&2; exit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    out: list[str] = []
    assert _systools._apt_install(["nosuch"], out.append) == 100 and out == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a real non-root run")
def test_script_as_a_real_non_root_user_names_what_is_missing(tmp_path: Path):
    (tmp_path / "sfdisk").symlink_to(shutil.which("true") or "/bin/true")
    env = dict(os.environ, GRAVEN_TOOLS_PATH=str(tmp_path))
    cmd = [sys.executable, str(SCRIPT), "ensure"]
    if os.geteuid() == 0:  # a user namespace without a mapping makes us uid 65534 there: really not root
        cmd = ["unshare", "--user", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert "graven set-up: missing: mksquashfs (Debian package squashfs-tools): builds the signed OS images" in lines
    assert not any("sfdisk" in line and line.startswith("graven set-up: missing") for line in lines)
    assert "graven set-up: run: sudo apt-get update && sudo apt-get install -y" in proc.stderr
    assert lines[-1] == "graven set-up: not root, so nothing was installed" and proc.stdout == ""


def test_script_is_silent_when_everything_is_present():
    if missing():
        pytest.skip(f"this machine lacks {[t.command for t in missing()]}")
    proc = subprocess.run([sys.executable, str(SCRIPT), "ensure"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
