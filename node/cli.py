"""``graven``: the node side. ``graven agent`` runs one boot of the agent; ``graven machine`` powers a machine on."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from errors import GravenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graven", description="The Graven node: agent and machine supervisor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    a = sub.add_parser("agent", help="run the agent for one boot (exit 0 power off, 10 reboot, 20 failed boot)",
                       description="Open the node's log, run initialize and boot (or install), serve the API.")
    a.add_argument("--root", required=True, type=Path, help="the machine's directory (sandbox disk under DIR/disk)")
    a.add_argument("--listen", default="127.0.0.1:50000", metavar="ADDR:PORT", help="API address (default %(default)s)")
    a.add_argument("--disk", type=Path, metavar="DEVICE_OR_FILE",
                   help="a block device or GPT disk image file (default: the sandbox disk under --root)")
    a.add_argument("--health-timeout", type=float, metavar="SECONDS",
                   help="fail the boot when the services are not healthy after this long")
    a.set_defaults(func=_agent)

    m = sub.add_parser(
        "machine", help="power a machine on: boot the agent from its verified slot image, count tries, fall back",
        description="Play firmware and bootloader for the disk: every boot, pick a slot (the default, or the "
                    "other when the default ran out of tries), verify its image, mount its root read-only and run "
                    "the agent from it. Exit 10 reboots, 0 powers off (the machine exits 0), anything else is a "
                    "failed boot. With no bootable slot, boot the installer image (--boot-from). SIGTERM shuts "
                    "the agent down gracefully, then the machine stops.")
    m.add_argument("--root", required=True, type=Path,
                   help="the machine's directory (sandbox disk under DIR/disk, mounts under DIR/run)")
    m.add_argument("--disk", type=Path, metavar="DEVICE_OR_FILE",
                   help="a block device or disk image file (a loop device is attached); default: the sandbox")
    m.add_argument("--boot-from", type=Path, metavar="IMAGE",
                   help="installer image to boot when no slot can boot (an empty disk), as a Talos ISO")
    m.add_argument("--trusted-key", type=Path, action="append", default=[], metavar="PUB",
                   help="image public key (PEM) trusted until a machine config names its own (repeat)")
    m.add_argument("--listen", default="127.0.0.1:50000", metavar="ADDR:PORT",
                   help="the agent's API address (default %(default)s)")
    m.add_argument("--health-timeout", type=float, metavar="SECONDS",
                   help="a boot whose services are not healthy after this long fails")
    m.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long the agent has to shut down before it is killed (default 30)")
    m.add_argument("--max-failed-boots", type=int, default=10, metavar="N",
                   help="stop after N failed boots in a row (default 10)")
    m.add_argument("--provisioner", choices=["process", "container", "qemu"], default="process",
                   help="process: the agent is a child process on the host's root (no root needed); container: the "
                        "agent is PID 1 of its own pid, mount, uts and ipc namespaces with the slot's squashfs as /, "
                        "in a memory cgroup (root); qemu: a virtual machine booted from the --disk image file "
                        "(Debian's cloud kernel, Graven's initramfs, the API forwarded to --listen) (default "
                        "%(default)s)")
    m.add_argument("--memory", default="512M", metavar="SIZE",
                   help="container: the machine's memory limit (cgroup); qemu: the VM's memory; e.g. 512M or 1G "
                        "(default %(default)s)")
    m.add_argument("--share", type=Path, action="append", default=[], metavar="DIR",
                   help="container: a host folder the node may write, at its host path (audit sinks; repeat)")
    m.add_argument("--tap", metavar="IFNAME",
                   help="qemu: the VM's NIC on this tap device of the machine's network namespace (a cluster's "
                        "bridge) instead of user-mode networking; needs --address, and --listen ADDRESS:50000")
    m.add_argument("--address", metavar="CIDR",
                   help="qemu with --tap: the guest's address on that network (e.g. 198.18.7.2/24), handed to it "
                        "through fw_cfg until its machine config sets its own")
    m.set_defaults(func=_machine)
    return parser


def _agent(args: argparse.Namespace) -> int:
    from . import _pid1
    from ._boottrace import mark
    from .agent import run_agent

    mark("imported")
    if not _pid1.is_pid1():
        return run_agent(args.root, args.listen, device=args.disk, health_timeout=args.health_timeout)
    _pid1.start_reaper()  # PID 1 of a container machine: reap orphans, end through reboot(2)
    return _pid1.power(run_agent(args.root, args.listen, device=args.disk, health_timeout=args.health_timeout))


def _machine(args: argparse.Namespace) -> int:
    from ._supervisor import MachineOptions, load_trusted_keys, run_machine

    opts = MachineOptions(root=args.root, device=args.disk, boot_from=args.boot_from,
                          trusted_keys=load_trusted_keys(args.trusted_key), listen=args.listen,
                          health_timeout=args.health_timeout, grace=args.grace,
                          max_failed_boots=args.max_failed_boots, provisioner=args.provisioner,
                          memory=_size(args.memory), shares=args.share, tap=args.tap, address=args.address)
    return run_machine(opts)


def _size(text: str) -> int:
    from errors import InvalidRequest

    from ._launch import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GravenError as exc:
        print(f"graven: error [{exc.code.name}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
