"""``gravenctl audit witnessed`` and ``audit verify --witness``: a log checked against the checkpoints the
controlplane nodes' witnesses cosigned (``specs/event-log.md`` §12-13).

The witness records come from etcd through a controlplane node (``-n NODE``, the etcd query ``witnessed``) or,
for an auditor offline, from the file ``audit witnessed -o FILE`` wrote. Take the records first, then export,
then verify: a checkpoint cosigned after the export was taken is not in it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from errors import GravenError, InvalidRequest, NotFound
from events import (
    WITNESSED_FORMAT,
    Cosigned,
    VerifyReport,
    WitnessRecords,
    WitnessRow,
    parse_note,
    verify_against_witnesses,
    verify_since,
)

from ._output import print_json, table
from ._remote import connect, single_target
from ._source import open_source, verify_source

__all__ = ["add_witness_flags", "register_witnessed", "verify_with_witnesses"]


def add_witness_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness", action="store_true",
                   help="also check the log against every checkpoint a witness cosigned for its origin (read from "
                        "etcd through the node of -n, a controlplane node): a log cut or rewritten after one fails")
    p.add_argument("--witnessed", metavar="FILE", help="the witness records from this file (audit witnessed -o "
                                                       "FILE) instead of etcd; implies --witness")


def register_witnessed(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = cmds.add_parser("witnessed", help="the checkpoints published to etcd and the witnesses' cosignatures",
                        description="Read the witness records from etcd through a controlplane node (-n): each "
                                    "node's published checkpoint and each witness's cosigned one. -o FILE writes "
                                    "them (JSON) for an auditor who verifies offline with audit verify --witnessed "
                                    "FILE; -o json prints them.")
    w.add_argument("-o", "--output", default="table", metavar="table|json|FILE",
                   help="a table (default), JSON on stdout, or a file to write the records to")
    w.add_argument("--origin", help="only this origin's records (e.g. graven/cp1)")
    w.set_defaults(func=_witnessed)


def fetch_witnessed(args: argparse.Namespace) -> WitnessRecords:
    from ._etcd import etcd_call

    node = single_target(args, "reading the witness records")
    with connect(args, node) as client:
        return WitnessRecords.from_json(etcd_call(client, "witnessed"), f"the witness records {node} answered")


def _load_records(path: str) -> WitnessRecords:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise NotFound(f"cannot read the witness records {path}: {exc.strerror}", path=path) from None
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not JSON: {exc}", path=path) from None
    if not isinstance(doc, dict) or doc.get("format") != WITNESSED_FORMAT:
        raise InvalidRequest(f"{path} is not a {WITNESSED_FORMAT} file (write one with gravenctl audit witnessed "
                             "-o FILE)", path=path)
    return WitnessRecords.from_json(doc, path)


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _witnessed(args: argparse.Namespace) -> int:
    records = fetch_witnessed(args).only(args.origin)
    doc = records.to_json()
    if args.output == "json":
        print_json(doc)
        return 0
    if args.output != "table":
        out = Path(args.output)
        tmp = out.with_name(out.name + ".partial")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(out)
        print(f"wrote {len(records.published)} published and {len(records.cosigned)} cosigned checkpoints to {out}",
              file=sys.stderr)
        return 0
    published = {str(d.get("origin")): _size(d) for d in records.published}
    cosigned = sorted((Cosigned.from_json(d) for d in records.cosigned), key=lambda c: (c.origin, c.witness))
    rows: list[dict[str, object]] = [
        {"origin": c.origin, "witness": c.witness, "size": c.size, "cosigned": _when(c.timestamp),
         "published": published.get(c.origin, "-")} for c in cosigned]
    rows += [{"origin": o, "witness": "-", "size": "-", "cosigned": "-", "published": n}
             for o, n in sorted(published.items()) if not any(c.origin == o for c in cosigned)]
    table(rows, ["origin", "witness", "size", "cosigned", "published"])
    return 0


def _size(published: Mapping[str, object]) -> int | str:
    try:
        return parse_note(str(published.get("note", "")))[0].size
    except GravenError:
        return "?"


def verify_with_witnesses(args: argparse.Namespace, ca: x509.Certificate
                          ) -> tuple[VerifyReport, int | None, list[WitnessRow]]:
    """``audit verify PATH --witness``: the report, the ``--since-export`` size, and one row per cosigned
    checkpoint the log was checked against (``TamperedLog`` when it does not contain one)."""
    records = _load_records(args.witnessed) if args.witnessed else fetch_witnessed(args)
    report, seen = verify_source(open_source(args.path), ca)
    since = verify_since(verify_source(open_source(args.since_export), ca)[1], seen) if args.since_export else None
    try:
        entries = [Cosigned.from_json(d) for d in records.only(report.origin).cosigned]
    except GravenError as exc:
        raise InvalidRequest(f"the witness records are malformed: {exc.message}") from None
    if not entries:
        raise NotFound(f"no witness has cosigned a checkpoint of {report.origin}: nothing to check the log against "
                       "(is etcd bootstrapped? a node publishes its checkpoints within seconds of an event)",
                       origin=report.origin)
    return report, since, verify_against_witnesses(seen, report.origin, entries, ca)


def witness_text(rows: list[WitnessRow]) -> str:
    return "contains " + "; ".join(f"size {r['size']} cosigned by {r['witness']} at {_when(r['timestamp'])}"
                                   for r in rows)
