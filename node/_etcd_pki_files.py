"""A controlplane node's etcd certificates: issued at boot from ``cluster.etcd.ca`` into ``EtcdFiles.pki``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import storage
from api import EtcdCA
from storage import write_durably

from ._etcd_args import EtcdFiles

if TYPE_CHECKING:  # etcd's stubs load with the first client (storage's lazy table), not at rest
    from storage import EtcdTLS

__all__ = ["issue_node_pki", "node_client_tls"]


def issue_node_pki(ca: EtcdCA, files: EtcdFiles, *, name: str, addresses: Sequence[str]) -> None:
    """Issue this node's server and peer certificates (its name and addresses) and write them with the CA.

    Issued afresh at every boot, as Talos does, so a changed address is in the next certificate."""
    files.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(files.pki, 0o700)
    server = ca.server_cert(name, addresses)
    peer = ca.peer_cert(name, addresses)
    write_durably(files.ca, ca.crt_pem, mode=0o644)
    write_durably(files.server_crt, server.crt, mode=0o644)
    write_durably(files.server_key, server.key, mode=0o600)
    write_durably(files.peer_crt, peer.crt, mode=0o644)
    write_durably(files.peer_key, peer.key, mode=0o600)


def node_client_tls(files: EtcdFiles) -> EtcdTLS:
    """The agent talks to etcd with the node's server certificate (it carries clientAuth too)."""
    return storage.EtcdTLS(files.ca.read_bytes(), files.server_crt.read_bytes(), files.server_key.read_bytes())
