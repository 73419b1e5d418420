"""``graven machine``: the machine's firmware and bootloader, booting the agent from a verified image.

Every boot: carry out a reset's pending wipe; read META; pick a slot with ``boot.choose_slot`` (the default,
or the other one when the default ran out of tries; a slot not yet good spends a try *before* it boots, as
systemd-boot's boot counting); verify the slot's image against the trusted keys; mount its root read-only;
start the agent *from that root*; wait. The agent's exit code says what happened: 0 power off (the machine
stops), 10 reboot (boot again), anything else, or a signal, is a failed boot. A slot that fails three boots
without committing is not booted again: the next boot falls back to the other slot and records why. An image
that does not verify takes its slot out of service at once; a slot that cannot be read (an I/O error) is a
failed boot, so a transient error costs one try and a lasting one falls back by counting. With no bootable
slot the machine boots the installer image (``--boot-from``, as a Talos ISO) into maintenance.

Whatever the supervisor decides (``boot.selected``, ``boot.fallback``, ``boot.failed``, ``disk.wiped``) it
hands to the next agent in ``GRAVEN_BOOT`` (a JSON file), which appends it to the log as actor ``bootloader``.

The agent runs the image's code, never the checkout's: ``python -S -P -m node agent`` with ``PYTHONPATH``
= the image's ``usr/lib/graven`` followed by the interpreter's site-packages (for the dependencies). ``-S``
skips ``site``, so no ``.pth`` file (an editable install's path entry or import finder) is processed; ``-P``
keeps the working directory off ``sys.path``, and the agent runs in a neutral directory anyway.

Keys that verify slot images: ``machine.install.trustedKeys`` of the config persisted on STATE, else the
``--trusted-key`` files. SIGTERM or SIGINT: the agent is asked to shut down (SIGTERM; the agent seals its log
and powers off), killed if it does not within ``--grace`` seconds, then the supervisor unmounts and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import site
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import msgspec

import image
from boot import BootChoice, BootEnv, BootEvent, Slot, choose_slot, mark_bad
from errors import GravenError, InvalidRequest, StorageError, VerificationError
from events import Kind
from storage import BlockDisk, DiskBase, die_with_parent, slot_label

from . import _launch
from ._disk import open_disk
from ._wipe import finish_pending_wipe

__all__ = ["Machine", "MachineOptions", "agent_command", "agent_env"]

# The agent's exit codes (node/agent.py): what each boot ended with.
AGENT_POWER_OFF, AGENT_REBOOT = 0, 10
_EXIT_MEANING = {20: "the boot failed before it was committed", 30: "the event log is broken",
                 70: "the agent crashed early in boot (fault point boot-crash)", 1: "the agent crashed"}
CODE_DIR = image.CODE_DIR


@dataclass
class MachineOptions:
    root: Path
    device: Path | None = None  # a block device or disk image file; None: the sandbox disk under root
    boot_from: Path | None = None  # the installer image, booted when no slot can boot
    trusted_keys: list[bytes] = field(default_factory=list)  # --trusted-key: when STATE holds no config
    listen: str = "127.0.0.1:50000"
    health_timeout: float | None = None  # passed to the agent
    grace: float = 30.0  # seconds the agent has to shut down on SIGTERM
    max_failed_boots: int = 10  # failed boots in a row (good slots retried) before the machine gives up
    python: str = sys.executable
    provisioner: str = "process"  # or "container": the agent as PID 1 of its own namespaces (node._launch), or
    # "qemu": a virtual machine booted from the disk image file (node._qemu); the supervisor stays its firmware
    memory: int = _launch.DEFAULT_MEMORY  # container: the machine's memory cgroup limit
    shares: list[Path] = field(default_factory=list)  # container: host directories the node may write (sinks)
    tap: str | None = None  # qemu: the VM's NIC on this tap device (a cluster's bridge) instead of user-mode networking
    address: str | None = None  # qemu with tap: the guest's address (CIDR) until its machine config sets its own


@dataclass
class _Boot:
    number: int
    boot_id: str
    slot: Slot | None
    version: str | None  # None: the slot could not be read
    digest: str
    root: Path


def agent_env(code_root: Path, boot_file: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's environment: the image's code first, then the dependencies; nothing of the checkout."""
    env = dict(os.environ if base is None else base)
    for var in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONINSPECT"):
        env.pop(var, None)
    deps = [p for p in site.getsitepackages() if os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join([str(code_root), *deps])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the root is read-only
    env["PYTHONSAFEPATH"] = "1"
    env["GRAVEN_BOOT"] = str(boot_file)
    return env


def agent_command(opts: MachineOptions) -> list[str]:
    cmd = [opts.python, "-S", "-P", "-m", "node", "agent", "--root", str(opts.root.absolute()),
           "--listen", opts.listen]
    if opts.device is not None:
        cmd += ["--disk", str(opts.device)]
    if opts.health_timeout is not None:
        cmd += ["--health-timeout", f"{opts.health_timeout:g}"]
    return cmd


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the agent was killed by {name}"
    return f"the agent exited with code {code}" + (f" ({_EXIT_MEANING[code]})" if code in _EXIT_MEANING else "")


class Machine:
    """One machine: its disk, and the boots of its agent until it powers off."""

    def __init__(self, opts: MachineOptions, disk: DiskBase) -> None:
        self.opts = opts
        self.disk = disk
        self.root = opts.root.absolute()
        self.run_dir = self.root / "run"
        self.pending: list[dict[str, object]] = []  # events for the next agent to log
        self.failures: dict[Slot, str] = {}  # the last failure of each slot, for the fallback's reason
        self.failed_in_a_row = 0
        self.boots = 0
        self._agent: subprocess.Popen[bytes] | _launch.Launcher | None = None
        self._stopping: str | None = None
        self._kill_at: float | None = None
        self.qemu = None
        if opts.provisioner == "qemu":
            from ._qemu import GuestNic, QemuRunner

            assert opts.device is not None
            nic = GuestNic.parse(opts.tap, opts.address or "") if opts.tap else None
            self.qemu = QemuRunner(opts.device, self.run_dir, opts.listen, memory_mib=opts.memory >> 20, nic=nic,
                                   say=self.say)

    # -- output ------------------------------------------------------------------------------------------
    @staticmethod
    def say(msg: str) -> None:
        print(f"graven machine: {msg}", file=sys.stderr, flush=True)

    # -- signals -----------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping is None:
            self._stopping = name
            self.say(f"{name}: shutting the machine down")
        agent = self._agent
        if agent is not None and agent.poll() is None:
            if self._kill_at is None:
                self._kill_at = time.monotonic() + self.opts.grace
                with contextlib.suppress(ProcessLookupError):
                    agent.send_signal(signal.SIGTERM)
            elif signum == signal.SIGINT:  # a second Ctrl-C: do not wait
                self._kill_at = time.monotonic()

    # -- the power switch ----------------------------------------------------------------------------------
    def power_on(self) -> int:
        """Boot until the agent powers off (0), the machine cannot boot (1), or a signal stops it."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "machine.pid").write_text(f"{os.getpid()}\n")
        self._load_pending()
        try:
            return self._boot_loop()
        except GravenError as exc:
            self.say(f"error [{exc.code.name}]: {exc.message}")
            return 1
        finally:
            self._save_pending()
            with contextlib.suppress(GravenError, OSError):
                self.disk.close()
            for name in ("machine.pid", "agent.pid"):
                (self.run_dir / name).unlink(missing_ok=True)

    def _load_pending(self) -> None:
        """Events of the last power cycle that no agent logged yet (kept by the machine, like NVRAM)."""
        path = self.run_dir / "pending-events.json"
        with contextlib.suppress(OSError, ValueError):
            self.pending = list(json.loads(path.read_text())) + self.pending
        path.unlink(missing_ok=True)

    def _save_pending(self) -> None:
        if self.pending:
            with contextlib.suppress(OSError):
                (self.run_dir / "pending-events.json").write_text(json.dumps(self.pending))

    def _boot_loop(self) -> int:
        with contextlib.suppress(GravenError):
            self.disk.unmount_all()  # roots a killed supervisor left mounted
        while self._stopping is None:
            boot = self._select()
            if boot is None:
                return 1
            if self._stopping is not None:
                break
            code, why = self._run_agent(boot)
            self._after(boot)
            if self._stopping is not None:
                self.say(f"machine stopped ({self._stopping}); {_exit_reason(code)}")
                return 0 if code in (AGENT_POWER_OFF, AGENT_REBOOT) else 1
            if code == AGENT_POWER_OFF:
                self.say("the agent powered the machine off")
                return 0
            if code == AGENT_REBOOT:
                self.failed_in_a_row = 0
                self.say("reboot")
                continue
            self._failed(boot, why or _exit_reason(code), code)
            if self.failed_in_a_row >= self.opts.max_failed_boots:
                self.say(f"{self.failed_in_a_row} boots in a row failed; the machine gives up and stays off")
                return 1
            time.sleep(min(0.05 * 2 ** (self.failed_in_a_row - 1), 2.0))
        return 0

    def _failed(self, boot: _Boot, reason: str, code: int | None) -> None:
        self.failed_in_a_row += 1
        where = f"slot {boot.slot.value}" if boot.slot else "the installer"
        self.say(f"boot {boot.number} of {where} failed: {reason}")
        if boot.slot is not None:
            self.failures[boot.slot] = reason
        self.pending.append({"kind": Kind.BOOT_FAILED, "payload": {
            "boot_id": boot.boot_id, "slot": boot.slot.value if boot.slot else None, "version": boot.version,
            "exit_code": code if code is not None and code >= 0 else None,
            "signal": signal.Signals(-code).name if code is not None and code < 0 and -code in
            signal.valid_signals() else None, "reason": reason}})

    # -- choosing what to boot -------------------------------------------------------------------------
    def _trusted_keys(self) -> list[bytes]:
        """``machine.install.trustedKeys`` of the persisted config; else the ``--trusted-key`` files. A boot
        calls it while its slot's payload hashes (``image.verify``): the config code is imported here for that."""
        import config

        if self.disk.is_partitioned():
            try:
                raw = (self.disk.path("STATE") / "config.yaml").read_bytes()
            except (StorageError, OSError):
                raw = None
            if raw is not None:
                try:
                    cfg = config.load(raw, name="STATE/config.yaml")
                except GravenError as exc:
                    self.say(f"the persisted config does not load ({exc.message}); using --trusted-key")
                else:
                    install = cfg.machine.install
                    if install is not None and install.trusted_keys:
                        return list(install.trusted_public_keys())
        return list(self.opts.trusted_keys)

    def _select(self) -> _Boot | None:
        """Choose, verify and mount what boots next; None when nothing can boot."""
        while True:
            self.pending += finish_pending_wipe(self.disk, self.say)
            env = self.disk.read_boot_env() if self.disk.is_partitioned() else None
            choice = choose_slot(env or BootEnv())
            if choice.slot is None:
                return self._installer(choice, self._trusted_keys())
            env = self._explain_fallback(choice.env, choice.events)
            self.disk.write_boot_env(env)  # the try is spent before the boot, as in systemd-boot
            self.boots += 1
            try:  # the trusted keys load while the payload hashes
                verified = image.verify_slot(self.disk, choice.slot, self._trusted_keys)
            except VerificationError as exc:  # the image is bad: the slot is out of service at once
                self._refuse_slot(env, choice.slot, exc.message)
                continue
            except GravenError as exc:  # the slot could not be read (I/O): a failed try, not a verdict
                self.pending += [{"kind": e.kind, "payload": e.payload} for e in choice.events]
                boot = _Boot(self.boots, uuid.uuid4().hex, choice.slot, None, "", Path())
                self._failed(boot, f"cannot read slot {choice.slot.value}: {exc.message}", None)
                if self.failed_in_a_row >= self.opts.max_failed_boots:
                    raise
                continue
            try:  # a qemu machine's kernel mounts the slot itself
                root = Path() if self.qemu else self.disk.mount_slot(choice.slot, verified)
            except GravenError as exc:
                boot = _Boot(self.boots, uuid.uuid4().hex, choice.slot, verified.version,
                             verified.payload_sha256.hex(), Path())
                self.pending += [{"kind": e.kind, "payload": e.payload} for e in choice.events]
                self._failed(boot, f"cannot mount the root of slot {choice.slot.value}: {exc.message}", None)
                if self.failed_in_a_row >= self.opts.max_failed_boots:
                    raise
                continue
            self.pending += [{"kind": e.kind, "payload": e.payload} for e in choice.events]
            self.say(f"boot {self.boots}: slot {choice.slot.value}, {verified.version} "
                     f"({verified.payload_sha256.hex()[:16]}), {choice.events[-1].payload['reason']}")
            return _Boot(self.boots, uuid.uuid4().hex, choice.slot, verified.version, verified.payload_sha256.hex(),
                         root)

    def _explain_fallback(self, env: BootEnv, events: Sequence[BootEvent]) -> BootEnv:
        """Name the failure behind a fallback (the slot's last failed boot) in the event and in META."""
        for ev in events:
            if ev.kind != Kind.BOOT_FALLBACK:
                continue
            gone = Slot.parse(str(ev.payload["from_slot"]))
            last = self.failures.get(gone)
            if last:
                ev.payload["reason"] = f"{ev.payload['reason']}; its last boot failed: {last}"
                ev.payload["last_failure"] = last
            self.say(f"FALLBACK from slot {gone.value} to {ev.payload['to_slot']}: {ev.payload['reason']}")
            return msgspec.structs.replace(env, last_fallback_reason=str(ev.payload["reason"]))
        return env

    def _refuse_slot(self, env: BootEnv, slot: Slot, why: str) -> None:
        """The slot's image does not verify: take it out of service and record why; the loop picks again."""
        reason = f"the image in slot {slot.value} does not verify: {why}"
        self.say(f"refusing slot {slot.value}: {reason}")
        new, _ = mark_bad(env, slot)
        moved = new.default is not None and new.default is not slot
        if moved:
            new = msgspec.structs.replace(new, last_fallback_reason=reason, last_fallback_seq=new.seq)
        self.disk.write_boot_env(new)
        self.pending.append({"kind": Kind.BOOT_FAILED, "payload": {
            "boot_id": None, "slot": slot.value, "version": None, "exit_code": None, "signal": None,
            "reason": reason}})
        if moved:
            assert new.default is not None
            self.pending.append({"kind": Kind.BOOT_FALLBACK, "payload": {
                "from_slot": slot.value, "to_slot": new.default.value, "reason": reason}})

    def _installer(self, choice: BootChoice, keys: list[bytes]) -> _Boot | None:
        why = str(choice.events[-1].payload.get("reason", "no slot can boot")) if choice.events else "no slot"
        if self.qemu is not None and self.opts.boot_from is None:
            self.say(f"nothing to boot: {why}; a qemu machine boots its disk image's slots, or an installer image "
                     "(--boot-from IMAGE)")
            return None
        if self.opts.boot_from is None:
            self.say(f"nothing to boot: {why}, and no installer image was given (--boot-from IMAGE)")
            return None
        if self.disk.is_partitioned():
            self.disk.write_boot_env(choice.env)  # counts the boot
        keys = list(dict.fromkeys([*keys, *self.opts.trusted_keys]))
        try:
            verified = image.verify(self.opts.boot_from, keys)
        except GravenError as exc:
            raise InvalidRequest(f"installer image {self.opts.boot_from} refused: {exc.message}",
                                 path=str(self.opts.boot_from)) from exc
        root = Path() if self.qemu else self.disk.mount_image(verified)  # a VM's kernel mounts it (/dev/vdb)
        self.boots += 1
        self.pending += [{"kind": e.kind, "payload": e.payload} for e in choice.events]
        self.pending.append({"kind": Kind.BOOT_SELECTED, "payload": {
            "slot": None, "installer": str(self.opts.boot_from), "version": verified.version, "boot": self.boots,
            "reason": f"{why}: booting the installer image"}})
        self.say(f"boot {self.boots}: installer {self.opts.boot_from} ({verified.version}): {why}")
        return _Boot(self.boots, uuid.uuid4().hex, None, verified.version, verified.payload_sha256.hex(), root)

    # -- running the agent ---------------------------------------------------------------------------------
    def _run_agent(self, boot: _Boot) -> tuple[int, str | None]:
        """Run the agent from the boot's root until it exits: its exit code (negative: the signal), and why
        the boot failed when the agent could not even start."""
        code_root = boot.root / CODE_DIR
        if self.qemu is None and not (code_root / "node" / "__main__.py").is_file():
            return 1, f"the image holds no agent ({CODE_DIR}/node/__main__.py is missing)"
        for ev in reversed(self.pending):  # when the firmware handed over, for boot traces (and bench_boot)
            payload = ev["payload"]
            if ev["kind"] == Kind.BOOT_SELECTED and isinstance(payload, dict):
                payload["agent_started_ns"] = time.time_ns()
                break
        boot_file = self.run_dir / "boot.json"
        tmp = boot_file.with_name("boot.json.tmp")
        installer = None  # a VM learns its installer image's host path and length (its disk is whole sectors)
        if self.qemu is not None and boot.slot is None and self.opts.boot_from is not None:
            installer = {"path": str(self.opts.boot_from.absolute()), "size": self.opts.boot_from.stat().st_size}
        tmp.write_text(json.dumps({"boot_id": boot.boot_id, "slot": boot.slot.value if boot.slot else None,
                                   "digest": boot.digest, "version": boot.version, "events": self.pending,
                                   **({"installer": installer} if installer else {})}))
        os.replace(tmp, boot_file)
        handed, self.pending = self.pending, []  # the agent logs them, then removes the file
        cwd = self.run_dir / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
        self.disk.release()  # the agent owns the disk now (it may repartition, format, mount)
        self._kill_at = None
        result = None
        if self.qemu is not None:
            return self._run_vm(boot, boot_file, handed)
        if self.opts.provisioner == "container":
            try:
                args, disks = self._container_disk(agent_command(self.opts)[8:])
                spec, _ = _launch.prepare(
                    boot.root, self.root, self.run_dir, args, memory=self.opts.memory, platform=_platform(),
                    hostname=self.root.name, shares=self._shares(), disks=disks,
                    disk_name=str(self.opts.device) if self.opts.device else None,
                    new_partitions=boot.slot is None)  # the installer partitions the disk
            except (FileNotFoundError, StorageError) as exc:
                self.pending = handed + self.pending
                boot_file.unlink(missing_ok=True)
                return 1, exc.message if isinstance(exc, StorageError) else str(exc)
            result = Path(spec.result)
            result.unlink(missing_ok=True)
            self._agent = _launch.Launcher(spec, cwd)
        else:
            self._agent = subprocess.Popen(agent_command(self.opts), env=agent_env(code_root, boot_file), cwd=cwd,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           preexec_fn=die_with_parent)
        (self.run_dir / "agent.pid").write_text(f"{self._agent.pid}\n")
        try:
            while True:
                try:
                    code = self._agent.wait(timeout=0.25)
                    if result is None:
                        return code, None
                    return _launch.classify(_launch.read_result(result), code)
                except subprocess.TimeoutExpired:
                    if self._kill_at is not None and time.monotonic() >= self._kill_at:
                        self.say(f"the agent did not shut down within {self.opts.grace:g} s; killing it")
                        self._agent.kill()
        finally:
            (self.run_dir / "agent.pid").unlink(missing_ok=True)
            self._agent = None
            if boot_file.exists():  # the agent died before logging them: the next boot carries them
                boot_file.unlink()
                self.pending = handed + self.pending

    def _run_vm(self, boot: _Boot, boot_file: Path, handed: list[dict[str, object]]) -> tuple[int, str | None]:
        """One boot of the qemu machine from the boot's slot; QMP's report of its ending is the exit code."""
        assert self.qemu is not None
        self.disk.close()  # detach the loop devices: the guest writes the disk image file now

        def started(proc: subprocess.Popen[bytes]) -> None:
            self._agent = proc
            (self.run_dir / "agent.pid").write_text(f"{proc.pid}\n")

        try:
            ending = self.qemu.run(slot_label(boot.slot).value if boot.slot else None, boot_file, started,
                                   installer=self.opts.boot_from if boot.slot is None else None)
        except GravenError as exc:
            self.pending = handed + self.pending
            return 1, exc.message
        finally:
            (self.run_dir / "agent.pid").unlink(missing_ok=True)
            self._agent = None
            boot_file.unlink(missing_ok=True)
        if ending.code not in (AGENT_POWER_OFF, AGENT_REBOOT):
            from ._guest import LOGGED

            # fw_cfg is read-only: the agent says on the console when it logged them; else the next boot does
            if not self.qemu.console_says(LOGGED.format(boot.boot_id)):
                self.pending = handed + self.pending
            return ending.code, ending.reason
        return ending.code, None

    def _container_disk(self, args: list[str]) -> tuple[list[str], list[tuple[str, int, int]]]:
        """A container machine's block disk: the agent opens the whole-disk device (the loop device over a disk
        image file, attached here and kept across boots) by its node in the machine's /dev, which also holds the
        partitions' nodes."""
        if not isinstance(self.disk, BlockDisk):
            return args, []
        device = self.disk.device
        try:
            nodes = _launch.block_nodes(device)
        except (OSError, ValueError) as exc:
            raise StorageError(f"the block disk {device} is not in /sys/class/block: {exc}") from exc
        at = args.index("--disk")
        return [*args[:at], "--disk", f"/dev/{nodes[0][0]}", *args[at + 2:]], nodes

    def _shares(self) -> list[tuple[str, bool]]:
        """What of the host a container machine sees (under /machine/host): the installer image's folder, read
        only (a config's machine.install.image names it), and the --share folders, writable (audit sinks)."""
        shared = [(str(self.opts.boot_from.absolute().parent), False)] if self.opts.boot_from else []
        return shared + [(str(p), True) for p in self.opts.shares]

    def _after(self, boot: _Boot) -> None:
        self.pending += finish_pending_wipe(self.disk, self.say)  # a reset's wipe, now that the log is closed
        self.disk.release()
        with contextlib.suppress(GravenError):
            if boot.slot is not None:
                self.disk.unmount_slot(boot.slot)
            else:
                self.disk.unmount_image()


def _platform() -> str:
    """What the agent inside a container is told about its network: the node's own namespace (netns cluster) or
    the host's (the sandbox plan); inside, as PID 1, it can no longer compare itself with the host's PID 1."""
    from ._net_platform import PLATFORM_ENV, in_own_namespace

    forced = os.environ.get(PLATFORM_ENV)
    if forced:
        return forced
    return "netns" if in_own_namespace("net") else "sandbox"


def load_trusted_keys(paths: Sequence[Path]) -> list[bytes]:
    keys = []
    for p in paths:
        keys.append(image.load_public_key(p))
    return keys


def run_machine(opts: MachineOptions) -> int:
    """``graven machine``: open the disk, power the machine on, unmount and detach on the way out."""
    if opts.provisioner == "container":
        problem = _launch.container_problem()
        if problem:
            raise InvalidRequest(f"--provisioner container: {problem}; use --provisioner process")
    if opts.provisioner == "qemu" and (opts.device is None or not opts.device.is_file()):
        raise InvalidRequest("--provisioner qemu boots a disk image file: pass --disk FILE (make one with "
                             "gravenctl cluster create --provisioner qemu)")
    if (opts.tap is None) != (opts.address is None) or (opts.tap and opts.provisioner != "qemu"):
        raise InvalidRequest("--tap and --address go together, with --provisioner qemu: the VM's NIC on a tap "
                             "device and the guest's address on that network")
    if opts.device is None and opts.boot_from is None and not (opts.root / "disk").exists():
        raise InvalidRequest(f"{opts.root}: an empty disk and no installer image: pass --boot-from IMAGE")
    disk = open_disk(opts.root, opts.device, opts.root.absolute() / "run")
    return Machine(opts, disk).power_on()
