"""``cluster.json``: the record of a local cluster (its files, its network and its machines), written by ``create``
and read by ``show`` and ``destroy``, also after a crash.

The file is JSON with sorted keys; keys a reader does not know are ignored, and keys a file written by an older
gravenctl lacks take their defaults (a loopback cluster's file has no subnet, bridge or per-node namespace, one
written before the container machines has no provisioner). A malformed file is refused naming the file and the
field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import msgspec

from api import atomic_write
from errors import InvalidRequest, NotFound

__all__ = ["CLUSTER_FILE", "ClusterRecord", "NodeRecord", "read_cluster", "write_cluster"]

CLUSTER_FILE = "cluster.json"
MachineType = Literal["controlplane", "worker"]
Network = Literal["netns", "loopback"]


class NodeRecord(msgspec.Struct, kw_only=True):
    """One machine: where it lives, where its API answers, its supervisor's pid (None until it started)."""

    name: str
    root: str
    endpoint: str
    config: str
    log: str
    disk: str | None = None  # a block disk's file (a VM's raw disk image)
    pid: int | None = None
    # namespaced clusters only
    type: MachineType | None = None
    address: str | None = None
    netns: str | None = None
    host_veth: str | None = None
    tap: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        return out


class ClusterRecord(msgspec.Struct, kw_only=True):
    """The cluster: its secrets' files, its image, the client config it was merged into, its network, its nodes."""

    name: str
    created: str
    disk: str
    state_dir: str
    gravenconfig: str
    ca_cert: str
    ca_key: str
    image_key: str
    image_pubkey: str
    etcd_ca_cert: str | None = None
    etcd_ca_key: str | None = None
    image: str | None = None  # None until the image is built
    image_version: str | None = None
    client_config: str | None = None  # the client config the context was merged into, and the context's name
    context: str | None = None
    network: Network = "loopback"
    subnet: str | None = None
    bridge: str | None = None
    provisioner: str = "process"
    memory: str | None = None
    nodes: list[NodeRecord] = msgspec.field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The record as ``-o json`` prints it (the file's own shape)."""
        out: dict[str, object] = msgspec.to_builtins(self)
        return out


def read_cluster(path: Path) -> ClusterRecord:
    """The record in ``path``; NotFound when there is none, InvalidRequest naming the file (and the field) when it
    is unreadable or malformed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such cluster record", path=str(path)) from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: unreadable: {exc}", path=str(path)) from exc
    try:
        return msgspec.json.decode(raw, type=ClusterRecord)
    except msgspec.ValidationError as exc:  # msgspec names the field: "... - at `$.nodes[0].pid`"
        raise InvalidRequest(f"{path}: malformed cluster record: {exc}", path=str(path)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"{path}: unreadable, not JSON: {exc}", path=str(path)) from exc


def write_cluster(directory: Path, record: ClusterRecord) -> None:
    """``directory/cluster.json``, atomically (a reader sees the old record or the new one), private to the user."""
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write(directory / CLUSTER_FILE, text.encode(), 0o600)
