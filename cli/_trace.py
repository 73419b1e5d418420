"""``gravenctl trace boot|boots``: per-phase and per-task timings of past boots, read offline from a log."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import TextIO

from events import Event
from sequencer.trace import (
    BootSummary,
    format_ns,
    list_boots,
    render_chrome,
    render_json,
    render_svg,
    render_table,
    trace_boot,
)

from ._output import add_output_flag, print_json, table
from ._remote import with_remote_path

_PATH_HELP = "LMDB log directory, node root, or audit export bundle (default: fetched from the node, -e/-n)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trace = sub.add_parser("trace", help="boot traces from a node's event log",
                           description="Boot traces read offline from a signed event log: PATH is an LMDB log "
                                       "directory (or a node root) or an audit export bundle; without PATH, the "
                                       "log of the node named by -e/-n is fetched (AuditExport).")
    cmds = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)

    b = cmds.add_parser("boot", help="one boot's phases and tasks: offsets, durations, critical path",
                        description="Each phase and task of one boot (default: the last) with its start offset and "
                                    "duration, the critical path and the total; a failed boot shows where.")
    b.add_argument("path", nargs="?", help=_PATH_HELP)
    which = b.add_mutually_exclusive_group()
    which.add_argument("--boot", type=int, metavar="N",
                       help="boot number as `trace boots` lists it; negative counts from the end (default: -1)")
    which.add_argument("--boot-id", metavar="ID", help="boot id, or a prefix of it that names one boot")
    add_output_flag(b, ("table", "json", "chrome", "svg"))
    b.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    b.set_defaults(func=with_remote_path(_boot))

    ls = cmds.add_parser("boots", help="every boot in the log: slot, image version, outcome, duration")
    ls.add_argument("path", nargs="?", help=_PATH_HELP)
    add_output_flag(ls)
    ls.set_defaults(func=with_remote_path(_boots))


def _events(path: str) -> list[Event]:
    from ._source import open_events

    return open_events(path)


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def _boot(args: argparse.Namespace) -> int:
    trace = trace_boot(_events(args.path), index=args.boot, boot_id=args.boot_id)
    if args.output == "table":
        text = render_table(trace)
    elif args.output == "svg":
        text = render_svg(trace)
    else:
        doc = render_json(trace) if args.output == "json" else render_chrome(trace)
        text = json.dumps(doc, indent=None if args.output == "chrome" else 2, sort_keys=args.output == "json") + "\n"
    _write(text, args.out)
    return 0


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _row(b: BootSummary) -> dict[str, object]:
    where = None
    if b.failure is not None:
        where = "/".join(x for x in (b.failure.sequence, b.failure.phase, b.failure.task) if x) or b.failure.error
    return {"boot": b.index, "boot_id": b.boot_id, "slot": b.slot, "version": b.version, "outcome": b.outcome,
            "started": _when(b.started_time_ns), "duration": format_ns(b.duration_ns),
            "sequences": _counted(b.sequences), "failed_at": where}


def _counted(names: tuple[str, ...]) -> str:
    """``boot, apply-config x212, upgrade``: each sequence once, in first-run order, with its count."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in counts.items())


def _boots(args: argparse.Namespace, out: TextIO | None = None) -> int:
    boots = list_boots(_events(args.path))
    if args.output == "json":
        print_json([b.to_json() for b in boots], out or sys.stdout)
    else:
        table([_row(b) for b in boots],
              ("boot", "boot_id", "slot", "version", "outcome", "started", "duration", "sequences", "failed_at"),
              out or sys.stdout)
    return 0
