"""``gravenctl config context|contexts|endpoint|node|info|merge``: the client config's commands (the file
itself, ``api._clientconfig``, is what the client reads)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
from collections.abc import Iterable, Sequence
from typing import TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from api import ClientConfig, Context, split_endpoint
from api import load_client_config as load
from api import load_or_new_client_config as load_or_new

from ._output import command, print_json, table

__all__ = ["register"]


# -- commands --------------------------------------------------------------------------------------------
def register(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client-config commands to the ``config`` group's sub-subparsers."""
    p = command(cmds, "context", _context, "switch the current context",
                "Make NAME the current context of the client config.", output=False)
    p.add_argument("name", help="context name")
    command(cmds, "contexts", _contexts, "list the contexts of the client config",
            "List contexts: endpoints, nodes, roles and certificate expiry.")
    p = command(cmds, "endpoint", _endpoint, "set the endpoints of the current context",
                "Replace the endpoints (host[:port], port 50000 by default) of the current context (or "
                "--context).", output=False)
    p.add_argument("endpoints", nargs="+", metavar="ENDPOINT")
    p = command(cmds, "node", _node, "set the default nodes of the current context",
                "Replace the nodes commands target by default; none given clears them (then the endpoints are the "
                "targets).", output=False)
    p.add_argument("nodes", nargs="*", metavar="NODE")
    command(cmds, "info", _info, "show the current context",
            "Show the current context: endpoints, nodes, roles and certificate.")
    p = command(cmds, "merge", _merge, "merge the contexts of another client config into this one",
                "Add FILE's contexts; a name already taken gets a -N suffix. FILE's current context becomes the "
                "current one.", output=False)
    p.add_argument("file", help="client config to merge from")


def _load_for_edit(args: argparse.Namespace) -> ClientConfig:
    return load(getattr(args, "gravenconfig", None))


def _context(args: argparse.Namespace) -> int:
    cfg = _load_for_edit(args)
    name, _ = cfg.current(args.name)
    cfg.context = name
    cfg.save()
    print(f"current context is now {name} ({cfg.path})")
    return 0


class _CertInfo(TypedDict, total=False):
    subject: str | None
    roles: list[str]
    expires: str | None
    expired: bool | None
    error: str


class _ContextInfo(TypedDict):
    name: str
    current: bool
    endpoints: list[str]
    nodes: list[str]
    certificate: _CertInfo
    ca_sha256: str | None


def _cert_info(ctx: Context) -> _CertInfo:
    try:
        cert = ctx.certificate()
    except ValueError as exc:
        return {"error": f"unreadable certificate: {exc}"}
    if cert is None:
        return {"subject": None, "roles": [], "expires": None, "expired": None}
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    expires = cert.not_valid_after_utc
    return {"subject": str(cn[0].value) if cn else "", "roles": ctx.roles(),
            "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "expired": expires < dt.datetime.now(dt.UTC)}


def _ca_fingerprint(ctx: Context) -> str | None:
    if not ctx.ca:
        return None
    try:
        der = x509.load_pem_x509_certificate(ctx.ca).public_bytes(serialization.Encoding.DER)
    except ValueError:
        return None
    return hashlib.sha256(der).hexdigest()


def _context_dict(name: str, ctx: Context, current: bool) -> _ContextInfo:
    return {"name": name, "current": current, "endpoints": ctx.endpoints, "nodes": ctx.nodes,
            "certificate": _cert_info(ctx), "ca_sha256": _ca_fingerprint(ctx)}


def _contexts(args: argparse.Namespace) -> int:
    cfg = _load_for_edit(args)
    rows = [_context_dict(n, c, n == cfg.context) for n, c in sorted(cfg.contexts.items())]
    if args.output == "json":
        print_json({"path": str(cfg.path), "context": cfg.context, "contexts": rows})
        return 0
    table([{"current": "*" if r["current"] else "", "name": r["name"], "endpoints": r["endpoints"] or None,
            "nodes": r["nodes"] or None, "roles": r["certificate"].get("roles") or None,
            "expires": r["certificate"].get("expires")} for r in rows],
          ("current", "name", "endpoints", "nodes", "roles", "expires"))
    return 0


def _edit_current(args: argparse.Namespace, what: str, values: Sequence[str]) -> int:
    cfg = _load_for_edit(args)
    name, ctx = cfg.current(getattr(args, "context", None))
    if what == "endpoints":
        for ep in values:
            split_endpoint(ep)  # refuse a malformed endpoint before writing it
        ctx.endpoints = list(values)
    else:
        ctx.nodes = list(values)
    cfg.save()
    print(f"{name}: {what} = {', '.join(values) or '(none)'}")
    return 0


def _endpoint(args: argparse.Namespace) -> int:
    return _edit_current(args, "endpoints", _split_all(args.endpoints))


def _node(args: argparse.Namespace) -> int:
    return _edit_current(args, "nodes", _split_all(args.nodes))


def _split_all(values: Iterable[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _info(args: argparse.Namespace) -> int:
    cfg = _load_for_edit(args)
    name, ctx = cfg.current(getattr(args, "context", None))
    d = _context_dict(name, ctx, name == cfg.context)
    if args.output == "json":
        print_json({"path": str(cfg.path), **d})
        return 0
    cert = d["certificate"]
    rows = [("path", str(cfg.path)), ("context", name), ("endpoints", ", ".join(ctx.endpoints) or "-"),
            ("nodes", ", ".join(ctx.nodes) or "-"), ("subject", cert.get("subject") or "-"),
            ("roles", ", ".join(cert.get("roles") or []) or "-"),
            ("expires", (cert.get("expires") or "-") + (" (EXPIRED)" if cert.get("expired") else "")),
            ("ca sha256", d["ca_sha256"] or "-")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    other = load(args.file)
    cfg = load_or_new(getattr(args, "gravenconfig", None))
    used = cfg.merge(other)
    cfg.save()
    for old, new in used.items():
        note = "" if old == new else f" (renamed: {old} was taken)"
        print(f"merged context {new}{note}")
    sys.stdout.write(f"current context: {cfg.context or '-'} ({cfg.path})\n")
    return 0
