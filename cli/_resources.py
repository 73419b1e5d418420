"""``gravenctl processes`` and ``gravenctl get processes|mounts``: what a node sees from inside.

On a container machine the agent is PID 1 (its children, if any, under it) and ``/`` is the booted slot's squashfs,
read-only; on a process machine these are the host's, as the agent sees them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from ._output import add_output_flag, print_json, table

__all__ = ["register", "register_get"]

COLUMNS = {"processes": ("node", "pid", "ppid", "state", "threads", "rss", "cpu_seconds", "command"),
           "mounts": ("node", "mountpoint", "fstype", "source", "mode", "options")}
SORTS = {"pid": ("pid", False), "rss": ("rss_bytes", True), "cpu": ("cpu_seconds", True)}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("processes", aliases=["ps"], help="the node's processes, seen from inside",
                              description="List each node's processes as the node sees them (on a container "
                                          "machine PID 1 is the agent): pid, parent, state, threads, resident "
                                          "memory, CPU time and command line.")
    p.add_argument("--sort", choices=sorted(SORTS), default="pid", help="order of the rows (default pid)")
    add_output_flag(p)
    p.set_defaults(func=_show, kind="processes")


def register_get(gets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = gets.add_parser("mounts", help="the node's mounts, seen from inside (/ is the slot's squashfs, ro)",
                        description="Each node's mount table from its own /proc/self/mountinfo: mount point, "
                                    "file system, source, ro or rw.")
    add_output_flag(p)
    p.set_defaults(func=_show, kind="mounts", sort="pid")
    p = gets.add_parser("processes", help="the node's processes, seen from inside (as `gravenctl processes`)")
    p.add_argument("--sort", choices=sorted(SORTS), default="pid", help="order of the rows (default pid)")
    add_output_flag(p)
    p.set_defaults(func=_show, kind="processes")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _show(args: argparse.Namespace) -> int:
    from ._targets import _node_rows, _on_nodes

    def order(r: Sequence[Mapping[str, object]]) -> Sequence[Mapping[str, object]]:
        if args.kind != "processes":
            return r
        key, rev = SORTS[args.sort]
        return sorted(r, key=lambda row: _number(row.get(key)), reverse=rev)

    rows, failed = _node_rows(args, _on_nodes(args, lambda c: c.resources(args.kind)), order)
    if args.output == "json":
        print_json(rows)
        return 1 if failed else 0
    for row in rows:
        if "rss_bytes" in row:
            row["rss"] = _mib(int(_number(row["rss_bytes"])))
        if "read_only" in row:
            row["mode"] = "ro" if row["read_only"] else "rw"
    table(rows, [*COLUMNS[args.kind], *(["error"] if failed else [])])
    return 1 if failed else 0


def _number(value: object) -> float:
    """A numeric cell (a missing or non-numeric one sorts as 0)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0
