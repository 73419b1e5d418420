"""``gravenctl validate`` and ``gravenctl config patch|diff``: machine config files, offline.

The ``config`` group is shared with the client-config commands (``config new``, ``context``, ...).
``config_subparsers(subparsers)`` returns the group's sub-subparsers, creating the group on the first call,
so another command-group module adds its commands the same way whatever order the groups register in::

    def register(subparsers):
        cmds = config_subparsers(subparsers)
        p = cmds.add_parser("contexts", help="list contexts")
        p.set_defaults(func=_contexts)

Exit codes: 0 when the config is valid (warnings are printed), 1 with every error (path and line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

import config
from config.limits import LIMITS
from errors import InvalidConfig, InvalidRequest, NotFound

from ._output import add_output_flag, print_json, table

__all__ = ["config_subparsers", "register"]

_PROBLEM_COLUMNS = ("level", "line", "path", "message")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check a machine config file: every error with its path and line, and warnings",
        description="Validate a machine config. Exits 0 when valid (warnings are printed), 1 with every error.",
    )
    p.add_argument("-f", "--file", required=True, help="machine config YAML ('-' for stdin)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    add_output_flag(p)
    p.set_defaults(func=_validate)

    p = subparsers.add_parser(
        "limits",
        help="the named limits every node applies to what a request may ask (specs/limits.md)",
        description="The limits on requests (config size, YAML aliases, depth and nodes, upload size, ...), with "
        "their values: a refusal names the limit it hit.",
    )
    add_output_flag(p)
    p.set_defaults(func=_limits)

    cmds = config_subparsers(subparsers)
    p = cmds.add_parser(
        "patch",
        help="patch a machine config file (JSON Patch or YAML merge patch) and print or write the result",
        description="Apply patches in order, validate the result, print it (or write it with -o). "
        "PATCH is a file, @file, or inline: a list of RFC 6902 operations, or a mapping (RFC 7386 merge patch).",
    )
    p.add_argument("-f", "--file", required=True, help="machine config YAML ('-' for stdin)")
    p.add_argument("-p", "--patch", action="append", required=True, metavar="PATCH", help="patch (repeatable)")
    p.add_argument("-o", "--output", dest="out", metavar="OUT", help="write the patched config here")
    p.set_defaults(func=_patch)

    p = cmds.add_parser(
        "diff",
        help="show what changes between two machine config files (secrets as digests)",
        description="Diff two machine configs. Secrets are shown as sha256 digests, never in clear.",
    )
    p.add_argument("old", help="the config before")
    p.add_argument("new", help="the config after")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the configs differ")
    add_output_flag(p)
    p.set_defaults(func=_diff)


if TYPE_CHECKING:  # argparse's action is generic only to the type checker
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def config_subparsers(subparsers: Subparsers) -> Subparsers:
    """The ``config`` group's sub-subparsers, creating the group on first use."""
    parser = subparsers.choices.get("config")
    if parser is None:
        parser = subparsers.add_parser(
            "config",
            help="machine config files (patch, diff) and the client config",
            description="Work on machine config files offline (patch, diff), and on the client config.",
        )
        cmds: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
            dest="config_command", metavar="COMMAND", required=True
        )
        return cmds
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError("the config parser has no subcommands")  # pragma: no cover


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file", path=path) from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc.strerror}", path=path) from None


def _patch_source(arg: str) -> tuple[str, bytes]:
    if arg.startswith("@"):
        return arg[1:], _read(arg[1:])
    if arg == "-" or os.path.exists(arg):
        return arg, _read(arg)
    if arg.lstrip().startswith(("[", "{")):
        return "inline patch", arg.encode()
    raise NotFound(f"patch {arg!r}: no such file (give a file, @file, or an inline patch starting with [ or {{)")


def _rows(level: str, problems: Sequence[object]) -> list[dict[str, object]]:
    rows = []
    for p in problems:
        d = p.to_dict() if isinstance(p, config.Problem) else p
        if isinstance(d, Mapping):
            rows.append({**d, "level": level, "path": d.get("path") or "(document)"})
    return rows


def _listed(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _print_problems(errors: Sequence[object], warnings: Sequence[object], out: TextIO) -> None:
    rows = _rows("error", errors) + _rows("warning", warnings)
    if rows:
        table(rows, _PROBLEM_COLUMNS, out)


def _report_invalid(exc: InvalidConfig, name: str) -> int:
    errors = _listed(exc.details.get("errors"))
    _print_problems(errors, _listed(exc.details.get("warnings")), sys.stderr)
    n = len(errors)
    sys.stderr.write(f"{name}: invalid: {n} error{'s' if n != 1 else ''}\n")
    return 1


def _load(path: str) -> config.MachineConfig:
    return config.load(_read(path), name=path)


def _limits(args: argparse.Namespace) -> int:
    if args.output == "json":
        print_json(LIMITS.as_dict())
    else:
        table(LIMITS.rows(), ("name", "value", "what"))
    return 0


def _validate(args: argparse.Namespace) -> int:
    name = "stdin" if args.file == "-" else args.file
    result = config.validate(_read(args.file))
    failed = not result.ok or (args.strict and bool(result.warnings))
    if args.output == "json":
        print_json(
            {
                "file": name,
                "valid": not failed,
                "errors": [p.to_dict() for p in result.errors],
                "warnings": [p.to_dict() for p in result.warnings],
                "digest": config.digest(result.config) if result.config is not None else None,
            }
        )
        return 1 if failed else 0
    _print_problems(result.errors, result.warnings, sys.stdout)
    ne, nw = len(result.errors), len(result.warnings)
    counts = f"{ne} error{'s' if ne != 1 else ''}, {nw} warning{'s' if nw != 1 else ''}"
    if failed:
        why = " (--strict: warnings count as errors)" if result.ok else ""
        sys.stdout.write(f"{name}: invalid: {counts}{why}\n")
        return 1
    sys.stdout.write(f"{name}: valid" + (f" ({counts})" if nw else "") + "\n")
    return 0


def _patch(args: argparse.Namespace) -> int:
    try:
        base = _load(args.file)
        patches = []
        for arg in args.patch:
            source, data = _patch_source(arg)
            try:
                patches.append(config.load_patch(data))
            except InvalidConfig as exc:
                return _report_invalid(exc, source)
        patched = config.apply_patch(base, *patches)
    except InvalidConfig as exc:
        return _report_invalid(exc, str(exc.details.get("source", args.file)))
    warnings = config.validate(patched).warnings
    if warnings:
        _print_problems((), warnings, sys.stderr)
    text = config.dump_yaml(patched)
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as exc:
            raise InvalidRequest(f"{args.out}: cannot write: {exc.strerror}", path=args.out) from None
    else:
        sys.stdout.write(text)
    return 0


def _cell(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _diff(args: argparse.Namespace) -> int:
    try:
        old, new = _load(args.old), _load(args.new)
    except InvalidConfig as exc:
        return _report_invalid(exc, str(exc.details.get("source", "config")))
    changes = config.diff(old, new)
    if args.output == "json":
        print_json(
            {
                "old": {"file": args.old, "digest": config.digest(old)},
                "new": {"file": args.new, "digest": config.digest(new)},
                "changes": [c.to_dict() for c in changes],
            }
        )
    elif changes:
        rows = [
            {
                "op": c.op,
                "path": c.path,
                "old": None if c.op == "add" else _cell(c.old),
                "new": None if c.op == "remove" else _cell(c.new),
            }
            for c in changes
        ]
        table(rows, ("op", "path", "old", "new"))
    else:
        sys.stdout.write("no changes\n")
    return 1 if args.exit_code and changes else 0
