"""The host's side of a qemu machine: the disk image file, qemu's command line, one boot from start to its
ending as QMP reports it.

The machine is Debian's cloud kernel (``image._kernel``) with Graven's initramfs (``image._initramfs``) and one
raw GPT disk image (the block disk's layout) as virtio-blk; the slot to boot is on the kernel command line
(``graven.slot=BOOT-A``). The serial console is appended to a log file. A lone machine uses qemu's user-mode
network with the API's port forwarded to the host's loopback. A machine of a cluster on a bridge (``GuestNic``)
gets its virtio NIC on a tap device in its network namespace (``node._netns``, ``vms=True``), a MAC made from
its address, and that address handed to the guest through fw_cfg (``opt/graven/net``), as a DHCP server would
lease it; the agent inside then applies the machine config's network to the NIC with netlink.

A machine with nothing to boot on its disk (a blank disk image) boots the installer image: attached read-only as
a second virtio disk (``/dev/vdb``, padded to whole sectors), mounted as ``/`` by the initramfs
(``graven.root=vdb``); the agent in maintenance then installs from it onto ``/dev/vda`` (partition, format,
slot A) and reboots into slot A.

Accelerator: KVM only when a smoke boot under KVM proves it (``kvm_works``; the paravirtual KVM of some
hosts cannot run a stock kernel: qemu aborts or hangs), else TCG, software emulation.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from errors import StorageError
from image import Kernel, build_initramfs
from storage import die_with_parent

from ._qmp import Ending, Qmp, classify

__all__ = ["QEMU", "Boot", "GuestNic", "QemuRunner", "QemuSpec", "free_port", "kvm_works", "qemu_argv", "qemu_problem",
           "qmp_socket", "start"]

QEMU = "qemu-system-x86_64"
GUEST_API_PORT = 50000
# a machine's disk image (sparse): slots of 200 MiB and EPHEMERAL ~347 MiB, where an upgrade spools the image
# (~34 MiB) and must leave 64 MiB free
GUEST_DISK_SIZE = 768 << 20
# a blank disk image (sparse), which the install partitions inside the VM with the default layout: that keeps
# EPHEMERAL at its 128 MiB floor on disks under ~2.2 GiB, too little for an upgrade to spool a 46 MiB image (with
# etcd) and leave 64 MiB free; at 3 GiB the slots get 1 GiB each and EPHEMERAL ~1 GiB (only written bytes count)
GUEST_BLANK_DISK_SIZE = 3 << 30
GUEST_SLOT_MIB = 200
INIT_STARTED = b"graven-init: started"
BOOT_FW_CFG = "opt/graven/boot"  # node._guest reads it under /sys/firmware/qemu_fw_cfg/by_name/
NET_FW_CFG = "opt/graven/net"  # the platform's address for the guest's NIC (a bridged machine)


def qemu_problem() -> str | None:
    """Why qemu machines cannot run here, naming the set-up that fixes it; None when they can."""
    if shutil.which(QEMU) is None:
        return (f"{QEMU} is not installed (Debian package qemu-system-x86): run `make system-test` or "
                "`python3 storage/_systools.py ensure --tests`")
    try:
        from image import find_kernel

        find_kernel()
    except StorageError as exc:
        return exc.message
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class GuestNic:
    """A machine's NIC on its cluster's bridge: the tap device in the machine's network namespace, and the address
    the platform gives the guest (until its machine config says otherwise)."""

    tap: str
    address: ipaddress.IPv4Interface

    @classmethod
    def parse(cls, tap: str, cidr: str) -> GuestNic:
        try:
            address = ipaddress.IPv4Interface(cidr)
        except ValueError as exc:
            raise StorageError(f"--address {cidr!r}: an IPv4 address with its prefix length, e.g. "
                               f"198.18.7.2/24 ({exc})") from exc
        if "/" not in cidr or address.ip == address.network.network_address:
            raise StorageError(f"--address {cidr!r}: an IPv4 host address with its prefix length, e.g. 198.18.7.2/24")
        if not tap or len(tap) > 15 or "/" in tap:
            raise StorageError(f"--tap {tap!r}: a network interface name (at most 15 characters)")
        return cls(tap, address)

    @property
    def mac(self) -> str:
        """Locally administered, unicast, and the address's four bytes: one per node on the bridge, readable."""
        return "52:54:" + ":".join(f"{b:02x}" for b in self.address.ip.packed)

    def to_json(self) -> bytes:
        return json.dumps({"mac": self.mac, "address": str(self.address.ip),
                           "prefixlen": self.address.network.prefixlen}).encode()


@dataclass(frozen=True)
class QemuSpec:
    kernel: Kernel
    initramfs: Path
    disk: Path  # raw GPT disk image file
    slot: str  # the GPT name of the slot partition to boot: BOOT-A or BOOT-B
    console: Path  # the serial console is appended here
    qmp: Path  # unix socket
    forwards: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, guest port)
    memory_mib: int = 512
    accel: str = "tcg"
    cmdline: tuple[str, ...] = field(default_factory=tuple)  # more kernel parameters
    boot_file: Path | None = None  # the bootloader's boot.json, handed to the agent through fw_cfg
    nic: GuestNic | None = None  # on a bridge through a tap device; None: user-mode networking with ``forwards``
    net_file: Path | None = None  # the nic's JSON, handed to the agent through fw_cfg
    installer: Path | None = None  # boot this image (a second disk, read-only) instead of ``slot``


def qemu_argv(spec: QemuSpec) -> list[str]:
    if spec.nic is None:
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in spec.forwards)
        net = ["-netdev", f"user,id=net0{fwd}", "-device", "virtio-net-pci,netdev=net0"]
    else:
        net = ["-netdev", f"tap,id=net0,ifname={spec.nic.tap},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=net0,mac={spec.nic.mac}"]
        if spec.net_file is not None:
            net += ["-fw_cfg", f"name={NET_FW_CFG},file={spec.net_file}"]
    root = "graven.root=vdb" if spec.installer is not None else f"graven.slot={spec.slot}"
    append = " ".join(["console=ttyS0", "quiet", "loglevel=4", root, *spec.cmdline])
    installer = [] if spec.installer is None else \
        ["-drive", f"file={spec.installer},format=raw,if=virtio,readonly=on"]
    return [
        QEMU, "-name", spec.disk.stem, "-accel", spec.accel, "-cpu", "max" if spec.accel == "tcg" else "host",
        "-m", str(spec.memory_mib), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-action", "panic=shutdown", "-device", "pvpanic",
        "-chardev", f"file,id=console,path={spec.console},append=on", "-serial", "chardev:console",
        "-kernel", str(spec.kernel.vmlinuz), "-initrd", str(spec.initramfs), "-append", append,
        "-drive", f"file={spec.disk},format=raw,if=virtio,cache=writeback,discard=unmap", *installer,
        *net,
        "-qmp", f"unix:{spec.qmp},server=on,wait=off",
        *(["-fw_cfg", f"name={BOOT_FW_CFG},file={spec.boot_file}"] if spec.boot_file is not None else []),
    ]


@dataclass
class Boot:
    """One run of qemu: its process and QMP connection, until it ends."""

    spec: QemuSpec
    proc: subprocess.Popen[bytes]
    qmp: Qmp
    started: float  # time.monotonic() when qemu was started

    def wait(self, timeout: float | None = None) -> Ending:
        """The ending of this boot (QMP's events), killing qemu when it outlives ``timeout``."""
        timed_out = False
        if timeout is not None:
            self.qmp_timeout(timeout)
        try:
            for _ in self.qmp.follow():
                pass
        except TimeoutError:
            timed_out = True
        if timed_out or self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.command("quit")
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.qmp.close()
        with contextlib.suppress(OSError):
            self.spec.qmp.unlink()
        return classify(self.qmp.events, timed_out=timed_out, qemu_rc=rc)

    def qmp_timeout(self, seconds: float) -> None:
        self.qmp._sock.settimeout(seconds)

    def stop(self) -> Ending:
        """Power the machine off from the host (QMP ``quit``) and wait for qemu to exit."""
        with contextlib.suppress(Exception):
            self.qmp.command("quit")
        return self.wait(timeout=30)

    def console_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.spec.console.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start(spec: QemuSpec, *, stderr: Path | None = None) -> Boot:
    """Start qemu for one boot; raises naming the cause when qemu refuses (e.g. the disk image in use)."""
    problem = qemu_problem()
    if problem:
        raise StorageError(problem)
    spec.qmp.unlink(missing_ok=True)
    err_path = stderr or spec.console.with_suffix(".qemu.err")
    err_from = err_path.stat().st_size if err_path.exists() else 0

    def said() -> str:  # what this qemu wrote
        with open(err_path, "rb") as f:
            f.seek(err_from)
            return f.read().decode(errors="replace")

    with open(err_path, "ab") as err:
        proc = subprocess.Popen(qemu_argv(spec), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True, preexec_fn=die_with_parent)
    started = time.monotonic()
    deadline = started + 30
    while not spec.qmp.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise StorageError(_refusal(said(), spec), path=str(spec.disk))
        time.sleep(0.02)
    try:  # qemu opens its QMP socket before the disk: a refused disk closes the connection at once
        qmp = Qmp(spec.qmp)
    except (OSError, EOFError, ValueError) as exc:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        spec.qmp.unlink(missing_ok=True)
        raise StorageError(_refusal(said() or str(exc), spec), path=str(spec.disk)) from exc
    return Boot(spec, proc, qmp, started)


def _refusal(stderr: str, spec: QemuSpec) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no message"
    locked = next((line for line in lines if '"write" lock' in line or "Failed to get" in line), None)
    if locked:
        return f"disk image {spec.disk} is in use by another running machine (qemu: {locked})"
    return f"qemu would not start: {last}"


def initramfs_for(kernel: Kernel, cache: Path, *, listen: str = f"0.0.0.0:{GUEST_API_PORT}") -> Path:
    """The machine's initramfs (rebuilt each time: it takes ~0.1 s and follows the kernel and the code)."""
    return build_initramfs(kernel, cache / f"initramfs-{kernel.release}.img", listen=listen)


# -- which accelerator ------------------------------------------------------------------------------------------
def _accel_cache() -> Path:
    return Path.home() / ".cache" / "graven" / "qemu-accel.json"


def kvm_works(kernel: Kernel, initramfs: Path, work: Path, *, timeout: float = 15.0) -> bool:
    """Boot the kernel under KVM until the initramfs's init prints its first line; remembered per host kernel
    and guest kernel (the answer does not change between runs, and a hanging probe costs ``timeout``)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU) is None:
        return False
    key = f"{os.uname().release}/{kernel.release}"
    cache = _accel_cache()
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text())
        if key in known:
            return bool(known[key])
    work.mkdir(parents=True, exist_ok=True)
    console = work / "kvm-probe.console"
    console.unlink(missing_ok=True)
    argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-chardev", f"file,id=c,path={console}", "-serial", "chardev:c",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs), "-append", "console=ttyS0 quiet"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if INIT_STARTED in console.read_bytes():
                ok = True
                break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        known[key] = ok
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return ok


def choose_accel(kernel: Kernel, initramfs: Path, work: Path, wanted: str | None = None) -> str:
    """``wanted`` (kvm or tcg) when given (GRAVEN_QEMU_ACCEL too), else kvm when it proves itself, else tcg."""
    wanted = wanted or os.environ.get("GRAVEN_QEMU_ACCEL") or None
    if wanted is not None:
        if wanted not in ("kvm", "tcg"):
            raise StorageError(f"accelerator {wanted!r}: kvm or tcg")
        return wanted
    return "kvm" if kvm_works(kernel, initramfs, work) else "tcg"


# -- the disk image -------------------------------------------------------------------------------------------
def make_disk(path: Path, size: int, *, run_dir: Path, slot_mib: int | None = None) -> None:
    """A sparse raw disk image file with the block disk's GPT layout, STATE and EPHEMERAL formatted, META and
    both slots empty (a machine's blank disk: the first boot is the installer's)."""
    from storage import BlockDisk, DiskLayout

    if path.exists():
        raise StorageError(f"disk image {path} exists already", path=str(path))
    with open(path, "wb") as f:
        f.truncate(size)
    layout = DiskLayout(efi_mib=4, slot_mib=slot_mib, meta_mib=1, state_mib=16) if slot_mib else None
    disk = BlockDisk(path, run_dir=run_dir, layout=layout)
    try:
        disk.partition()
        disk.format()
    finally:
        disk.close()


def preinstalled_disk(path: Path, size: int, image_file: Path, trusted_pem: bytes, *, run_dir: Path) -> None:
    """A machine's disk image as a vendor ships it (Talos's ``metal-amd64.raw``): partitioned and formatted,
    ``image_file`` verified and written to slot A, committed; STATE empty, so the machine boots into
    maintenance and an applied config only writes STATE (the install sequence's path for an installed disk)."""
    import image
    from boot import BootEnv, Slot, mark_good
    from storage import BlockDisk

    make_disk(path, size, run_dir=run_dir, slot_mib=GUEST_SLOT_MIB)
    disk = BlockDisk(path, run_dir=run_dir)
    try:
        verified = image.verify(image_file, [image.load_public_key(trusted_pem)])
        image.install(disk, image.plan_install(disk.read_boot_env(), verified))
        env, _ = mark_good(disk.read_boot_env() or BootEnv(), Slot.A)
        disk.write_boot_env(env)
    finally:
        disk.close()


# -- the bootloader's side: one boot of a machine's slot ------------------------------------------------------
class QemuRunner:
    """Boots a machine's disk image in qemu, one slot at a time, for the supervisor (``node._supervisor``):
    kernel and initramfs chosen once, the accelerator proven once, the console appended to ``console.log``
    and copied to the supervisor's own log as it comes."""

    def __init__(self, disk: Path, run_dir: Path, listen: str, *, memory_mib: int = 512, nic: GuestNic | None = None,
                 say: Callable[[str], None] = print) -> None:
        from image import find_kernel

        problem = qemu_problem()
        if problem:
            raise StorageError(f"--provisioner qemu: {problem}")
        self.disk = disk
        self.run_dir = run_dir
        self.say = say
        host, _, port = listen.rpartition(":")
        self.nic = nic
        if nic is not None:
            if host != str(nic.address.ip) or port != str(GUEST_API_PORT):
                raise StorageError(f"--provisioner qemu: a machine on a bridge answers on its own address, port "
                                   f"{GUEST_API_PORT}: --listen {nic.address.ip}:{GUEST_API_PORT} (not {listen})")
            if not Path("/sys/class/net", nic.tap).exists():
                raise StorageError(f"--tap {nic.tap}: no such network interface in this network namespace (a cluster "
                                   "makes it: gravenctl cluster create --provisioner qemu --network netns)")
        elif host not in ("127.0.0.1", "localhost", ""):
            raise StorageError(f"--provisioner qemu: a lone machine answers on the host's loopback (user-mode "
                               f"networking); --listen {listen} names another address (a bridged machine: --tap "
                               "and --address)")
        self.port = int(port)
        self.memory_mib = memory_mib
        self.kernel = find_kernel()
        self.initramfs = initramfs_for(self.kernel, run_dir)
        self.accel = choose_accel(self.kernel, self.initramfs, run_dir)
        self.console = run_dir / "console.log"
        self.console_from = 0  # where the last boot's console output begins
        self.boot: Boot | None = None

    def spec(self, slot: str, boot_file: Path | None, installer: Path | None = None) -> QemuSpec:
        net_file = None
        if self.nic is not None:
            net_file = self.run_dir / "net.json"
            net_file.write_bytes(self.nic.to_json())
        return QemuSpec(self.kernel, self.initramfs, self.disk, slot, self.console, qmp_socket(self.run_dir),
                        () if self.nic else ((self.port, GUEST_API_PORT),), memory_mib=self.memory_mib,
                        accel=self.accel, boot_file=boot_file, nic=self.nic, net_file=net_file, installer=installer)

    def where(self) -> str:
        if self.nic is None:
            return f"API on 127.0.0.1:{self.port}"
        return f"NIC {self.nic.mac} on {self.nic.tap}, API on {self.nic.address.ip}:{GUEST_API_PORT}"

    def run(self, slot: str | None, boot_file: Path | None, on_start: Callable[[subprocess.Popen[bytes]], None],
            installer: Path | None = None) -> Ending:
        """One boot of ``slot``, or of the ``installer`` image when ``slot`` is None; its ending."""
        disk = None
        if slot is None:
            if installer is None:
                raise StorageError("a qemu boot needs a slot or an installer image")
            disk = padded_copy(installer, self.run_dir / "installer.raw")
        spec = self.spec(slot or "installer", boot_file, disk)
        what = f"{slot} of {self.disk}" if slot else f"the installer {installer} (/dev/vdb), disk {self.disk}"
        self.say(f"qemu: {self.kernel.release} ({self.accel.upper()}), {what}, {self.where()}, "
                 f"console {self.console}")
        start_at = self.console.stat().st_size if self.console.exists() else 0
        self.console_from = start_at
        try:
            boot = start(spec)
        except BaseException:
            if disk is not None:
                disk.unlink(missing_ok=True)
            raise
        self.boot = boot
        on_start(boot.proc)
        stop = threading.Event()
        copier = threading.Thread(target=_copy_console, args=(self.console, start_at, stop), daemon=True)
        copier.start()
        try:
            ending = boot.wait()
        finally:
            stop.set()
            copier.join(timeout=2)
            self.boot = None
            if disk is not None:  # the installer's copy (an image's size): the next installer boot makes another
                disk.unlink(missing_ok=True)
        if ending.code not in (0, 10):
            last = _last_words(self.console, start_at)
            if last:
                ending = Ending(ending.code, f"{ending.reason}; the console's last line before it: {last}")
        return ending


    def console_says(self, line: str) -> bool:
        """Whether the last boot's console holds ``line`` (what the guest told the host, e.g. its boot events are
        logged)."""
        with contextlib.suppress(OSError), open(self.console, "rb") as f:
            f.seek(self.console_from)
            return line.encode() in f.read()
        return False


def qmp_socket(run_dir: Path) -> Path:
    """``run_dir/qmp.sock``, or where a unix socket's path fits (108 bytes) when that is too long: a name in the
    temporary folder made from ``run_dir``, one per machine."""
    path = run_dir.absolute() / "qmp.sock"
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(run_dir.absolute())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"graven-qmp-{digest}.sock"


def padded_copy(image_file: Path, out: Path) -> Path:
    """``image_file`` copied to ``out`` with zeros up to a whole number of 512-byte sectors (a virtio disk is
    sectors; the image's trailer must stay in its bytes, whose length the guest learns from boot.json)."""
    size = image_file.stat().st_size
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.copyfile(image_file, tmp)
    with open(tmp, "r+b") as f:
        f.truncate(-(-size // 512) * 512)
    os.replace(tmp, out)
    return out


def _last_words(console: Path, start_at: int) -> str:
    """The console's last line of this boot before the kernel's panic report (what PID 1 or init said last)."""
    with contextlib.suppress(OSError), open(console, "rb") as f:
        f.seek(start_at)
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        panic = next((i for i in range(len(lines) - 1, -1, -1) if "Kernel panic" in lines[i]), len(lines))
        before = [line for line in lines[:panic] if not line.startswith("[")] or lines[:panic]
        return before[-1][:300] if before else ""
    return ""


def _copy_console(console: Path, start_at: int, stop: threading.Event) -> None:
    """The machine's serial console into the supervisor's log (stderr), line by line, prefixed."""
    pos, pending = start_at, b""
    while True:
        done = stop.is_set()
        with contextlib.suppress(OSError), open(console, "rb") as f:
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                sys.stderr.write(f"console: {line.decode(errors='replace').rstrip()}\n")
            sys.stderr.flush()
        if done:
            return
        stop.wait(0.2)
