"""``gravenctl logs [SERVICE]``: a service's log lines (the agent's own by default), streamed from the node;
``gravenctl dmesg``: the kernel's log of a node with a kernel of its own."""

from __future__ import annotations

import argparse
import json
import sys

from ._output import add_output_flag
from ._remote import connect, single_target

LEVEL_WIDTH = 7


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "logs", help="a service's log lines: the agent's own by default, or -f to follow them",
        description="The log lines of SERVICE on the node (default: agent, the node agent itself): JSON lines with "
                    "time, level, boot id and message, kept in a bounded ring on EPHEMERAL. --tail N starts with the "
                    "last N lines; -f follows new ones and resumes after a reboot without losing or repeating a "
                    "line. -o json prints each line as the node keeps it (JSON Lines).")
    p.add_argument("service", nargs="?", default="agent", help="the service (default: agent)")
    p.add_argument("--since", type=int, default=0, metavar="POS", help="first line position (default 0)")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="start with the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    add_output_flag(p)
    p.set_defaults(func=_logs)

    d = sub.add_parser(
        "dmesg", help="the kernel's log of a node with a kernel of its own (a virtual machine)",
        description="The kernel's records (/dev/kmsg) of a node that runs its own kernel: a virtual machine. A process "
                    "or container machine shares its host's kernel and is refused (NOT_FOUND). -o json: one JSON "
                    "object per record (seq, time_s, level, facility, msg).")
    d.add_argument("--tail", type=int, default=None, metavar="N", help="start with the last N records")
    d.add_argument("-f", "--follow", action="store_true", help="keep streaming new records")
    add_output_flag(d)
    d.set_defaults(func=_dmesg)


def _logs(args: argparse.Namespace) -> int:
    node = single_target(args, "logs")
    with connect(args, node) as client:
        try:
            for _, raw in client.logs(args.service, since=args.since, tail=args.tail, follow=args.follow):
                sys.stdout.write(raw.decode(errors="replace") + "\n" if args.output == "json" else _human(raw))
                sys.stdout.flush()
        except KeyboardInterrupt:
            return 130
    return 0


def _dmesg(args: argparse.Namespace) -> int:
    node = single_target(args, "dmesg")
    with connect(args, node) as client:
        try:
            for raw in client.dmesg(tail=args.tail, follow=args.follow):
                if args.output == "json":
                    sys.stdout.write(raw.decode(errors="replace") + "\n")
                else:
                    r = json.loads(raw)
                    sys.stdout.write(f"[{r['time_s']:12.6f}] {r['level']:<{LEVEL_WIDTH}} {r['msg']}\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return 130
    return 0


def _human(raw: bytes) -> str:
    try:
        line = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace") + "\n"
    extra = f"\n{line['error']}" if line.get("error") else ""
    return f"{line.get('time', '')} {line.get('level', ''):<{LEVEL_WIDTH}} {line.get('msg', '')}{extra}\n"
