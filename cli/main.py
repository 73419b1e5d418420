"""``gravenctl``: the operator's command line. Each command group lives in a module of its own that
exposes ``register(subparsers)``; this module only assembles them and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from errors import GravenError

from ._output import print_error

# Command-group modules, each with ``register(subparsers: argparse._SubParsersAction) -> None``.
_GROUPS = (
    "cli._audit",
    "cli._trace",
    "cli._config",
    "cli._image",
    "cli._node",
    "cli._logs",
    "cli._dashboard",
    "cli._cluster",
    "cli._etcd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gravenctl",
        description="Operate Graven nodes: config, lifecycle, audit log and boot traces.",
    )
    parser.add_argument("--gravenconfig", help="client config file (default: $GRAVENCONFIG, ~/.graven/config)")
    parser.add_argument("-e", "--endpoints", help="comma-separated endpoints (host[:port])")
    parser.add_argument("-n", "--nodes", help="comma-separated nodes to target")
    parser.add_argument("--context", help="context of the client config to use")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


_GLOBAL_FLAGS = {"--gravenconfig", "-e", "--endpoints", "-n", "--nodes", "--context"}


def hoist_global_flags(argv: Sequence[str]) -> list[str]:
    """Let the global flags stand anywhere on the line, as with talosctl: move them before the command."""
    front: list[str] = []
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_FLAGS:
            front.append(arg)
            if "=" not in arg:
                front.append(next(it, ""))
        elif arg == "--":
            rest.append(arg)
            rest.extend(it)
        else:
            rest.append(arg)
    return front + rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(hoist_global_flags(sys.argv[1:] if argv is None else argv))
    try:
        code = args.func(args)
    except GravenError as exc:
        print_error(exc, getattr(args, "output", "table"))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
