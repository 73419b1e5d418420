"""The agent's duties as PID 1 of a qemu machine (``GRAVEN_MACHINE=qemu``), where the initramfs executed it.

- ``prepare``: bring up ``lo`` and the first virtio NIC before the API starts, with the address the platform
  gives it: on a cluster's bridge the one the bootloader hands over through fw_cfg (``opt/graven/net``: the
  NIC's MAC, address and prefix length; no default route, nothing leaves the bridge), else qemu's user-mode
  network address (10.0.2.15/24, gateway 10.0.2.2), which is what the host's forwarded port reaches. The machine
  config's ``machine.network`` is then applied to the NIC by the agent's netlink adapter (``node._network``),
  as on any node that owns its links (``GRAVEN_PLATFORM=netns``).
- ``power``: a PID 1 must never exit (the kernel panics; with pvpanic the host reads that as a crash, a failed
  boot). Reboot and power off go through reboot(2), which qemu (``-no-reboot``) reports on QMP as a
  ``guest-reset`` or ``guest-shutdown`` shutdown; any other ending of the agent is left to panic the kernel,
  which is a failed boot, as it should be.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ._pid1 import EXIT_POWER_OFF, EXIT_REBOOT, reboot

__all__ = ["BOOT_FW_CFG", "LOGGED", "NET_FW_CFG", "USER_NET", "adopt_boot_file", "adopt_installer", "in_guest",
           "kernel_timings", "platform_address", "power", "prepare", "said_logged"]

# the bootloader's boot.json, handed over by qemu's firmware configuration device (-fw_cfg name=opt/graven/boot)
BOOT_FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/graven/boot/raw")
NET_FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/graven/net/raw")
INSTALLER_DISK = Path("/dev/vdb")  # the installer image the VM booted from, read-only
HOST_VIEW = Path("/run/host")  # where host paths the VM reaches appear (tmpfs)

# qemu's user-mode network: the guest's address, prefix, gateway
USER_NET: tuple[str, int, str | None] = ("10.0.2.15", 24, "10.0.2.2")


def in_guest() -> bool:
    return os.environ.get("GRAVEN_MACHINE") == "qemu" and os.getpid() == 1


def adopt_boot_file(path: Path = BOOT_FW_CFG) -> None:
    """``GRAVEN_BOOT`` = the boot.json the host's bootloader put in fw_cfg, when it did (read-only: the agent says
    on the console when it logged its events, see ``said_logged``). On the installer's boot, the installer image
    is reached at its host path too (``adopt_installer``)."""
    if path.is_file():
        os.environ["GRAVEN_BOOT"] = str(path)
        try:
            installer = json.loads(path.read_bytes()).get("installer")
            if installer:
                adopt_installer(str(installer["path"]), int(installer["size"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the install will say it finds no image
            print(f"graven agent: the installer image is not reachable: {exc}", file=sys.stderr, flush=True)


def adopt_installer(host_path: str, size: int, *, device: Path = INSTALLER_DISK, view: Path = HOST_VIEW) -> Path:
    """The installer image the VM booted from (``device``, whole sectors) copied, its own ``size`` bytes, to
    ``view`` + its host path (tmpfs) with ``GRAVEN_HOST_VIEW`` set, so a config's ``machine.install.image`` naming
    the host's file finds it, as a container machine finds its shared folders (``node._ports.host_path``)."""
    from ._ports import HOST_VIEW_ENV

    target = Path(str(view) + host_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(device, "rb") as src, open(target, "wb") as dst:
        left = size
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{device} ends {left} bytes short of the installer image's {size}")
            dst.write(chunk)
            left -= len(chunk)
    os.environ[HOST_VIEW_ENV] = str(view)
    print(f"graven agent: the installer image {device} ({size} bytes) is {host_path} for the install",
          file=sys.stderr, flush=True)
    return target


LOGGED = "graven agent: the bootloader's events of boot {} are in the log"  # on the console, read by node._qemu


def said_logged(boot_id: str, source: Path) -> None:
    """Tell the host on the console that the boot's events (from fw_cfg, which the agent cannot remove) are logged:
    a boot that fails after this line must not have them handed over again."""
    if source == BOOT_FW_CFG:
        print(LOGGED.format(boot_id), file=sys.stderr, flush=True)


def kernel_timings(events: list[dict[str, object]], env: Mapping[str, str] = os.environ) -> None:
    """Put the guest's own boot timeline (CLOCK_MONOTONIC ns, whose zero is the kernel's start) into the
    bootloader's ``boot.selected`` event: when init started, when it executed the agent, when the agent began.
    The boot trace draws the kernel, initramfs and agent-start spans from it, from the kernel's time zero."""
    raw = env.get("GRAVEN_INITRAMFS_NS", "")
    try:
        init_ns, exec_ns = (int(x) for x in raw.split(","))
    except ValueError:
        return
    agent_ns = time.monotonic_ns()
    for ev in reversed(events):
        if ev.get("kind") == "boot.selected":
            payload = ev.setdefault("payload", {})
            if isinstance(payload, dict):
                payload["guest_ns"] = {"init": init_ns, "exec": exec_ns, "agent": agent_ns}
            return


def _first_nic(links: list[tuple[str, str]], mac: str | None = None) -> str | None:
    """The NIC to bring up among ``(name, MAC)``: the one with the platform's MAC, else the first that is real."""
    real = sorted((n, m) for n, m in links if n != "lo" and not n.startswith(("sit", "tunl", "ip6tnl")))
    if mac is not None:
        return next((n for n, m in real if m.lower() == mac.lower()), None)
    return real[0][0] if real else None


def platform_address(path: Path = NET_FW_CFG) -> tuple[str | None, str, int, str | None]:
    """``(mac, address, prefix, gateway)`` the platform gives the NIC: fw_cfg's on a bridge, else user-mode's."""
    try:
        net = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, *USER_NET
    except (OSError, ValueError) as exc:
        raise OSError(f"{path}: unreadable ({exc})") from exc
    return str(net["mac"]), str(net["address"]), int(net["prefixlen"]), None


def prepare(say: Callable[[str], None], wait: float = 30.0) -> None:
    """``lo`` up; the NIC up with the platform's address (and a default route on user-mode networking)."""
    from pyroute2 import IPRoute

    mac, address, prefix, gateway = platform_address()
    with IPRoute() as ip:
        lo = ip.link_lookup(ifname="lo")
        if lo:
            ip.link("set", index=lo[0], state="up")
        deadline = time.monotonic() + wait
        while True:
            links = [(str(link.get_attr("IFLA_IFNAME")), str(link.get_attr("IFLA_ADDRESS") or ""))
                     for link in ip.get_links()]
            nic = _first_nic(links, mac)
            if nic is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if nic is None:
            say("qemu machine: no network interface appeared; the API listens on loopback only")
            return
        idx = ip.link_lookup(ifname=nic)[0]
        ip.link("set", index=idx, state="up")
        with contextlib.suppress(Exception):  # already there after a restart of the agent's network code
            ip.addr("add", index=idx, address=address, prefixlen=prefix)
        if gateway is not None:
            with contextlib.suppress(Exception):
                ip.route("add", dst="0.0.0.0/0", gateway=gateway)
    say(f"qemu machine: {nic} up as {address}/{prefix}" + (f" via {gateway}" if gateway else
                                                          f" (MAC {mac}, the platform's address on the bridge)"))


def power(code: int) -> int:
    """End the machine through reboot(2) for reboot (10) and power off (0); return ``code`` for anything else."""
    if code not in (EXIT_REBOOT, EXIT_POWER_OFF) or not in_guest():
        return code
    err = reboot(code)
    print(f"graven agent: reboot(2) failed: {os.strerror(err)}", file=sys.stderr, flush=True)
    return code
