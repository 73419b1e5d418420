"""Reaching nodes from the command line: which nodes (global flags and the client config), a client for
each, fan-out over several, and audit bundles fetched from a node for the offline commands.

Targets: ``-n/--nodes`` if given, else the context's nodes, else ``-e/--endpoints``, else the context's
endpoints. Each target is dialled directly (host[:port], port 50000 by default).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from api import DEFAULT_TIMEOUT, Context, GravenClient, default_client_config_path, load_client_config
from errors import GravenError, InvalidRequest, NotFound

from ._output import atomic_output

__all__ = [
    "connect",
    "context",
    "export_remote",
    "fanout",
    "fetch_bundle",
    "parse_duration",
    "remote_bundle",
    "single_target",
    "targets",
    "with_remote_path",
]

T = TypeVar("T")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``60s``, ``10m``, ``1h30m``, ``8760h`` -> seconds."""
    t = text.strip().lower()
    try:
        return float(t)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 10m, 1h30m, 24h)")
    return total


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def context(args: argparse.Namespace, required: bool = True) -> tuple[str, Context] | None:
    """The client-config context the command runs with (``--context``, else the current one)."""
    path = default_client_config_path(getattr(args, "gravenconfig", None))
    if not required and not path.exists():
        return None
    return load_client_config(path).current(getattr(args, "context", None))


def targets(args: argparse.Namespace) -> list[str]:
    insecure = bool(getattr(args, "insecure", False))
    nodes, endpoints = _split(getattr(args, "nodes", None)), _split(getattr(args, "endpoints", None))
    if nodes or (endpoints and insecure):
        return nodes or endpoints
    found = context(args, required=not (insecure or endpoints))
    ctx = found[1] if found else None
    result = (ctx.nodes if ctx else []) or endpoints or (ctx.endpoints if ctx else [])
    if not result:
        name = found[0] if found else None
        raise InvalidRequest("no node to talk to: give -n/--nodes or -e/--endpoints"
                             + (f", or set them in context {name} (gravenctl config endpoint|node)" if name else ""))
    return list(dict.fromkeys(result))


def single_target(args: argparse.Namespace, what: str) -> str:
    nodes = targets(args)
    if len(nodes) != 1:
        raise InvalidRequest(f"{what} talks to one node; got {len(nodes)}: {', '.join(nodes)} (choose one with -n)")
    return nodes[0]


def connect(args: argparse.Namespace, node: str, *, timeout: float = DEFAULT_TIMEOUT) -> GravenClient:
    """A client for ``node``: the context's credentials, or, with ``--insecure``, the node's pinned certificate."""
    if getattr(args, "insecure", False):
        return GravenClient.insecure(node, fingerprint=getattr(args, "cert_fingerprint", None), timeout=timeout)
    found = context(args)
    assert found is not None
    name, ctx = found
    if not ctx.ca or not ctx.crt or not ctx.key:
        raise NotFound(f"context {name} has no ca/crt/key; a node in maintenance mode needs --insecure", context=name)
    return GravenClient.from_context(ctx, node, timeout=timeout)


def fanout(nodes: list[str], fn: Callable[[str], T]) -> list[tuple[str, T | GravenError]]:
    """Run ``fn(node)`` on every node at once; a node's ``GravenError`` is its result, not the end."""
    def one(node: str) -> T | GravenError:
        try:
            return fn(node)
        except GravenError as exc:
            return exc

    if len(nodes) == 1:
        return [(nodes[0], one(nodes[0]))]
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return list(zip(nodes, pool.map(one, nodes), strict=True))


# -- audit bundles from a node ---------------------------------------------------------------------------
def fetch_bundle(client: GravenClient, *, from_seq: int = 0, to_seq: int = -1, directory: str | Path | None = None,
                 quiet: bool = False) -> Path:
    """Fetch the node's audit bundle into a new temporary file (the caller deletes it)."""
    fd, name = tempfile.mkstemp(prefix="graven-audit-", suffix=".tar", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            size = client.audit_export(f, from_seq=from_seq, to_seq=to_seq)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not quiet:
        sys.stderr.write(f"fetched the audit bundle of {client.endpoint} ({size} bytes)\n")
    return path


@contextmanager
def remote_bundle(args: argparse.Namespace, *, from_seq: int = 0, to_seq: int = -1) -> Iterator[Path]:
    """The audit bundle of the one node the global flags name, as a temporary file for the block."""
    node = single_target(args, "reading a node's log")
    with connect(args, node) as client:
        path = fetch_bundle(client, from_seq=from_seq, to_seq=to_seq)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def with_remote_path(func: Callable[[argparse.Namespace], int], attr: str = "path"
                     ) -> Callable[[argparse.Namespace], int]:
    """Wrap an offline command handler: with no PATH, it runs on a bundle fetched from the node."""
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        if getattr(args, attr, None) is not None:
            return func(args)
        with remote_bundle(args) as path:
            setattr(args, attr, str(path))
            return func(args)

    return wrapper



def export_remote(args: argparse.Namespace) -> int:
    """``audit export -o OUT`` without a path: the node's bundle for ``--from``/``--to``, written atomically."""
    node = single_target(args, "audit export")
    out = Path(args.out)
    with connect(args, node) as client, atomic_output(out, ".partial") as f:
        size = client.audit_export(f, from_seq=args.start, to_seq=-1 if args.end is None else args.end)
    sys.stderr.write(f"exported the audit bundle of {node} ({size} bytes) to {out}\n")
    return 0
