"""``gravenctl cluster create|show|destroy``: the commands over the local-cluster provisioner (``provision``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from api import GravenClient, load_client_config
from errors import GravenError, InvalidRequest
from provision import (
    DEFAULT_NAME,
    FIRST_PORT,
    NETWORKS,
    PROVISIONERS,
    ClusterRecord,
    TimedProgress,
    choose_network,
    choose_provisioner,
    create_cluster,
    create_cluster_netns,
    destroy_cluster,
    load_cluster,
    machine_alive,
    show_netns,
)

from ._output import add_output_flag, command, print_json, table

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = subparsers.add_parser("cluster", help="local clusters of machines: create, show, destroy",
                                    description="Local clusters of Graven machines on this host (sandbox disks, or "
                                                "loop-device block disks as root).")
    cmds = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
        p.add_argument("--state", type=Path, default=None, metavar="DIR",
                       help="where clusters live (default ~/.graven/clusters)")

    p = cmds.add_parser(
        "create", help="build the v1 image, boot machines from it, install, wait for Running",
        description="Generate the cluster's secrets, build the v1 image, boot each machine from it as an installer "
                    "(in the background), apply the machine config, wait for the install and for Running, and "
                    "write the client config (context NAME). Progress goes to stderr.")
    common(p)
    # ``--nodes`` is also gravenctl's global flag (targets), hoisted before the command: see _node_count.
    p.add_argument("--nodes", dest="node_count", type=int, default=1, help="number of machines (default 1)")
    p.add_argument("--disk", choices=["sandbox", "block"], default="sandbox",
                   help="sandbox: folders and files (default); block: a GPT disk file on a loop device (root)")
    p.add_argument("--port", type=int, default=FIRST_PORT,
                   help=f"API port of the first node (default {FIRST_PORT}; 0: any free port); the others get free "
                        "ports")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long each machine may take to install and reach Running (default 120)")
    p.add_argument("--health-timeout", type=float, default=None, metavar="SECONDS",
                   help="passed to the machines: a boot not healthy after this long fails")
    p.add_argument("--no-merge", action="store_true",
                   help="do not merge the context into the default client config (only DIR/NAME/gravenconfig)")
    p.add_argument("--network", choices=NETWORKS, default=None,
                   help="netns: each node in its own network namespace with its own address from 198.18.0.0/15, on "
                        "a bridge (root); loopback: 127.0.0.1 ports (default: netns when root and `ip netns` works, "
                        "else loopback)")
    p.add_argument("--provisioner", choices=PROVISIONERS, default=None,
                   help="container: each agent is PID 1 of its own pid, mount, uts and ipc namespaces with the slot's "
                        "squashfs as / (default as root); process: a child process on this host's root (no root "
                        "needed); qemu: a virtual machine booted from its own "
                        "disk image (root; TCG unless KVM proves itself; one VM: user-mode networking with a "
                        "127.0.0.1 port, several: --network netns, each VM's NIC on a tap device bridged to the "
                        "cluster's bridge)")
    p.add_argument("--memory", default="512M", metavar="SIZE", help="container: each machine's memory limit; "
                   "qemu: each VM's memory (default 512M)")
    p.add_argument("--controlplanes", type=int, default=1, metavar="N",
                   help="with --network netns: how many of the nodes are control planes (default 1; the rest "
                        "are workers)")
    add_output_flag(p)
    p.set_defaults(func=_create)

    command(cmds, "show", _show, "the cluster's machines, endpoints and states",
            "List the cluster's machines (from DIR/NAME/cluster.json), whether their supervisor runs, and what each "
            "node reports (stage, version, slot).", common)
    command(cmds, "destroy", _destroy, "stop the machines, unmount, detach loops, remove everything",
            "Stop every machine of the cluster, unmount and detach what they left, drop the client config context "
            "and remove DIR/NAME. Safe to repeat, and after a crash.", common, output=False)


def _node_count(args: argparse.Namespace) -> int:
    """``--nodes N``: gravenctl hoists ``--nodes`` as its global targets flag, so it may arrive there."""
    hoisted = getattr(args, "nodes", None)
    if hoisted:
        if not str(hoisted).isdigit():
            raise InvalidRequest(f"cluster create --nodes {hoisted!r}: a number of machines")
        return int(hoisted)
    return int(args.node_count)


def _create(args: argparse.Namespace) -> int:
    merge_into: Path | bool | None = False if args.no_merge else \
        (Path(args.gravenconfig) if args.gravenconfig else None)
    say = TimedProgress()
    provisioner = choose_provisioner(args.provisioner, args.disk, say)
    if provisioner == "qemu":
        args.disk = "block"  # the machine's disk is its raw GPT disk image
        if args.network is None:  # one VM alone: user-mode networking; several: the bridge, with taps
            args.network = "netns" if _node_count(args) > 1 else "loopback"
        if args.network == "netns":
            args.port = 0  # each VM's API on its own address, port 50000
    if choose_network(args.network, args.name, say) == "netns":
        record = create_cluster_netns(args.name, state=args.state, nodes=_node_count(args),
                                      controlplanes=args.controlplanes, disk=args.disk,
                                      port=args.port or FIRST_PORT, timeout=args.timeout,
                                      health_timeout=args.health_timeout, merge_into=merge_into, say=say,
                                      provisioner=provisioner, memory=args.memory)
    else:
        record = create_cluster(args.name, state=args.state, nodes=_node_count(args), disk=args.disk,
                                port=args.port, timeout=args.timeout, health_timeout=args.health_timeout,
                                merge_into=merge_into, say=say, provisioner=provisioner, memory=args.memory)
    if args.output == "json":
        print_json(record.to_json())
    else:
        _print_nodes(record, live=False)
    return 0


_LIVE_KEYS = ("machine", "stage", "version", "slot")


def _node_rows(record: ClusterRecord, live: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    ctx_file = Path(record.gravenconfig)
    ctx = None
    if live and ctx_file.exists():
        with contextlib.suppress(GravenError):
            ctx = load_client_config(ctx_file).current()[1]
    for node in record.nodes:
        up = machine_alive(node.pid, node.root)
        row: dict[str, object] = {"name": node.name, "endpoint": node.endpoint,
                                  "machine": "running" if up else "stopped", "pid": node.pid, "root": node.root,
                                  "stage": None, "version": None, "slot": None}
        if up and ctx is not None:
            try:
                with GravenClient.from_context(ctx, node.endpoint, timeout=2) as client:
                    st = client.status()
                row.update(stage=st["stage"] + (" (ready)" if st["ready"] else ""), version=st["version"],
                           slot=st["slot"] or None)
            except GravenError as exc:
                row["stage"] = "maintenance?" if "maintenance" in exc.message else f"unreachable ({exc.code.name})"
        rows.append(row)
    return rows


def _print_nodes(record: ClusterRecord, live: bool) -> None:
    rows = _node_rows(record, live)
    cols = ("name", "endpoint", "machine", "stage", "version", "slot", "root") if live else \
        ("name", "endpoint", "machine", "root")
    table(rows, cols)
    sys.stderr.write(f"cluster {record.name} ({record.disk}): client config {record.gravenconfig}"
                     + (f", context {record.context} in {record.client_config}" if record.context else "")
                     + "\n")


def _show(args: argparse.Namespace) -> int:
    record = load_cluster(args.state, args.name)
    if args.output == "json":
        doc = record.to_json()
        doc["nodes"] = [{**n.to_json(), **{k: v for k, v in r.items() if k in _LIVE_KEYS}}
                        for n, r in zip(record.nodes, _node_rows(record, True), strict=True)]
        print_json(doc)
    else:
        _print_nodes(record, live=True)
        if record.network == "netns":
            _print_netns(record)
    return 0


def _destroy(args: argparse.Namespace) -> int:
    destroy_cluster(args.name, state=args.state)
    return 0


def _print_netns(record: ClusterRecord) -> None:
    live = {n.netns: n for n in show_netns(record.name)} if os.geteuid() == 0 else {}
    rows: list[dict[str, object]] = [
        {"name": n.name, "type": n.type, "netns": n.netns, "address": n.address, "host_veth": n.host_veth,
         "present": ("yes" if n.netns in live else "no") if os.geteuid() == 0 else "?"}
        for n in record.nodes]
    sys.stdout.write("\n")
    table(rows, ("name", "type", "netns", "address", "host_veth", "present"))
    sys.stderr.write(f"network: netns, subnet {record.subnet}, bridge {record.bridge}\n")
