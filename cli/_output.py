"""Output for people (aligned tables) and programs (``-o json``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

from errors import GravenError


def add_output_flag(parser: argparse.ArgumentParser, choices: Sequence[str] = ("table", "json")) -> None:
    parser.add_argument("-o", "--output", choices=list(choices), default=choices[0], help="output format")


def command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            func: Callable[[argparse.Namespace], int], help: str, description: str,
            *flags: Callable[[argparse.ArgumentParser], None], output: bool = True,
            **defaults: object) -> argparse.ArgumentParser:
    """A command's parser: its ``help`` and ``description``, the ``flags`` (each adds options), then ``-o``
    (unless not ``output``), and ``func`` to run with ``defaults``. Returns it for the positional arguments."""
    p = subparsers.add_parser(name, help=help, description=description)
    for add in flags:
        add(p)
    if output:
        add_output_flag(p)
    p.set_defaults(func=func, **defaults)
    return p


@contextmanager
def atomic_output(path: Path, suffix: str) -> Iterator[BinaryIO]:
    """A file written whole or not at all: into ``path`` + ``suffix``, synced, then renamed over ``path``;
    removed on any failure (an interrupt included), leaving what ``path`` held before."""
    part = path.with_name(path.name + suffix)
    try:
        with part.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def print_json(obj: object, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(obj, out, indent=2, sort_keys=True, default=_default)
    out.write("\n")


def _default(obj: object) -> object:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], out: TextIO | None = None) -> None:
    """Print ``rows`` as an aligned table with upper-case headers."""
    out = out or sys.stdout
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return value.hex()[:16]
    if isinstance(value, Mapping):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return str(value)


def error_cell(exc: GravenError) -> str:
    """A node's error in a table cell: ``[CODE] message``."""
    return f"[{exc.code.name}] {exc.message}"


def error_row(node: str, exc: GravenError, output: str) -> dict[str, object]:
    """A node's error as its row: the error's fields for ``-o json``, its cell for a table."""
    return {"node": node, "error": exc.to_dict() if output == "json" else error_cell(exc)}


def print_node_error(node: str, exc: GravenError) -> None:
    """A node's error on stderr, where its results go on stdout."""
    sys.stderr.write(f"{node}: error [{exc.code.name}]: {exc.message}\n")


def print_error(exc: GravenError, output: str = "table") -> None:
    if output == "json":
        print_json({"error": exc.to_dict()}, sys.stderr)
        return
    # Lists of problems (config errors, warnings) are already spelled out in the message.
    detail = ", ".join(f"{k}={v}" for k, v in exc.details.items() if v is not None and k not in ("errors", "warnings"))
    sys.stderr.write(f"error [{exc.code.name}]: {exc.message}" + (f" ({detail})" if detail else "") + "\n")
