"""``gravenctl`` commands that talk to nodes, and the client's own files.

Node commands: ``version``, ``status`` (with network drift), ``get config``, ``get links|addresses|routes``,
``apply-config``, ``upgrade``, ``rollback``, ``reset``,
``reboot``, ``shutdown``, ``events``, ``config new``. With several targets (``-n a,b`` or several endpoints) a
command runs on all of them at once and prints one row per node; a node that fails or cannot be reached is an
error row, and the exit code is 1. ``--wait`` follows the node's events from the request on, across its
reboot, shows progress on stderr and ends with the outcome (exit 0 on success, 1 on failure or timeout).

Files: ``gen config`` (``_pki``) and ``config context|contexts|endpoint|node|info|merge`` (``_clientconfig``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

import config
from api import (
    Accepted,
    Applied,
    ClientConfig,
    Context,
    GravenClient,
    SequenceInfo,
    StatusInfo,
    check_roles,
    client_version,
)
from errors import GravenError, InvalidConfig, InvalidRequest, NotFound

from . import _contexts, _gen, _resources
from ._config import _cell, _report_invalid, config_subparsers
from ._events import _events
from ._output import add_output_flag, command, print_json, print_node_error, table
from ._remote import connect, context, parse_duration, single_target, targets
from ._rolling import _rolling_upgrade
from ._targets import _emit, _node_rows, _on_nodes, _Progress, wait_back, wait_for
from ._wait import Outcome

__all__ = ["register"]

WAIT_TIMEOUT = "10m"
WIPE_LABELS = ("STATE", "EPHEMERAL")
NETWORK_RESOURCES = {"links": "links (up, MTU, state)", "addresses": "addresses",
                     "routes": "routes (main table)"}
NETWORK_COLUMNS = {"links": ("interface", "up", "mtu", "operstate", "mac", "kind"),
                   "addresses": ("interface", "address", "family", "scope", "graven"),
                   "routes": ("interface", "network", "gateway", "metric", "protocol", "scope", "graven")}


# -- registration ----------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _gen.register(subparsers)
    cmds = config_subparsers(subparsers)
    _contexts.register(cmds)
    _register_config_new(cmds)

    command(subparsers, "version", _version, "client and node versions (the code each node runs)",
            "The version, image digest and slot each node reports from the code it runs, and this client's "
            "version.", _insecure_flags)
    command(subparsers, "status", _status, "machine stage, readiness, slot, running sequence, last fallback",
            "Each node's stage, readiness, booted slot and version, the running sequence (if any) and the last boot "
            "fallback (if any).", _insecure_flags)

    get = subparsers.add_parser("get", help="read a node's resources", description="Read a node's resources.")
    gets = get.add_subparsers(dest="get_command", metavar="RESOURCE", required=True)
    p = gets.add_parser("config", help="the node's machine config (secrets redacted unless os:admin)",
                        description="Print the node's active machine config as YAML (secrets redacted unless the "
                                    "client is os:admin).")
    add_output_flag(p, ("yaml", "json"))
    p.set_defaults(func=_get_config)
    for what, text in NETWORK_RESOURCES.items():
        p = gets.add_parser(what, help=f"the node's live {text} (the sandbox: the plan it recorded)",
                            description=f"The node's {text}, read live with netlink in its network namespace "
                                        "(GRAVEN column: added by Graven). A sandbox node shows the plan it "
                                        "recorded instead (PLANNED).")
        add_output_flag(p)
        p.set_defaults(func=_get_network, what=what)
    _resources.register_get(gets)
    _resources.register(subparsers)

    p = subparsers.add_parser(
        "apply-config", aliases=["apply"], help="apply a machine config to nodes (or --dry-run: show the diff)",
        description="Validate FILE locally, then apply it. Modes: auto (the node chooses), no-reboot, reboot, "
                    "staged (at the next boot), try (reverted after --try-timeout unless confirmed). --dry-run "
                    "shows the diff and applies nothing. --insecure: a node in maintenance mode.",
    )
    p.add_argument("-f", "--file", required=True, help="machine config YAML ('-' for stdin)")
    p.add_argument("-m", "--mode", choices=["auto", "no-reboot", "reboot", "staged", "try"], default="auto",
                   help="how to apply it (default auto)")
    p.add_argument("--try-timeout", type=parse_duration, default=60.0, metavar="DURATION",
                   help="mode try: revert after this unless confirmed (default 60s)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; apply nothing")
    _insecure_flags(p)
    add_output_flag(p)
    p.set_defaults(func=_apply)

    p = subparsers.add_parser(
        "upgrade", help="install an image in the inactive slot and reboot into it",
        description="Stream IMAGE (a file, in 1 MiB chunks) to the node, or give it a URL (file://, https://) "
                    "to fetch. The node verifies it, writes the inactive slot, arms it and reboots (--stage: "
                    "arms it for the next reboot). A new image that fails its health checks falls back by itself.",
    )
    p.add_argument("-i", "--image", required=True, metavar="FILE|URL", help="the image file or URL")
    p.add_argument("--stage", action="store_true", help="only stage it: it boots at the next reboot")
    p.add_argument("--force", action="store_true",
                   help="even if it leaves etcd without quorum (a controlplane node's upgrade is refused otherwise)")
    p.add_argument("--rolling", action="store_true",
                   help="one node at a time, in the order given (implies --wait): the next only after the previous "
                        "is Running and committed on the new version; stops at the first node that falls back or "
                        "fails and leaves the rest untouched (--timeout: per node)")
    _wait_flags(p)
    p.set_defaults(func=_upgrade)

    command(subparsers, "rollback", _simple("rollback"), "boot the other slot again (it must hold a good image)",
            "Make the other slot, which must have booted good, the default and reboot into it.", _wait_flags,
            output=False)

    p = subparsers.add_parser(
        "reset", help="wipe STATE and/or EPHEMERAL, then power off (or --reboot)",
        description="Ship the log to the audit sinks (--graceful, default), stop services, seal the log, wipe the "
                    "partitions, then power off, or reboot into maintenance with --reboot. --force allows "
                    "destroying events that were never shipped. --wait follows it until the node goes away, "
                    "and with --reboot until it answers again (in maintenance when STATE was wiped).",
    )
    p.add_argument("--wipe", default=",".join(WIPE_LABELS), metavar="LABELS",
                   help="comma-separated partition labels (default STATE,EPHEMERAL)")
    p.add_argument("--graceful", action=argparse.BooleanOptionalAction, default=True,
                   help="ship the log and stop services first (default: yes)")
    p.add_argument("--reboot", action="store_true", help="reboot afterwards instead of powering off")
    p.add_argument("--force", action="store_true", help="allow destroying events no audit sink has received")
    _wait_flags(p)
    p.set_defaults(func=_reset)

    command(subparsers, "reboot", _simple("reboot"), "stop services, seal the log, reboot",
            "Reboot the nodes; with --wait, until each is up again. Refused (QUORUM_AT_RISK) for a controlplane node "
            "whose reboot would leave etcd without quorum, unless --force.", _wait_flags, _quorum_force, output=False)
    command(subparsers, "shutdown", _simple("shutdown"), "stop services, seal the log, power off",
            "Power the nodes off; with --wait, until each has gone. Refused (QUORUM_AT_RISK) for a controlplane node "
            "whose shutdown would leave etcd without quorum, unless --force.", _wait_flags, _quorum_force,
            output=False)

    p = subparsers.add_parser(
        "events", help="the node's signed event log: past events, or follow (-f) new ones",
        description="Show events from --since SEQ (default 0) or the last --tail N; -f follows new events and "
                    "reconnects across a reboot without missing or repeating one. -o json: one JSON object per line.",
    )
    p.add_argument("--since", type=int, default=0, metavar="SEQ", help="first seq (default 0)")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="start with the last N events")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new events")
    p.add_argument("--kind", action="append", default=[], metavar="GLOB", help="kinds to show, e.g. 'boot.*' (repeat)")
    p.add_argument("--actor", metavar="GLOB", help="only events whose actor id or role matches")
    p.add_argument("--timeout", type=parse_duration, default=None, metavar="DURATION",
                   help="with -f: stop following after this long (default: until interrupted)")
    add_output_flag(p)
    p.set_defaults(func=_events)


def _register_config_new(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser(
        "new", help="ask a node (os:admin) for a client config with other roles",
        description="Ask the node for a client certificate with --roles and --crt-ttl (GenerateClientConfiguration, "
                    "os:admin only) and write a client config FILE with it and the current context's endpoints.",
    )
    p.add_argument("file", help="client config to write")
    p.add_argument("--roles", default="os:admin", help="comma-separated roles (os:admin, os:operator, os:reader)")
    p.add_argument("--crt-ttl", type=parse_duration, default=parse_duration("8760h"), metavar="DURATION",
                   help="certificate lifetime (default 8760h)")
    p.add_argument("--name", default="", help="the certificate's common name (who holds it; shown as the actor)")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p.set_defaults(func=_config_new)


def _insecure_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--insecure", action="store_true",
                   help="maintenance mode: no client certificate; trust the node's certificate as shown (its "
                        "fingerprint is printed)")
    p.add_argument("--cert-fingerprint", metavar="SHA256",
                   help="with --insecure: accept only a node certificate with this SHA-256 fingerprint")


def _quorum_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="even if it leaves etcd without quorum")


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="follow the node's events until the outcome (across its reboot); progress on stderr")
    p.add_argument("--timeout", type=parse_duration, default=parse_duration(WAIT_TIMEOUT), metavar="DURATION",
                   help=f"with --wait: give up after this long (default {WAIT_TIMEOUT})")
    add_output_flag(p)


# -- reads -----------------------------------------------------------------------------------------------
def _version(args: argparse.Namespace) -> int:
    results = _on_nodes(args, lambda c: c.version())
    mine = client_version()
    if args.output != "json":
        print(f"client: gravenctl {mine}")
    return _emit(args, results, ("node", "version", "slot", "image_digest", "os_image", "kernel", "provisioner",
                                 "boot_id"),
                 lambda n, r: {**r, "node": n, "image_digest": (r["image_digest"] or "")[:16] or None,
                               "slot": r["slot"] or None, "os_image": r.get("os_image") or None,
                               "kernel": r.get("kernel") or None, "provisioner": r.get("provisioner") or None},
                 lambda n, r: {"node": n, "client": {"version": mine}, "server": r})


def _sequence_cell(seq: SequenceInfo | None) -> str | None:
    if not seq:
        return None
    roles = ",".join(seq["actor"]["roles"])
    return f"{seq['name']} by {seq['actor']['id']}" + (f"[{roles}]" if roles else "")


def _status(args: argparse.Namespace) -> int:
    results = _on_nodes(args, lambda c: c.status())

    def row(n: str, r: StatusInfo) -> dict[str, object]:
        fb = r["last_fallback"]
        return {"node": n, "stage": r["stage"], "ready": "yes" if r["ready"] else "no", "slot": r["slot"] or None,
                "version": r["version"], "sequence": _sequence_cell(r["sequence"]),
                "last_fallback": f"{fb['from_slot']}->{fb['to_slot']}: {fb['reason']}" if fb else None,
                "drift": _drift_cell(r["details"])}

    return _emit(args, results, ("node", "stage", "ready", "slot", "version", "sequence", "last_fallback", "drift"),
                 row, lambda n, r: {**r, "node": n, "drift": r["details"].get("drift")})


def _drift_cell(details: dict[str, object]) -> str | None:
    """``none``, or how many differences and the first of them; ``-`` where drift is not read (the sandbox)."""
    if details.get("drift_error"):
        return f"unknown: {details['drift_error']}"
    drift = details.get("drift")
    if drift is None:
        return None
    if not drift:
        return "none"
    if not isinstance(drift, list):
        return _cell(drift)

    def one(d: object) -> str:
        if not isinstance(d, dict):
            return _cell(d)
        where = f"{d['interface']} " if d.get("interface") else ""
        want, have = (("-" if v is None else _cell(v)) for v in (d.get("want"), d.get("have")))
        return f"{where}{d['kind']}: want {want}, have {have}"

    return f"{len(drift)}: {one(drift[0])}" + (" ..." if len(drift) > 1 else "")


def _get_network(args: argparse.Namespace) -> int:
    rows, failed = _node_rows(args, _on_nodes(args, lambda c: c.network(args.what)))
    if args.output == "json":
        print_json(rows)
        return 1 if failed else 0
    columns = ["node", *NETWORK_COLUMNS[args.what]]
    if any(row.get("planned") for row in rows):
        columns = ["node", "interface", *{"links": ["mtu"], "addresses": ["address"],
                                          "routes": ["network", "gateway", "metric"]}[args.what], "planned"]
    if failed:
        columns.append("error")
    for row in rows:
        for key in ("up", "graven", "planned"):
            if isinstance(row.get(key), bool):
                row[key] = "yes" if row[key] else "no"
    table(rows, columns)
    return 1 if failed else 0


def _get_config(args: argparse.Namespace) -> int:
    results = _on_nodes(args, lambda c: c.get_configuration())
    failed = False
    items: list[dict[str, object]] = []
    for node, r in results:
        if isinstance(r, GravenError):
            failed = True
            items.append({"node": node, "error": r.to_dict()})
            print_node_error(node, r)
            continue
        items.append({"node": node, "digest": r["digest"], "redacted": r["redacted"],
                      "config": yaml.safe_load(r["data"]) if r["data"] else None})
        if args.output == "yaml":
            if len(results) > 1:
                sys.stdout.write(f"---\n# node: {node}\n")
            sys.stdout.write(r["data"] if r["data"].endswith("\n") or not r["data"] else r["data"] + "\n")
            if r["redacted"]:
                sys.stderr.write(f"{node}: secrets are redacted (only os:admin sees them)\n")
    if args.output == "json":
        print_json(items[0] if len(items) == 1 else items)
    return 1 if failed else 0


# -- apply-config ----------------------------------------------------------------------------------------
def _read_file(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file", path=path) from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc.strerror}", path=path) from None


def _apply(args: argparse.Namespace) -> int:
    name = "stdin" if args.file == "-" else args.file
    data = _read_file(args.file)
    try:
        config.validate(data).unwrap(name)
        results = _on_nodes(args, lambda c: c.apply_configuration(
            data, mode=args.mode, dry_run=args.dry_run, try_timeout=args.try_timeout if args.mode == "try" else None))
    except InvalidConfig as exc:
        return _report_invalid(exc, name)
    for node, r in results:
        if not isinstance(r, GravenError):
            for w in r["warnings"]:
                sys.stderr.write(f"{node}: warning: {w}\n")
    if args.dry_run and args.output != "json":
        return _print_dry_run(results)
    return _emit(args, results, ("node", "mode", "digest", "seq", "reboot_required"),
                 lambda n, r: {**r, "node": n, "digest": r["digest"][:16], "reboot_required":
                               "yes" if r["reboot_required"] else "no"},
                 lambda n, r: {**r, "node": n})


def _print_dry_run(results: Sequence[tuple[str, Applied | GravenError]]) -> int:
    several = len(results) > 1
    rows: list[dict[str, object]] = []
    failed = False
    for node, r in results:
        if isinstance(r, GravenError):
            failed = True
            print_node_error(node, r)
            continue
        for c in r["diff"]:
            op = c.get("op", "?")
            rows.append({"node": node, "op": op, "path": c.get("path", ""),
                         "old": None if op == "add" or "old" not in c else _cell(c["old"]),
                         "new": None if op == "remove" or "new" not in c else _cell(c["new"])})
        sys.stderr.write(f"{node}: dry run: mode {r['mode']} would be used, "
                         f"{'a reboot is' if r['reboot_required'] else 'no reboot'} needed, "
                         f"{len(r['diff'])} change(s), nothing applied\n")
    if rows:
        table(rows, ("node", "op", "path", "old", "new") if several else ("op", "path", "old", "new"))
    elif not failed:
        print("no changes")
    return 1 if failed else 0


# -- lifecycle requests and --wait -----------------------------------------------------------------------
def _simple(method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        extra = {"force": True} if getattr(args, "force", False) else {}
        return _lifecycle(args, lambda client, progress: getattr(client, method)(**extra))
    return handler


def _reset(args: argparse.Namespace) -> int:
    labels = [w.strip().upper() for w in args.wipe.split(",") if w.strip()]
    bad = [w for w in labels if w not in WIPE_LABELS]
    if bad or not labels:
        raise InvalidRequest(f"--wipe {args.wipe!r}: labels must be among {', '.join(WIPE_LABELS)}", labels=bad)
    return _lifecycle(args, lambda client, progress: client.reset(
        wipe=labels, graceful=args.graceful, reboot=args.reboot, force=args.force))


def _upgrade(args: argparse.Namespace) -> int:
    if getattr(args, "rolling", False):
        return _rolling_upgrade(args)

    def request(client: GravenClient, progress: _Progress) -> Accepted:
        shown = [-1]

        def uploaded(sent: int, total: int) -> None:
            step = 100 if total == 0 else sent * 10 // total * 10
            if step != shown[0] and (step % 10 == 0):
                shown[0] = step
                progress.line(client.endpoint, f"upload {sent / 2**20:.1f}/{total / 2**20:.1f} MiB ({step}%)")

        return client.upgrade(args.image, stage=args.stage, progress=uploaded, force=args.force)

    return _lifecycle(args, request)


def _lifecycle(args: argparse.Namespace, request: Callable[[GravenClient, _Progress], Accepted]) -> int:
    nodes = targets(args)
    progress = _Progress(nodes)

    def one(client: GravenClient) -> tuple[Accepted, Outcome | None, float]:
        started = time.monotonic()
        accepted = request(client, progress)
        if not args.wait:
            return accepted, None, 0.0
        progress.line(client.endpoint, f"{accepted.sequence} accepted (request at seq {accepted.seq})")
        def say(text: str) -> None:
            progress.line(client.endpoint, text)

        outcome = wait_for(client, accepted, args.timeout, say, started)
        if outcome.ok and accepted.sequence == "reset" and getattr(args, "reboot", False):
            outcome = wait_back(client, started + args.timeout, say)
        return accepted, outcome, time.monotonic() - started

    results = _on_nodes(args, one)
    if not args.wait:
        return _emit(args, results, ("node", "sequence", "seq", "actor"),
                     lambda n, r: {**r[0].to_dict(), "node": n}, lambda n, r: r[0].to_dict())

    def as_json(n: str, r: tuple[Accepted, Outcome | None, float]) -> dict[str, object]:
        return {**r[0].to_dict(), **(r[1].to_dict() if r[1] else {}), "elapsed_s": round(r[2], 3)}

    code = _emit(args, results, ("node", "sequence", "outcome", "elapsed", "message"),
                 lambda n, r: {"node": n, "sequence": r[0].sequence, "outcome": "ok" if r[1] and r[1].ok else "FAILED",
                               "elapsed": f"{r[2]:.1f}s", "message": r[1].message if r[1] else ""}, as_json)
    return 1 if code or any(not (r[1] and r[1].ok) for _, r in results if not isinstance(r, GravenError)) else 0


# -- config new ------------------------------------------------------------------------------------------
def _config_new(args: argparse.Namespace) -> int:
    found = context(args)
    assert found is not None
    name, ctx = found
    roles = check_roles(args.roles.split(","))
    out = Path(args.file)
    if out.exists() and not args.force:
        raise InvalidRequest(f"{out} exists; not overwriting it (use --force to replace it)", path=str(out))
    node = single_target(args, "config new")
    with connect(args, node) as client:
        r = client.generate_client_configuration(roles, int(args.crt_ttl), name=args.name)
    new = Context(endpoints=list(ctx.endpoints) or [node], nodes=list(ctx.nodes), ca=r["ca"] or ctx.ca,
                  crt=r["crt"], key=r["key"])
    ClientConfig(context=name, contexts={name: new}).save(out)
    cert = new.certificate()
    until = f", valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}" if cert else ""
    print(f"wrote {out}: context {name}, roles {', '.join(new.roles() or roles)}{until}")
    return 0
