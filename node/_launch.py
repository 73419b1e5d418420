"""The container provisioner's launcher: starts the agent as PID 1 of a machine made of namespaces.

The supervisor (firmware and bootloader) has verified and mounted the slot's squashfs; for the boot it forks the
launcher (``Launcher``: a child of its own process, no new interpreter, which would cost ~100 ms of every boot;
``python -m node._launch SPEC.json`` runs the same launcher from a spec file). The launcher
1. makes the machine's memory cgroup (v2 ``memory.max``, or v1 ``memory.limit_in_bytes`` where the memory
   controller is still on the v1 hierarchy) and, where the host has the v1 devices controller, its devices cgroup
   (only /dev's character devices and the machine's block disk and partitions: ``_cgroup.device_rules``), and
   enters them;
2. unshares new pid, mount, uts and ipc namespaces (the network namespace is the supervisor's: the node's own in
   a netns cluster, made by ``provision._netns``) and forks: the child is PID 1 of the new pid namespace;
3. in the child: makes every mount private, binds the slot's root onto itself read-only, mounts a fresh
   ``/proc``, a read-only ``/sys``, a minimal ``/dev`` (null, zero, full, random, urandom, tty; fd links) and
   ``/run`` and ``/tmp`` on tmpfs (a block disk machine's disk and partition nodes in ``/dev`` too), and under
   ``/machine`` (a tmpfs) the machine's disk (``/machine/disk``, which holds STATE and EPHEMERAL; a sandbox
   disk's folder) and run directory (``/machine/run``); then ``pivot_root`` into the slot's root,
   detaches the old root and execs the image's own interpreter with ``-m node agent``;
4. waits. The agent, as PID 1, ends only through reboot(2): the kernel turns that into SIGHUP (reboot) or SIGINT
   (power off) of PID 1, seen here as its death by that signal. Anything else is a failed boot; an OOM kill in the
   cgroup is named as such. The launcher writes what it saw to ``RESULT`` (JSON) and exits 10 (reboot), 0
   (power off) or 1 (failed), so that the supervisor's rule book (``classify``) stays the same for both provisioners.

A machine that exceeds its memory limit dies whole, as a VM would, rather than thrashing or limping on without
the process the kernel picked: no swap to escape to (v2 ``memory.swap.max`` 0; v1 ``memory.memsw.limit_in_bytes``
equal to the limit where swap is accounted, and ``memory.swappiness`` 0), and one OOM kill ends every process in
it (v2 ``memory.oom.group``; on v1 the launcher listens on ``memory.oom_control`` through ``cgroup.event_control``
and kills PID 1, which takes the pid namespace with it). The launcher itself leaves the cgroup once PID 1 is
forked, so it is never the one killed and its memory is not the machine's.

``SIGTERM`` to the launcher is passed on to PID 1 (the agent then shuts down and powers off). The launcher and PID
1 die with the supervisor (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from storage import die_with_parent, libc

from . import _cgroup
from ._boottrace import mark
from ._machine_cgroups import (
    DEVICES_FS,
    enter_cgroup,
    forget,
    leave_cgroup,
    memory_cgroup_root,
    memory_current,
    oom_events,
    step_out,
)

__all__ = [
    "ContainerResult",
    "ContainerSpec",
    "Launcher",
    "block_nodes",
    "classify",
    "container_problem",
    "forget",
    "memory_cgroup_root",
    "memory_current",
    "parse_size",
    "prepare",
    "read_result",
]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, \
    0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, \
    1 << 18
MNT_DETACH = 2
EXIT_POWER_OFF, EXIT_REBOOT, EXIT_FAILED, EXIT_SETUP = 0, 10, 1, 126
DEFAULT_MEMORY = 512 << 20
MACHINE = "/machine"  # where the disk and run directory appear inside
HOST_VIEW = f"{MACHINE}/host"  # where shared host directories appear, at their host paths
S_IFBLK = 0o060000
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DISK_NAME_ENV = "GRAVEN_DISK_NAME"  # the machine's disk as the host names it (graven machine --disk)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


@dataclass
class ContainerSpec:
    root: str  # the slot's mounted (or unpacked) squashfs on the host
    machine_dir: str  # the machine's directory on the host (DIR: DIR/disk, DIR/run)
    argv: list[str]  # the agent's command line inside (the image's interpreter first)
    env: dict[str, str]
    result: str  # where the launcher writes what it saw (JSON)
    pid_file: str  # where the launcher writes PID 1's host pid while it runs
    cgroup: str  # the machine's cgroup directory (created, limited, removed)
    memory: int = DEFAULT_MEMORY
    hostname: str = "graven"
    cgroup_version: int = 2
    shares: list[tuple[str, bool]] = field(default_factory=list)  # host directories shown inside (path, writable)
    disks: list[tuple[str, int, int]] = field(default_factory=list)  # block device nodes in /dev: name, major, minor
    devices_cgroup: str = ""  # the machine's v1 devices cgroup ("" where the host has no v1 devices controller)
    device_rules: list[str] = field(default_factory=list)  # its devices.allow lines (_cgroup.device_rules)

    @classmethod
    def load(cls, path: str) -> ContainerSpec:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


@dataclass
class ContainerResult:
    pid1: int | None = None  # PID 1's pid as the host sees it
    exit_code: int | None = None
    signal: str | None = None
    oom_kills: int = 0
    memory_peak: int | None = None
    memory_limit: int | None = None
    setup_error: str | None = None  # the machine could not be made (before the agent ran)
    notes: list[str] = field(default_factory=list)


def classify(result: ContainerResult | None, launcher_code: int) -> tuple[int, str | None]:
    """The supervisor's reading of one container boot: (the agent's exit code as the process provisioner gives it:
    10 reboot, 0 power off, else failed; why the boot failed, when it did)."""
    if result is None:
        return (launcher_code or EXIT_FAILED), f"the container launcher ended with code {launcher_code} and no result"
    if result.setup_error:
        return EXIT_SETUP, f"the container could not start: {result.setup_error}"
    if result.oom_kills:
        limit = f"{result.memory_limit >> 20} MiB" if result.memory_limit else "its limit"
        return -signal.SIGKILL, (f"out of memory: the machine exceeded its memory limit ({limit}; --memory), the "
                                 f"kernel's OOM killer killed {result.oom_kills} process(es) and the machine with "
                                 "them")
    if result.signal == "SIGHUP":
        return EXIT_REBOOT, None
    if result.signal == "SIGINT":
        return EXIT_POWER_OFF, None
    if result.signal is not None:
        return -signal.Signals[result.signal].value, None
    code = result.exit_code if result.exit_code is not None else EXIT_FAILED
    if code in (EXIT_POWER_OFF, EXIT_REBOOT):
        return EXIT_FAILED, f"PID 1 (the agent) exited with code {code} instead of calling reboot(2)"
    return code, None


# -- the host's side ---------------------------------------------------------------------------------------
PYTHON = "usr/bin/python{}.{}".format(*sys.version_info[:2])  # as image._runtime lays it out
SITE = "usr/lib/python{}.{}/site-packages".format(*sys.version_info[:2])


def agent_env(platform: str, passed: dict[str, str] | None = None) -> dict[str, str]:
    """PID 1's whole environment: the image's interpreter, code and dependencies, nothing of the host."""
    env = {"PATH": "/usr/bin", "HOME": "/run", "LANG": "C.UTF-8", "PYTHONHOME": "/usr",
           "PYTHONPATH": f"/usr/lib/graven:/{SITE}", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1",
           "GRAVEN_BOOT": f"{MACHINE}/run/boot.json", "GRAVEN_PLATFORM": platform, "GRAVEN_HOST_VIEW": HOST_VIEW}
    env.update({k: v for k, v in (passed or {}).items() if k.startswith(("GRAVEN_", "GRPC_")) and k not in env})
    return env


def _share_dir(path: Path, writable: bool) -> bool:
    """A folder to show inside: it must exist (a writable one, an audit sink, is made on first use)."""
    if writable:
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
    return path.is_dir()


def prepare(slot_root: Path, machine_dir: Path, run_dir: Path, agent_args: list[str], *, memory: int,
            platform: str, hostname: str, shares: list[tuple[str, bool]],
            disks: list[tuple[str, int, int]] | None = None, disk_name: str | None = None,
            new_partitions: bool = False) -> tuple[ContainerSpec, Path]:
    """The launcher's spec for one boot (written to ``run_dir/container.json``, which also tells observers the
    machine's cgroup), and its path. Raises ``FileNotFoundError`` naming what the image lacks to boot."""
    if not (slot_root / PYTHON).is_file():
        raise FileNotFoundError(f"the image holds no interpreter (/{PYTHON}): a --code-only image boots only with "
                                "--provisioner process")
    found = memory_cgroup_root()
    if found is None:
        raise FileNotFoundError("no writable memory cgroup for the machine")
    base, version = found
    tag = hashlib.sha256(str(machine_dir).encode()).hexdigest()[:8]
    spec = ContainerSpec(root=str(slot_root), machine_dir=str(machine_dir),
                         argv=[f"/{PYTHON}", "-S", "-P", "-m", "node", "agent", "--root", MACHINE, *agent_args],
                         env={**agent_env(platform, dict(os.environ)),
                              **({DISK_NAME_ENV: disk_name} if disk_name else {})},
                         result=str(run_dir / "container-result.json"),
                         pid_file=str(run_dir / "pid1.pid"), cgroup=str(base / f"{hostname}-{tag}"), memory=memory,
                         hostname=hostname, cgroup_version=version,
                         shares=[(str(Path(p).absolute()), w) for p, w in shares if _share_dir(Path(p), w)],
                         disks=list(disks or []))
    if (DEVICES_FS / "devices.allow").exists() and os.access(DEVICES_FS, os.W_OK):
        spec.devices_cgroup = str(DEVICES_FS / "graven" / f"{hostname}-{tag}")
        spec.device_rules = _cgroup.device_rules(DEVICES.values(), [(ma, mi) for _, ma, mi in spec.disks],
                                                 new_partitions=new_partitions and bool(spec.disks))
    path = run_dir / "container.json"
    spec.save(path)
    return spec, path


def block_nodes(device: Path, sys_block: Path = Path("/sys/class/block")) -> list[tuple[str, int, int]]:
    """The device nodes a container machine gets for its block disk ``device``: (name, major, minor) of the disk
    and of each partition the kernel sees on it now (the agent makes the nodes of partitions it creates)."""
    name = device.resolve().name
    base = sys_block / name
    found = [base, *sorted(p for p in base.iterdir() if p.name.startswith(name) and (p / "partition").exists())]
    nodes = []
    for entry in found:
        major, minor = (int(x) for x in (entry / "dev").read_text().strip().split(":"))
        nodes.append((entry.name, major, minor))
    return nodes


def container_problem() -> str | None:
    """Why this host cannot run container machines (None: it can)."""
    if os.geteuid() != 0:
        return "container machines need root (namespaces, mounts, a memory cgroup)"
    for kind in ("pid", "mnt", "uts", "ipc"):
        if not os.path.exists(f"/proc/self/ns/{kind}"):
            return f"the kernel has no {kind} namespaces"
    if libc() is None:
        return "no C library to call unshare(2) and mount(2) through"
    if memory_cgroup_root() is None:
        return "no writable memory cgroup (v2 memory controller or v1 memory hierarchy)"
    return None


def parse_size(text: str) -> int:
    """``512M``, ``1G``, ``300MiB``, or bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMG" and t else t
    try:
        value = int(float(num) * mult)
    except ValueError:
        raise ValueError(f"--memory {text!r}: a size such as 512M or 1G") from None
    if value < 8 << 20:
        raise ValueError(f"--memory {text!r}: at least 8M")
    return value


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    lib = libc()
    assert lib is not None
    _check(lib.mount(_enc(source), target.encode(), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
           f"mount {fstype or 'bind'} {source or ''} on {target}")


def _enc(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def _wait(pid: int, oom: int | None) -> int:
    """PID 1's wait status; an OOM event (v1) in the meantime kills it. No threads here: after
    ``unshare(CLONE_NEWPID)`` the launcher cannot make any (clone refuses CLONE_THREAD)."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([pidfd, *([oom] if oom is not None else [])], [], [])
            if oom is not None and oom in ready:
                os.eventfd_read(oom)
                _forward(pid, signal.SIGKILL)
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _make_root(spec: ContainerSpec) -> None:
    """Runs in the child (PID 1 of the new namespaces): the mounts, pivot_root, then exec the agent."""
    lib = libc()
    assert lib is not None
    root = spec.root
    # here, not in the launcher: a mount namespace takes effect at once, and pivot_root would move the launcher too
    _check(lib.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare mount, uts and ipc namespaces")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(root, root, None, MS_BIND | MS_REC)  # a mount point of its own, whatever the slot's mount strategy
    _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV | MS_NOSUID)
    _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{root}/dev/{name}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"{root}/dev/{name}", 0o666)
    for name, major, minor in spec.disks:  # the machine's block disk and its partitions, under the host's names
        os.mknod(f"{root}/dev/{name}", 0o600 | S_IFBLK, os.makedev(major, minor))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    _mount("tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64m")
    _mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    _mount("tmpfs", f"{root}{MACHINE}", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for name in ("disk", "run"):
        host = Path(spec.machine_dir) / name
        host.mkdir(parents=True, exist_ok=True)
        os.mkdir(f"{root}{MACHINE}/{name}")
        _mount(str(host), f"{root}{MACHINE}/{name}", None, MS_BIND)
    for host_dir, writable in spec.shares:
        inside = f"{root}{HOST_VIEW}{os.path.abspath(host_dir)}"
        os.makedirs(inside, exist_ok=True)
        _mount(host_dir, inside, None, MS_BIND)
        if not writable:
            _mount(None, inside, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _mount(None, f"{root}{MACHINE}", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    hn = spec.hostname.encode()
    lib.sethostname(hn, len(hn))
    os.chdir(root)
    # pivot_root(".", "."): the old root ends up stacked under the new one, then is detached (no put_old
    # directory is needed in the read-only image)
    _check(lib.syscall(_SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(lib.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def _child(spec: ContainerSpec, setup_error_path: str) -> None:  # pragma: no cover - PID 1 until exec
    try:
        die_with_parent()
        mark("forked", os.path.dirname(spec.pid_file))
        _make_root(spec)
        mark("exec", f"{MACHINE}/run")  # after pivot_root the run directory is the machine's
        os.closerange(3, 65536)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except BaseException as exc:  # anything here is the reason the machine could not start
        with contextlib.suppress(OSError):
            Path(setup_error_path).write_text(f"{exc}")
        os._exit(EXIT_SETUP)


def launch(spec: ContainerSpec) -> int:
    """The launcher process: cgroup, namespaces, fork; wait for PID 1; report. Returns the exit code."""
    result = ContainerResult()
    run_dir = os.path.dirname(spec.result)
    mark("launcher", run_dir)
    lib = libc()
    setup_error = spec.result + ".setup"
    with contextlib.suppress(OSError):
        os.unlink(setup_error)
    if lib is None:
        result.setup_error = "no C library"
        return _finish(spec, result)
    die_with_parent()
    try:
        cg = enter_cgroup(spec, result)
    except OSError as exc:
        result.setup_error = f"memory cgroup {spec.cgroup}: {exc.strerror or exc}"
        return _finish(spec, result)
    try:
        _check(lib.unshare(CLONE_NEWPID), "unshare the pid namespace")  # for the child, not this process
    except OSError as exc:
        result.setup_error = str(exc)
        leave_cgroup(cg, spec, result)
        return _finish(spec, result)
    pid = os.fork()
    if pid == 0:
        _child(spec, setup_error)
    result.pid1 = pid
    step_out(cg, spec)
    oom = oom_events(cg) if spec.cgroup_version == 1 else None
    signal.signal(signal.SIGTERM, lambda *_: _forward(pid, signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: _forward(pid, signal.SIGTERM))
    Path(spec.pid_file).write_text(f"{pid}\n")
    status = _wait(pid, oom)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        result.signal = signal.Signals(sig).name if sig in signal.valid_signals() else f"signal {sig}"
    else:
        result.exit_code = os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):
            result.setup_error = Path(setup_error).read_text() or None if result.exit_code == EXIT_SETUP else None
    leave_cgroup(cg, spec, result)
    with contextlib.suppress(OSError):
        os.unlink(spec.pid_file)
    return _finish(spec, result)


class Launcher:
    """The launcher forked from the supervisor, which waits for it as for a ``subprocess.Popen``: a new session,
    stdin on /dev/null, no descriptor of the supervisor's but stdout and stderr, default signal handling."""

    def __init__(self, spec: ContainerSpec, cwd: Path) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the launcher process
            code = EXIT_FAILED
            try:
                gc.disable()  # nothing of the supervisor's is freed here: its descriptors are closed below
                os.setsid()
                os.chdir(cwd)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.closerange(3, 65536)
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                code = launch(spec)
            finally:
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = self.pid, 0
            if done == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["node._launch"], timeout or 0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            _forward(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _forward(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _finish(spec: ContainerSpec, result: ContainerResult) -> int:
    tmp = spec.result + ".tmp"
    Path(tmp).write_text(json.dumps(asdict(result)))
    os.replace(tmp, spec.result)
    code, _why = classify(result, 0)
    return code if code >= 0 else EXIT_FAILED


def read_result(path: Path) -> ContainerResult | None:
    """The launcher's result file (None when there is none, or it does not read as one)."""
    import msgspec

    try:
        return msgspec.json.decode(path.read_bytes(), type=ContainerResult)
    except (OSError, msgspec.DecodeError):
        return None


if __name__ == "__main__":  # pragma: no cover - the launcher process
    sys.exit(launch(ContainerSpec.load(sys.argv[1])))
