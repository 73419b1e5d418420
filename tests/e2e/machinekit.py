"""End-to-end helpers and fixtures: real machines (``graven machine`` processes), real squashfs images, driven by
``gravenctl``. Tests import helpers from here by name (``conftest`` is a module name every test folder has);
``conftest.py`` re-exports the fixtures.

- ``secrets`` (session): a cluster's CA, image signing key and admin client config (``gravenctl gen config``).
- ``images`` (session): ``images.build(version, fault=None, overlay=None)`` builds (once) and returns a signed
  image file; ``images.v1`` / ``images.v2`` are the common ones.
- ``machines``: ``machines.new(disk="sandbox"|"block", ...)`` makes a ``Machine`` (not started; a sandbox one is a
  container machine where root allows, else a process one; ``$GRAVEN_PROVISIONER`` or ``provisioner=`` decide
  otherwise); every machine is stopped, unmounted and its loop devices detached after the test.
  ``machines.installed(...)`` returns one that booted the v1 installer, got its config and runs v1 from slot A.
- ``Machine``: ``start``, ``ctl(...)`` (a ``gravenctl`` subprocess against it), ``ctl_json``, ``apply``,
  ``wait_maintenance``, ``wait_running``, ``status``, ``events``, ``stop``, ``kill_agent``, ``kill_supervisor``,
  ``meta`` (the boot environment read straight from the sandbox disk), ``log`` (the machine's output).
- ``block_ok`` / ``requires_block``: the block backend needs root and loop devices; tests say why they skip.

Waits poll the node in-process with ``api``'s client (cheap); every action goes through ``gravenctl``/``graven``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
HEALTH_TIMEOUT = 5.0  # seconds: a boot whose services are not healthy by then fails (short, for the tests)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.pop("GRAVENCONFIG", None)
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    env.update(extra or {})
    return env


def gravenctl(*args: str, timeout: float = 60, input: bytes | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``gravenctl ARGS`` (``python -m cli``) and return the finished process (text output)."""
    return subprocess.run([PY, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(env), cwd=REPO, input=input.decode() if input is not None else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def block_problem() -> str | None:
    from storage import block_problem as problem

    return problem()


requires_block = pytest.mark.skipif(block_problem() is not None,
                                    reason=f"block backend unavailable: {block_problem()}")


def _default_provisioner() -> str:
    """The machines' provisioner when a test names none: container where root and namespaces allow it (as
    ``cluster create``'s default), else process."""
    from node._launch import container_problem

    return "container" if container_problem() is None else "process"


# -- secrets and images ----------------------------------------------------------------------------------
@dataclass
class Secrets:
    dir: Path
    name: str = "e2e"

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def image_key(self) -> Path:
        return self.dir / "image.key"

    @property
    def image_pub(self) -> Path:
        return self.dir / "image.pub"

    @property
    def gravenconfig(self) -> Path:
        return self.dir / "gravenconfig"

    def machine_config(self, path: Path, endpoint: str, *, hostname: str, install_image: Path | str | None,
                       install_disk: str = "/dev/sda", sinks: Sequence[str] = ()) -> Path:
        import config

        cfg = config.default_config(self.name, f"https://{endpoint}", self.ca_crt.read_bytes(),
                                    (self.dir / "ca.key").read_bytes(), [self.image_pub.read_bytes()],
                                    hostname=hostname, install_disk=install_disk,
                                    install_image=str(install_image) if install_image else None, sinks=sinks)
        text = config.dump_yaml(cfg)
        config.validate(text).unwrap(str(path))
        path.write_text(text)
        path.chmod(0o600)
        return path


@pytest.fixture(scope="session")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    d = tmp_path_factory.mktemp("secrets")
    r = gravenctl("gen", "config", "e2e", "127.0.0.1:50000", "-o", str(d))
    assert r.returncode == 0, r.stderr
    return Secrets(d)


class Images:
    """Signed images built on demand with ``gravenctl image build``, once per (version, fault, overlay)."""

    def __init__(self, directory: Path, secrets: Secrets) -> None:
        self.dir = directory
        self.secrets = secrets
        self._built: dict[tuple[str, str | None, str | None], Path] = {}

    def build(self, version: str, *, fault: str | None = None, overlay: Path | None = None,
              name: str | None = None, key: Path | None = None) -> Path:
        cache = (version, fault, str(overlay) if overlay else None)
        if key is None and cache in self._built:
            return self._built[cache]
        out = self.dir / (name or f"{version}{'-' + fault if fault else ''}{'-overlay' if overlay else ''}.img")
        args = ["image", "build", "--version", version, "--key", str(key or self.secrets.image_key), "-o", str(out)]
        if fault:
            args += ["--fault", fault]
        if overlay:
            args += ["--overlay", str(overlay)]
        r = gravenctl(*args, timeout=120)
        assert r.returncode == 0, r.stderr
        if key is None:
            self._built[cache] = out
        return out

    @property
    def v1(self) -> Path:
        return self.build("v1")

    @property
    def v2(self) -> Path:
        return self.build("v2")

    def overlay(self, name: str, files: dict[str, str]) -> Path:
        """An overlay tree (path in the image -> text) under the images folder."""
        root = self.dir / f"overlay-{name}"
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return root


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory, secrets: Secrets) -> Images:
    return Images(tmp_path_factory.mktemp("images"), secrets)


# -- machines ----------------------------------------------------------------------------------------------
class Machine:
    """One ``graven machine`` process (the supervisor) and its disk under ``root``."""

    def __init__(self, root: Path, secrets: Secrets, *, disk: str = "sandbox", boot_from: Path | None = None,
                 port: int | None = None, health_timeout: float | None = HEALTH_TIMEOUT,
                 max_failed_boots: int = 10, provisioner: str | None = None, memory: str | None = None,
                 shares: Sequence[Path] = ()) -> None:
        self.root = root
        self.secrets = secrets
        self.disk = disk
        self.boot_from = boot_from
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.device = root / "disk.img" if disk == "block" else None
        self.health_timeout = health_timeout
        self.max_failed_boots = max_failed_boots
        # container machines where root allows them, as cluster create does (block disks stay process machines
        # here, so that both provisioners run the block tests: test_machine_container_block runs containers);
        # $GRAVEN_PROVISIONER=process runs the machine tests on process machines
        default = (os.environ.get("GRAVEN_PROVISIONER") or _default_provisioner()) if disk == "sandbox" else "process"
        self.provisioner, self.memory, self.shares = provisioner or default, memory, list(shares)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "machine.log"
        root.mkdir(parents=True, exist_ok=True)
        if self.device is not None and not self.device.exists():
            with open(self.device, "wb") as f:
                f.truncate(512 << 20)

    def __repr__(self) -> str:
        return f"Machine({self.root}, {self.disk}, {self.endpoint})"

    # -- power ---------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [PY, "-m", "node", "machine", "--root", str(self.root), "--listen", self.endpoint,
               "--trusted-key", str(self.secrets.image_pub), "--grace", "10",
               "--max-failed-boots", str(self.max_failed_boots)]
        if self.boot_from is not None:
            cmd += ["--boot-from", str(self.boot_from)]
        if self.device is not None:
            cmd += ["--disk", str(self.device)]
        if self.health_timeout is not None:
            cmd += ["--health-timeout", f"{self.health_timeout:g}"]
        if self.provisioner != "process":
            cmd += ["--provisioner", self.provisioner, *(["--memory", self.memory] if self.memory else [])]
            cmd += [a for p in self.shares for a in ("--share", str(p))]
        return cmd

    def start(self) -> Machine:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=_env(), cwd=self.root,
                                         start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def agent_pid(self) -> int | None:
        try:
            pid = int((self.root / "run" / "agent.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def pid1(self) -> int | None:
        """Container machines: the host's pid of the machine's PID 1 (the agent), while it runs."""
        try:
            return int((self.root / "run" / "pid1.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill_agent(self) -> bool:
        pid = self.agent_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def kill_supervisor(self) -> None:
        """Pull the plug: SIGKILL the supervisor; its agent dies with it (PR_SET_PDEATHSIG)."""
        assert self.proc is not None
        agent = self.agent_pid()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while agent is not None and time.monotonic() < deadline:
            try:
                os.kill(agent, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        else:
            if agent is not None:
                raise AssertionError(f"the agent {agent} outlived its killed supervisor")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM the supervisor (a graceful shutdown of the agent) and wait; kill if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stop, then undo whatever a killed machine left: processes, mounts, loop devices."""
        self.stop()
        pid = self.agent_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from node._launch import forget
        from provision._destroy import _loops_below, _mounts_below

        forget(self.root)

        for point in _mounts_below(self.root):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        for _ in range(2):
            for dev in _loops_below(self.root):
                subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)

    # -- talking to it -------------------------------------------------------------------------------------
    def ctl(self, *args: str, timeout: float = 60, insecure: bool = False) -> subprocess.CompletedProcess[str]:
        extra = ["--insecure"] if insecure else []
        return gravenctl("--gravenconfig", str(self.secrets.gravenconfig), "-e", self.endpoint, *args, *extra,
                         timeout=timeout)

    def ctl_json(self, *args: str, timeout: float = 60, insecure: bool = False) -> Any:
        r = self.ctl(*args, "-o", "json", timeout=timeout, insecure=insecure)
        assert r.returncode == 0, f"gravenctl {' '.join(args)}: {r.stderr}\n{self.log()}"
        return json.loads(r.stdout)

    def config(self, *, install_image: Path | str | None, sinks: Sequence[str] = (),
               name: str = "config.yaml") -> Path:
        return self.secrets.machine_config(self.root / name, self.endpoint, hostname=self.root.name,
                                           install_image=install_image,
                                           install_disk=str(self.device) if self.device else "/dev/sda",
                                           sinks=sinks)

    def apply(self, config_path: Path, *, insecure: bool = True) -> subprocess.CompletedProcess[str]:
        r = self.ctl("apply-config", "-f", str(config_path), insecure=insecure)
        assert r.returncode == 0, f"apply-config: {r.stderr}\n{self.log()}"
        return r

    def _client(self, insecure: bool, timeout: float = 3) -> Any:
        from api import _clientconfig
        from api._client import GravenClient

        if insecure:
            return GravenClient.insecure(self.endpoint, quiet=True, timeout=timeout)
        ctx = _clientconfig.load(self.secrets.gravenconfig).current()[1]
        return GravenClient.from_context(ctx, self.endpoint, timeout=timeout)

    def status(self, insecure: bool = False) -> dict[str, Any] | None:
        """The node's status, or None while it cannot be reached (booting, or maintenance without --insecure)."""
        from errors import GravenError

        try:
            with self._client(insecure) as client:
                return dict(client.status())
        except GravenError:
            return None

    def wait_maintenance(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            st = self.status(insecure=True)
            if st is not None and st["stage"] == "maintenance":
                return st
            time.sleep(0.1)
        raise AssertionError(f"{self}: no maintenance mode within {timeout} s\n{self.log()}")

    def wait_running(self, timeout: float = 30, *, version: str | None = None, slot: str | None = None,
                     boot_id_not: str | None = None) -> dict[str, Any]:
        """Wait until the node is Running and ready (its boot committed), optionally on a given version/slot."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            st = self.status()
            if st is not None:
                last = st
                if (st["stage"] == "running" and st["ready"] and (version is None or st["version"] == version)
                        and (slot is None or st["slot"] == slot) and st["boot_id"] != boot_id_not):
                    return st
            time.sleep(0.1)
        raise AssertionError(f"{self}: not Running (version {version}, slot {slot}) within {timeout} s; "
                             f"last status {last}\n{self.log()}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self}: the machine exited with {self.proc.returncode}\n{self.log()}")

    def events(self, *kinds: str, since: int = 0) -> list[dict[str, Any]]:
        args = ["events", "--since", str(since), "-o", "json"]
        for k in kinds:
            args += ["--kind", k]
        r = self.ctl(*args)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def audit_verify(self) -> subprocess.CompletedProcess[str]:
        return self.ctl("audit", "verify", "--ca", str(self.secrets.ca_crt), timeout=120)

    def meta(self) -> Any:
        """The boot environment, read from META directly (sandbox disks)."""
        from storage import MetaStore

        assert self.device is None, "meta() reads the sandbox disk"
        return MetaStore(self.root / "disk" / "META").read()

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no machine log)"
        return "--- machine log (tail) ---\n" + "\n".join(text[-lines:])


class Machines:
    def __init__(self, base: Path, secrets: Secrets, images: Images) -> None:
        self.base = base
        self.secrets = secrets
        self.images = images
        self.made: list[Machine] = []

    def new(self, name: str = "m", *, disk: str = "sandbox", boot_from: Path | None = None,
            **kwargs: Any) -> Machine:
        m = Machine(self.base / f"{name}-{len(self.made)}", self.secrets, disk=disk, boot_from=boot_from, **kwargs)
        self.made.append(m)
        return m

    def installed(self, name: str = "m", *, disk: str = "sandbox", sinks: Sequence[str] = (),
                  timeout: float = 60, **kwargs: Any) -> Machine:
        """Empty disk → installer (v1) in maintenance → apply-config → install → Running v1 from slot A."""
        v1 = self.images.v1
        kwargs.setdefault("shares", [Path(s.removeprefix("file://")) for s in sinks])  # container machines
        m = self.new(name, disk=disk, boot_from=v1, **kwargs).start()
        m.wait_maintenance(timeout)
        m.apply(m.config(install_image=v1, sinks=sinks))
        m.wait_running(timeout, version="v1", slot="A")
        return m

    def cleanup(self) -> None:
        for m in self.made:
            m.cleanup()


@pytest.fixture
def machines(tmp_path: Path, secrets: Secrets, images: Images) -> Iterator[Machines]:
    ms = Machines(tmp_path, secrets, images)
    try:
        yield ms
    finally:
        ms.cleanup()


def kinds(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


def unsealed_boots(events: Sequence[dict[str, Any]]) -> list[str]:
    """Where the log breaks the crash rule: a boot whose previous boot ended on anything but a checkpoint must
    begin with the sealed checkpoint that covers it (reason ``recovered: ...``), and only such a boot."""
    problems = []
    for before, after in itertools.pairwise(events):
        if before["boot_id"] == after["boot_id"]:
            continue
        p = after["payload"]
        recovered = after["kind"] == "log.checkpoint" and p.get("sealed") and p.get("reason", "").startswith(
            "recovered:")
        if (before["kind"] != "log.checkpoint") != bool(recovered):
            problems.append(f"seq {before['seq']} {before['kind']} ({before['boot_id'][:8]}) -> seq {after['seq']} "
                            f"{after['kind']} {p.get('reason', '')!r} ({after['boot_id'][:8]})")
    return problems
