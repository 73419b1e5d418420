"""The system tools Graven runs, and the one place that installs the missing ones.

Standard library only: ``make run``, ``make test`` and ``.ci/run`` run this file with the machine's Python
before any virtual environment exists (``python3 storage/_systools.py ensure``), and the adapters import it to
name the package of a tool they could not find. On a machine where everything is present the check is a few
``PATH`` look-ups: no apt, no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KERNEL_META", "KERNEL_PACKAGE", "TOOLS", "Tool", "ensure_kernel", "install_command", "kernel_cache",
           "missing", "needed", "package_of", "plan_messages"]


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
    Tool("qemu-system-x86_64", "qemu-system-x86", "runs qemu machines (the tests boot one)", tests_only=True),
    Tool("gcc", "gcc", "compiles the initramfs's init (static) for qemu machines", tests_only=True),
    Tool("dpkg-deb", "dpkg", "unpacks Debian's cloud kernel for qemu machines", tests_only=True),
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


# -- the kernel of qemu machines -------------------------------------------------------------------------------
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # Debian's metapackage; it depends on the versioned kernel package
KERNEL_META = "kernel.json"
KERNEL_SETUP = "python3 storage/_systools.py kernel"


def kernel_cache() -> Path:
    """Where fetched kernels live: ``$GRAVEN_KERNEL_CACHE``, else ``~/.cache/graven/kernel``; one folder per
    Debian package version, each with ``kernel.json`` saying what it holds."""
    env = os.environ.get("GRAVEN_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "graven" / "kernel"


def _kernel_package() -> tuple[str, str] | None:
    """The versioned package the metapackage depends on and its candidate version, from apt's cache."""
    dep = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True, text=True, check=False)
    name = next((line.split(":", 1)[1].strip() for line in dep.stdout.splitlines()
                 if line.strip().startswith("Depends:") and "linux-image-" in line), None)
    if not name:
        return None
    pol = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True, check=False)
    version = next((line.split(":", 1)[1].strip() for line in pol.stdout.splitlines()
                    if line.strip().startswith("Candidate:")), None)
    return (name, version) if version and version != "(none)" else None


def ensure_kernel(out: Callable[[str], None], *, cache: Path | None = None) -> int:
    """Fetch Debian's cloud kernel into the cache (``apt-get download`` + ``dpkg-deb -x``, nothing installed)
    unless the candidate version is there already; 0 when a kernel is cached, else 2 with the reason."""
    cache = cache or kernel_cache()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        out("graven set-up: the qemu machines' kernel comes from Debian (apt-get download "
            f"{KERNEL_PACKAGE}); this machine has no apt-get/dpkg-deb")
        return 2
    found = _kernel_package()
    if found is None:
        _apt(["update", "-qq"], dict(os.environ, DEBIAN_FRONTEND="noninteractive"), out)
        found = _kernel_package()
    if found is None:
        out(f"graven set-up: apt knows no package {KERNEL_PACKAGE} (is this Debian with main enabled?)")
        return 2
    name, version = found
    dest = cache / version
    if (dest / KERNEL_META).is_file():
        return 0
    out(f"graven set-up: fetching the qemu machines' kernel {name} {version} into {dest}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        done = subprocess.run(["apt-get", "download", "-q", f"{name}={version}"], cwd=tmp, check=False,
                              capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        if done.returncode != 0 or not debs:
            out(f"graven set-up: apt-get download {name}={version} failed: {done.stderr.strip()[-300:]}")
            return 2
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            out(f"graven set-up: {debs[0].name} holds no boot/vmlinuz-*")
            return 2
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        meta = {"package": name, "version": version, "release": release,
                "vmlinuz": f"boot/{vmlinuz[0].name}", "modules": f"lib/modules/{release}",
                "sha256": hashlib.sha256(vmlinuz[0].read_bytes()).hexdigest()}
        (root / KERNEL_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    out(f"graven set-up: kernel {release} ({name} {version}) ready")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse  # the command line only: storage._sys imports this module in every agent

    parser = argparse.ArgumentParser(
        prog="python3 storage/_systools.py",
        description="Check that the system tools Graven runs are installed; 'ensure' installs the missing ones "
                    "with apt-get when run as root.")
    parser.add_argument("action", choices=("check", "ensure", "list", "kernel"),
                        help="check only, install, list them, or fetch the qemu machines' kernel (also done by "
                             "'ensure --tests')")
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

    if args.action == "kernel":
        return ensure_kernel(err)
    rc = ensure(install=args.action == "ensure", out=err, tests=args.tests)
    if rc == 0 and args.action == "ensure" and args.tests and os.geteuid() == 0:
        rc = ensure_kernel(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
