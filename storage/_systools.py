"""The system tools Graven runs, and the one place that installs the missing ones.

Standard library only: ``make run``, ``make test`` and ``.ci/run`` run this file with the machine's Python
before any virtual environment exists (``python3 storage/_systools.py ensure``), and the adapters import it to
name the package of a tool they could not find. On a machine where everything is present the check is a few
``PATH`` look-ups: no apt, no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["TOOLS", "Tool", "install_command", "missing", "needed", "package_of", "plan_messages"]


@dataclass(frozen=True, slots=True)
class Tool:
    command: str
    package: str  # the Debian package that ships it
    why: str
    tests_only: bool = False  # only the test suite runs it: `make run` does not install it


TOOLS: tuple[Tool, ...] = (
    Tool("mksquashfs", "squashfs-tools", "builds the signed OS images"),
    Tool("ldd", "libc-bin", "finds the shared libraries an OS image's interpreter needs"),
    Tool("unsquashfs", "squashfs-tools", "reads a slot's image where it cannot be mounted"),
    Tool("sfdisk", "fdisk", "partitions GPT block disks"),
    Tool("mkfs.ext4", "e2fsprogs", "formats STATE and EPHEMERAL on block disks"),
    Tool("losetup", "mount", "attaches disk image files as loop devices"),
    Tool("mount", "mount", "mounts slots and partitions read-only"),
    Tool("umount", "mount", "unmounts them"),
    Tool("ip", "iproute2", "makes the network namespaces of local clusters"),
    Tool("etcd", "etcd-server", "the controlplane's etcd (process and netns machines take it from the host)"),
    Tool("etcdctl", "etcd-client", "etcd's own client: tests check that it accepts Graven's etcd certificates"),
    Tool("prometheus", "prometheus", "scrapes a real node's metrics in the end-to-end tests", tests_only=True),
)


def needed(*, tests: bool) -> tuple[Tool, ...]:
    return tuple(t for t in TOOLS if tests or not t.tests_only)

# sbin folders are not on a normal user's PATH, but the tools there run for them too (or refuse with a reason)
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _search_path() -> str:
    """``GRAVEN_TOOLS_PATH`` when set (where to look, alone), else ``PATH`` plus the sbin folders."""
    if "GRAVEN_TOOLS_PATH" in os.environ:
        return os.environ["GRAVEN_TOOLS_PATH"]
    parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(parts + [d for d in _SBIN if d not in parts])


def missing(tools: Iterable[Tool] = TOOLS, which: Callable[[str], str | None] | None = None) -> list[Tool]:
    """The tools that are not on ``PATH`` (plus the sbin folders)."""
    if which is None:
        path = _search_path()

        def which(cmd: str) -> str | None:
            return shutil.which(cmd, path=path)

    return [t for t in tools if which(t.command) is None]


def package_of(command: str) -> str | None:
    return next((t.package for t in TOOLS if t.command == command), None)


def _packages(tools: Iterable[Tool]) -> list[str]:
    return sorted({t.package for t in tools})


def install_command(tools: Iterable[Tool], *, root: bool) -> str:
    pkgs = " ".join(_packages(tools))
    return f"{'' if root else 'sudo '}apt-get update && {'' if root else 'sudo '}apt-get install -y {pkgs}"


def plan_messages(absent: Sequence[Tool], *, root: bool, apt: bool) -> list[str]:
    """What to tell a person who cannot (or may not) have the tools installed for them: one line per tool."""
    lines = [f"missing: {t.command} (Debian package {t.package}): {t.why}" for t in absent]
    if not apt:
        lines.append("this machine has no apt-get: install the packages above with its own package manager")
    else:
        lines.append(f"run: {install_command(absent, root=root)}")
    return lines


APT_LOCK_WAIT_S = 300.0
APT_LOCK_POLL_S = 2.0


def _apt(args: list[str], env: dict[str, str], out: Callable[[str], None]) -> int:
    """One apt-get call that waits for the dpkg and lists locks held by another apt (a fresh machine's
    unattended upgrades, a parallel set-up) instead of failing at once."""
    deadline = time.monotonic() + APT_LOCK_WAIT_S
    told = False
    while True:
        done = subprocess.run(["apt-get", "-o", f"DPkg::Lock::Timeout={int(APT_LOCK_WAIT_S)}", *args], env=env,
                              check=False, stderr=subprocess.PIPE, text=True)
        if done.returncode == 0 or "Could not get lock" not in done.stderr or time.monotonic() > deadline:
            sys.stderr.write(done.stderr)
            return done.returncode
        if not told:
            out("graven set-up: another apt-get holds its lock; waiting for it (up to "
                f"{int(APT_LOCK_WAIT_S)} s)")
            told = True
        time.sleep(APT_LOCK_POLL_S)


def _apt_install(packages: list[str], out: Callable[[str], None]) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    rc = _apt(["update", "-qq"], env, out)
    if rc != 0:
        return rc
    return _apt(["install", "-y", "-qq", "--no-install-recommends", *packages], env, out)


def ensure(*, install: bool, out: Callable[[str], None], root: bool | None = None, apt: bool | None = None,
           tests: bool = True) -> int:
    """0 when every tool is present (after installing the missing ones as root, if ``install``); else 2."""
    absent = missing(needed(tests=tests))
    if not absent:
        return 0
    root = os.geteuid() == 0 if root is None else root
    apt = shutil.which("apt-get") is not None if apt is None else apt
    if install and root and apt:
        pkgs = _packages(absent)
        out(f"graven set-up: installing {' '.join(pkgs)} with apt-get (for "
            + "; ".join(f"{t.command}: {t.why}" for t in absent) + ")")
        rc = _apt_install(pkgs, out)
        absent = missing(needed(tests=tests))
        if rc == 0 and not absent:
            return 0
        out(f"graven set-up: apt-get install {' '.join(pkgs)} failed (exit {rc})")
    for line in plan_messages(absent, root=root, apt=apt):
        out(f"graven set-up: {line}")
    if install and not root:
        out("graven set-up: not root, so nothing was installed")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 storage/_systools.py",
        description="Check that the system tools Graven runs are installed; 'ensure' installs the missing ones "
                    "with apt-get when run as root.")
    parser.add_argument("action", choices=("check", "ensure", "list"), help="check only, install, or list them")
    parser.add_argument("--tests", action="store_true", help="also the tools only the test suite runs")
    args = parser.parse_args(argv)
    if args.action == "list":
        absent = {t.command for t in missing()}
        for t in TOOLS:
            print(f"{t.command:<11} {t.package:<15} {'missing' if t.command in absent else 'ok':<8} {t.why}"
                  + (" (tests)" if t.tests_only else ""))
        return 0

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return ensure(install=args.action == "ensure", out=err, tests=args.tests)


if __name__ == "__main__":
    sys.exit(main())
