"""``gravenctl audit verify|export|prove|show|replay``: the auditor's commands, offline on a log or a bundle."""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from errors import InvalidRequest, TamperedLog
from events import CheckpointInfo, VerifyReport, check_proof, prove, replay, state_at, write_bundle

from ._output import add_output_flag, print_json, table
from ._remote import export_remote, with_remote_path
from ._source import load_ca, open_source, verify_path_since
from ._witness import add_witness_flags, register_witnessed, verify_with_witnesses, witness_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify, export, show and replay a node's signed event log",
                           description="Audit a signed event log: PATH is an LMDB log directory (or a node "
                                       "root) or an export bundle. Without PATH, the log of the node named by "
                                       "-e/-n is fetched (AuditExport) and used.")
    cmds = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    v = cmds.add_parser("verify", help="verify a log or bundle offline with the CA certificate alone")
    v.add_argument("path", nargs="?", help="LMDB log directory, node root, or export bundle (default: the node's)")
    v.add_argument("--ca", required=True, help="the machine CA certificate (PEM)")
    v.add_argument("--since-export", metavar="OLD", help="an earlier export: the log must extend its checkpoint")
    add_witness_flags(v)
    add_output_flag(v)
    v.set_defaults(func=with_remote_path(_verify))

    e = cmds.add_parser("export", help="write an audit bundle (tar) verifiable with the CA certificate")
    e.add_argument("path", nargs="?", help="LMDB log directory or node root (default: fetch from the node)")
    e.add_argument("-o", "--out", required=True, metavar="BUNDLE", help="bundle file to write")
    e.add_argument("--from", dest="start", type=int, default=0, metavar="SEQ", help="first seq (default 0)")
    e.add_argument("--to", dest="end", type=int, default=None, metavar="SEQ", help="last seq (default: the last)")
    e.set_defaults(func=_export)

    register_witnessed(cmds)

    p = cmds.add_parser("prove", help="a consistency proof: the log at one size is a prefix of it at another",
                        description="Print an RFC 6962 consistency proof from the tree of the first N events to the "
                                    "tree of the first M (default: the last checkpoint's size, a root the log key "
                                    "signed). Whoever holds a checkpoint of size N checks with it that the log "
                                    "still extends it: not truncated, not rewritten.")
    p.add_argument("path", nargs="?", help="LMDB log directory, node root or full export (default: the node's)")
    p.add_argument("--from-size", type=int, required=True, metavar="N", help="the earlier tree size")
    p.add_argument("--to-size", type=int, default=None, metavar="M", help="the later size (default: last checkpoint)")
    add_output_flag(p)
    p.set_defaults(func=with_remote_path(_prove))

    s = cmds.add_parser("show", help="a readable table of events: who changed what, when")
    s.add_argument("path", nargs="?", help="log directory or bundle (default: the node's)")
    s.add_argument("--kind", help="only kinds matching this glob (e.g. 'config.*')")
    s.add_argument("--actor", help="only actors whose id or roles match this glob")
    s.add_argument("--since", type=int, default=0, metavar="SEQ", help="from this seq on")
    s.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N matching events")
    add_output_flag(s)
    s.set_defaults(func=with_remote_path(_show))

    r = cmds.add_parser("replay", help="the node state folded from the log, up to a seq")
    r.add_argument("path", nargs="?", help="log directory or bundle (default: the node's)")
    r.add_argument("--at", type=int, default=None, metavar="SEQ", help="state right after this seq")
    add_output_flag(r)
    r.set_defaults(func=with_remote_path(_replay))


def _ts(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if ns else "-"


def report_dict(report: VerifyReport) -> dict[str, object]:
    last_cp = report.checkpoints[-1] if report.checkpoints else None
    return {
        "verdict": "ok",
        "origin": report.origin,
        "events": report.events,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "checkpoints": len(report.checkpoints),
        "last_checkpoint": {k: v for k, v in last_cp.items() if k != "note"} if last_cp else None,
        "sealed": report.sealed,
        "uncovered_tail": report.uncovered_tail,
        "keys": [{"key_id": k.key_id, "subject": k.subject, "since_seq": k.since_seq,
                  "not_after": k.not_after} for k in report.keys],
        "first_time": _ts(report.first_time_ns),
        "last_time": _ts(report.last_time_ns),
        "boots": report.boots,
        "head": report.head.hex(),
        "kinds": report.kinds,
    }


def _verify(args: argparse.Namespace) -> int:
    ca = load_ca(args.ca)
    try:
        witnessed = None
        if args.witness or args.witnessed:
            report, since_size, witnessed = verify_with_witnesses(args, ca)
        else:
            report, since_size = verify_path_since(args.path, ca, args.since_export)
    except TamperedLog as exc:
        if args.output == "json":
            found: dict[str, object] = {k: exc.details[k] for k in ("witness", "checkpoint") if k in exc.details}
            print_json({"verdict": "tampered", "seq": exc.seq, "reason": exc.reason, "message": exc.message, **found})
        else:
            where = f"at seq {exc.seq}" if exc.seq is not None else "in the bundle"
            print(f"TAMPERED {where} ({exc.reason}): {exc.message}")
        return 1
    d = report_dict(report)
    if args.since_export:
        d["since_export"] = {"path": args.since_export, "checkpoint_size": since_size}
    if witnessed is not None:
        d["witnessed"] = witnessed
    if args.output == "json":
        print_json(d)
        return 0
    cp = report.checkpoints[-1] if report.checkpoints else None
    rows = [
        ("verdict", "OK: every event verifies against the CA"),
        ("origin", report.origin),
        ("events", f"{report.events} (seq {report.first_seq}..{report.last_seq})"),
        ("checkpoints", f"{len(report.checkpoints)}" + (_cp_text(cp) if cp else "")),
        ("tail", "sealed" if report.sealed else f"{report.uncovered_tail} events after the last checkpoint (signed; "
                                                "their completeness is proven only by a later checkpoint)"),
        ("keys", "; ".join(f"{k.key_id} {k.subject} from seq {k.since_seq}" for k in report.keys) or "-"),
        ("time span", f"{_ts(report.first_time_ns)} .. {_ts(report.last_time_ns)}"),
        ("boots", str(report.boots)),
        ("head", report.head.hex()),
    ]
    if args.since_export:
        rows.append(("since export", f"extends the checkpoint of size {since_size} {args.since_export} saw"
                     if since_size is not None else f"{args.since_export} saw no checkpoint: nothing to compare"))
    if witnessed is not None:
        rows.append(("witnessed", witness_text(witnessed)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


def _cp_text(cp: CheckpointInfo) -> str:
    sealed = f", sealed: {cp['reason']}" if cp["sealed"] else ""
    return f" (last at seq {cp['seq']}, size {cp['size']}{sealed})"


def _export(args: argparse.Namespace) -> int:
    if args.path is None:
        return export_remote(args)
    source = open_source(args.path)
    if source.kind != "lmdb":
        raise InvalidRequest(f"{args.path} is already a bundle; export reads a log directory")
    out = Path(args.out)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as f:
        manifest = write_bundle(f, source.raw, start=args.start, end=args.end)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(out)
    print(f"exported seq {manifest.from_seq}..{manifest.to_seq} ({manifest.count} events) of "
          f"{manifest.origin} to {out}", file=sys.stderr)
    return 0


def _prove(args: argparse.Namespace) -> int:
    source = open_source(args.path)
    if source.manifest is not None and source.manifest.from_seq != 0:
        raise InvalidRequest(f"{args.path} is a partial export (from seq {source.manifest.from_seq}): a "
                             "consistency proof needs every event from seq 0")
    doc = prove(source.raw, args.from_size, args.to_size)
    assert check_proof(doc), "a proof this log made must verify"
    if args.output == "json":
        print_json(doc)
        return 0
    hashes = doc["proof"] if isinstance(doc["proof"], list) else []
    rows = [("origin", str(doc["origin"])), ("from", f"size {doc['from_size']}, root {doc['from_root']}"
                                        + (" (a checkpoint)" if doc["from_note"] else "")),
            ("to", f"size {doc['to_size']}, root {doc['to_root']}" + (" (a checkpoint)" if doc["to_note"] else "")),
            ("proof", f"{len(hashes)} hashes (RFC 6962 consistency proof, verify with RFC 9162 2.1.4.2)")]
    rows += [(f"  [{i}]", str(h)) for i, h in enumerate(hashes)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


def _match(value: str, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(value, pattern)


def _show(args: argparse.Namespace) -> int:
    rows = []
    for ev in open_source(args.path).events():
        if ev.seq < args.since or not _match(ev.kind, args.kind):
            continue
        if args.actor and not (_match(ev.actor.id, args.actor) or any(_match(r, args.actor) for r in ev.actor.roles)):
            continue
        rows.append(ev)
    if args.tail is not None:
        rows = rows[-args.tail:] if args.tail else []
    if args.output == "json":
        print_json([e.to_json() for e in rows])
        return 0
    table([{"seq": e.seq, "time": _ts(e.time_ns), "kind": e.kind, "actor": str(e.actor),
            "details": summarize(e.payload)} for e in rows], ["seq", "time", "kind", "actor", "details"])
    return 0


def summarize(payload: Mapping[str, object], limit: int = 90) -> str:
    """One line of the payload for a table: bytes shortened, long values cut."""
    parts = []
    for k, v in payload.items():
        if k in ("frontier", "note", "cert"):
            continue
        text = v.hex()[:12] if isinstance(v, bytes) else str(v)
        parts.append(f"{k}={text}")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _replay(args: argparse.Namespace) -> int:
    events = open_source(args.path).events()
    state = replay(events) if args.at is None else state_at(events, args.at)
    d = state.to_json()
    if args.output == "json":
        print_json(d)
        return 0
    for k in ("seq", "stage", "origin", "key_id", "config_digest", "staged_config_digest", "active_slot",
              "sealed", "checkpoints", "denied"):
        print(f"{k:22} {d[k] if d[k] is not None else '-'}")
    seq = state.sequence
    print(f"{'sequence':22} {seq.name + ' by ' + seq.actor if seq else '-'}")
    for slot, info in sorted(state.slots.items()):
        print(f"{'slot ' + slot:22} {info.version or '-'} good={info.good}")
    print(f"{'boots':22} {len(state.boots)}")
    if state.last_fallback:
        print(f"{'last fallback':22} {state.last_fallback}")
    return 0
