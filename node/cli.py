"""``graven``: the node side. ``graven agent`` runs one boot of the agent; ``graven machine`` powers a machine on."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from events.errors import GravenError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graven", description="The Graven node: agent and machine supervisor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    a = sub.add_parser("agent", help="run the agent for one boot (exit 0 power off, 10 reboot, 20 failed boot)",
                       description="Open the node's log, run initialize and boot (or install), serve the API.")
    a.add_argument("--root", required=True, type=Path, help="the machine's directory (sandbox disk under DIR/disk)")
    a.add_argument("--listen", default="127.0.0.1:50000", metavar="ADDR:PORT", help="API address (default %(default)s)")
    a.set_defaults(func=_agent)
    return parser


def _agent(args: argparse.Namespace) -> int:
    from .agent import run_agent

    return run_agent(args.root, args.listen)


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
