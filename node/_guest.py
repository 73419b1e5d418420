"""The agent's duties as PID 1 of a qemu machine (``GRAVEN_MACHINE=qemu``), where the initramfs executed it.

- ``prepare``: bring up ``lo`` and the first virtio NIC before the API starts. Until a machine config says
  otherwise the NIC gets qemu's user-mode network address (10.0.2.15/24, gateway 10.0.2.2), which is what the
  host's forwarded port reaches.
- ``power``: a PID 1 must never exit (the kernel panics; with pvpanic the host reads that as a crash, a failed
  boot). Reboot and power off go through reboot(2), which qemu (``-no-reboot``) reports on QMP as a
  ``guest-reset`` or ``guest-shutdown`` shutdown; any other ending of the agent is left to panic the kernel,
  which is a failed boot, as it should be.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["BOOT_FW_CFG", "USER_NET", "adopt_boot_file", "in_guest", "kernel_timings", "power", "prepare"]

# the bootloader's boot.json, handed over by qemu's firmware configuration device (-fw_cfg name=opt/graven/boot)
BOOT_FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name/opt/graven/boot/raw")

USER_NET = ("10.0.2.15", 24, "10.0.2.2")  # qemu's user-mode network: guest address, prefix, gateway
LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_POWER_OFF = 0x01234567, 0x4321FEDC
EXIT_POWER_OFF, EXIT_REBOOT = 0, 10


def in_guest() -> bool:
    return os.environ.get("GRAVEN_MACHINE") == "qemu" and os.getpid() == 1


def adopt_boot_file(path: Path = BOOT_FW_CFG) -> None:
    """``GRAVEN_BOOT`` = the boot.json the host's bootloader put in fw_cfg, when it did (read-only: the agent's
    ``logged()`` cannot remove it, so the host decides from the boot's ending whether the events were logged)."""
    if path.is_file():
        os.environ["GRAVEN_BOOT"] = str(path)


def kernel_timings(events: list[dict[str, Any]], env: Mapping[str, str] = os.environ) -> None:
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
            ev.setdefault("payload", {})["guest_ns"] = {"init": init_ns, "exec": exec_ns, "agent": agent_ns}
            return


def _first_nic(names: list[str]) -> str | None:
    return next((n for n in sorted(names) if n != "lo" and not n.startswith(("sit", "tunl", "ip6tnl"))), None)


def prepare(say: Callable[[str], None], wait: float = 30.0) -> None:
    """``lo`` up; the first NIC up with the user-mode network address and a default route."""
    from pyroute2 import IPRoute

    address, prefix, gateway = USER_NET
    with IPRoute() as ip:
        lo = ip.link_lookup(ifname="lo")
        if lo:
            ip.link("set", index=lo[0], state="up")
        deadline = time.monotonic() + wait
        while True:
            names = [str(link.get_attr("IFLA_IFNAME")) for link in ip.get_links()]
            nic = _first_nic(names)
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
        with contextlib.suppress(Exception):
            ip.route("add", dst="0.0.0.0/0", gateway=gateway)
    say(f"qemu machine: {nic} up as {address}/{prefix} via {gateway}")


def power(code: int) -> int:
    """End the machine through reboot(2) for reboot (10) and power off (0); return ``code`` for anything else."""
    if code not in (EXIT_REBOOT, EXIT_POWER_OFF) or not in_guest():
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os.sync()
    cmd = LINUX_REBOOT_CMD_RESTART if code == EXIT_REBOOT else LINUX_REBOOT_CMD_POWER_OFF
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(ctypes.c_int(cmd))
    err = ctypes.get_errno()
    print(f"graven agent: reboot(2) failed: {os.strerror(err)}", file=sys.stderr, flush=True)
    return code
