"""``gravenctl bootstrap`` and ``gravenctl etcd members|status|leave|forfeit-leadership|remove-member|snapshot``.

``bootstrap`` talks to one controlplane node and returns once etcd there is a healthy one-member cluster, or
fails at once with the node's reason (a worker, etcd already running, a data folder that is not empty, a node
not configured yet). ``etcd snapshot FILE`` streams the local member's snapshot into ``FILE.part``, checks the
SHA-256 trailer etcd ends it with, fsyncs and renames it to ``FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

from api import GravenClient
from api import machine_pb2 as pb
from errors import InvalidRequest

from ._output import add_output_flag, atomic_output, command, error_cell, print_json, table
from ._remote import connect, fanout, single_target, targets

__all__ = ["etcd_call", "etcd_recover", "etcd_snapshot", "register"]


def etcd_call(client: GravenClient, action: str, args: dict[str, object] | None = None, *,
              manage: bool = False, timeout: float | None = None) -> dict[str, object]:
    req = pb.EtcdRequest(action=action, args_json=json.dumps(args or {}))
    resp = client._unary("EtcdManage" if manage else "EtcdQuery", req, pb.EtcdResponse, timeout=timeout)
    return _object(resp.json)


def _object(text: str) -> dict[str, object]:
    out = json.loads(text) if text else {}
    return out if isinstance(out, dict) else {"reply": out}


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def etcd_snapshot(client: GravenClient, path: Path) -> tuple[int, str]:
    """Stream the node's etcd snapshot into ``path`` atomically; (size, sha256 of the database)."""
    from storage import SnapshotCheck

    check = SnapshotCheck()
    with atomic_output(path, ".part") as f:
        try:
            for chunk in client._stub.EtcdSnapshot(pb.EtcdRequest(action="snapshot"), timeout=600):
                f.write(chunk.data)
                check.update(chunk.data)
        except grpc.RpcError as exc:
            raise client._error(exc, "EtcdSnapshot") from exc
        digest = check.verify()
    return check.size, digest


def etcd_recover(client: GravenClient, snapshot: Path) -> dict[str, object]:
    """Bootstrap the node's etcd from ``snapshot``, streamed in 1 MiB chunks."""
    try:
        f = snapshot.open("rb")
    except OSError as exc:
        raise InvalidRequest(f"{snapshot}: cannot read the snapshot: {exc.strerror}", path=str(snapshot)) from None

    def chunks() -> Iterator[pb.Chunk]:
        with f:
            while data := f.read(1 << 20):
                yield pb.Chunk(data=data)

    try:
        resp = client._stub.EtcdRecover(chunks(), timeout=180)
    except grpc.RpcError as exc:
        raise client._error(exc, "EtcdRecover") from exc
    return _object(resp.json)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bootstrap", help="create the etcd cluster on one controlplane node",
        description="Make etcd on the target controlplane node a new one-member cluster; the other controlplane "
                    "nodes then join it on their own as learners and are promoted. Refused at once, with the "
                    "reason, when the node is a worker, is not configured yet, already runs etcd or has etcd data.")
    p.add_argument("--recover-from", metavar="SNAPSHOT", type=Path,
                   help="restore this snapshot (as `gravenctl etcd snapshot` or etcdctl wrote it) first")
    add_output_flag(p)
    p.set_defaults(func=_bootstrap)

    etcd = subparsers.add_parser("etcd", help="the etcd cluster of the controlplane nodes",
                                 description="Inspect and manage etcd on controlplane nodes.")
    cmds = etcd.add_subparsers(dest="etcd_command", metavar="COMMAND", required=True)
    command(cmds, "members", _members, "the cluster's members (as the target node sees them)",
            "The etcd members: id, name, learner or voting, peer and client URLs.")
    command(cmds, "status", _status, "each target node's etcd service and member status",
            "Per node: the etcd service's state and health, and its member's status (leader, raft term and index, "
            "database size).")
    command(cmds, "leave", _manage, "remove the target node's member from the cluster",
            "The node removes its own member (retrying while the cluster is briefly unhealthy), stops etcd and "
            "empties its data folder. Refused for the last voting member.", action="leave")
    command(cmds, "forfeit-leadership", _manage, "hand the leadership to another voting member",
            "When the target node's member leads, it hands leadership to another voting member.",
            action="forfeit-leadership")
    p = command(cmds, "remove-member", _manage, "remove another (broken) member by its id",
                "Remove a member by id (hexadecimal, as `etcd members` shows it), asked of the target node. For "
                "a member that is gone; a live node should `etcd leave` itself.", action="remove-member")
    p.add_argument("member_id", metavar="ID", help="the member id (hex)")
    p = command(cmds, "witness-forget", _manage,
                "make the target node's witness forget a log (after its node's reset)",
                "The target controlplane node's witness drops what it holds for ORIGIN (e.g. graven/cp2), so "
                "that it adopts that origin's next checkpoint on first use. A node reset with its log wiped starts "
                "a new log, which its witnesses refuse as a rollback until each is told so: run it on every "
                "controlplane node. Recorded (api.request, witness.forgotten).", action="witness-forget")
    p.add_argument("origin", metavar="ORIGIN", help="the log's origin, graven/<node name>")
    p = command(cmds, "snapshot", _snapshot, "save a snapshot of the target node's member",
                "Stream a snapshot of the node's etcd member into FILE (written as FILE.part, its SHA-256 "
                "trailer checked, then renamed).")
    p.add_argument("file", metavar="FILE", help="where to write the snapshot")


def _bootstrap(args: argparse.Namespace) -> int:
    node = single_target(args, "bootstrap")
    sys.stderr.write(f"{node}: bootstrapping etcd (waits until it is healthy)\n")
    with connect(args, node, timeout=60) as c:
        out = etcd_recover(c, args.recover_from) if args.recover_from else \
            etcd_call(c, "bootstrap", manage=True, timeout=60)
    if args.output == "json":
        print_json({"node": node, **out})
    else:
        table([{"node": node, **out}], ("node", "name", "member_id", "client_url",
                                         *(("recovered_from",) if "recovered_from" in out else ())))
    return 0


def _members(args: argparse.Namespace) -> int:
    node = single_target(args, "etcd members")
    with connect(args, node) as c:
        listed = etcd_call(c, "members").get("members")
    members = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    if args.output == "json":
        print_json({"node": node, "members": members})
        return 0
    for m in members:
        m["learner"] = "yes" if m["learner"] else "no"
    table(members, ("id", "name", "learner", "peer_urls", "client_urls"))
    return 0


def _status(args: argparse.Namespace) -> int:
    def one(node: str) -> dict[str, object]:
        with connect(args, node) as c:
            return etcd_call(c, "status")

    results = fanout(targets(args), one)
    if args.output == "json":
        print_json([{"node": n, **r} if isinstance(r, dict) else {"node": n, "error": r.to_dict()}
                    for n, r in results])
    else:
        rows: list[dict[str, object]] = []
        for n, r in results:
            if not isinstance(r, dict):
                rows.append({"node": n, "state": "error", "reason": error_cell(r)})
                continue
            svc, st = _dict(r.get("service")), _dict(r.get("status"))
            rows.append({"node": n, "state": svc.get("state"), "healthy": "yes" if svc.get("healthy") else "no",
                         "member_id": st.get("member_id", svc.get("member_id")), "leader": st.get("leader"),
                         "learner": None if not st else ("yes" if st["learner"] else "no"),
                         "raft_term": st.get("raft_term"), "raft_index": st.get("raft_index"),
                         "db_size": st.get("db_size"), "reason": svc.get("reason")})
        table(rows, ("node", "state", "healthy", "member_id", "leader", "learner", "raft_term", "raft_index",
                     "db_size", "reason"))
    return 1 if any(not isinstance(r, dict) for _, r in results) else 0


def _manage(args: argparse.Namespace) -> int:
    node = single_target(args, f"etcd {args.action}")
    extra = {"member_id": args.member_id} if args.action == "remove-member" else \
        {"origin": args.origin} if args.action == "witness-forget" else {}
    with connect(args, node, timeout=90) as c:
        out = etcd_call(c, args.action, extra, manage=True, timeout=90)
    if args.output == "json":
        print_json({"node": node, **out})
    else:
        table([{"node": node, **{k: v for k, v in out.items() if k != "members"}}],
              ["node", *[k for k in out if k != "members"]])
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    node = single_target(args, "etcd snapshot")
    path = Path(args.file)
    if path.is_dir():
        raise InvalidRequest(f"{path} is a folder; give a file name", path=str(path))
    with connect(args, node) as c:
        size, digest = etcd_snapshot(c, path)
    row = {"node": node, "file": str(path), "size": size, "sha256": digest}
    if args.output == "json":
        print_json(row)
    else:
        table([row], ("node", "file", "size", "sha256"))
    return 0
