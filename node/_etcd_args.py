"""How a node runs etcd: where its certificates and data live, and the command line (pure, no I/O).

Client and peer TLS are both required (``--client-cert-auth``, ``--peer-client-cert-auth``); etcd checks a
peer's certificate against the address it connects from, so a node whose peer certificate does not name its
address is refused by the others. Debian's etcd 3.4 has no ``--tls-min-version`` (Talos sets TLS 1.3 on 3.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLIENT_PORT",
    "PEER_PORT",
    "EtcdFiles",
    "client_url",
    "etcd_argv",
    "initial_cluster",
    "peer_url",
]

CLIENT_PORT = 2379
PEER_PORT = 2380


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def client_url(address: str, port: int = CLIENT_PORT) -> str:
    return f"https://{_host(address)}:{port}"


def peer_url(address: str, port: int = PEER_PORT) -> str:
    return f"https://{_host(address)}:{port}"


@dataclass(frozen=True, slots=True)
class EtcdFiles:
    """A node's etcd folder: ``pki/`` (CA, server and peer certificates and keys) and ``data/``."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def server_crt(self) -> Path:
        return self.pki / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.pki / "server.key"

    @property
    def peer_crt(self) -> Path:
        return self.pki / "peer.crt"

    @property
    def peer_key(self) -> Path:
        return self.pki / "peer.key"


def initial_cluster(peers: Mapping[str, Sequence[str]]) -> str:
    """``--initial-cluster``: ``name=url,...`` for each member's peer URLs (etcd's own format)."""
    return ",".join(f"{name}={url}" for name, urls in peers.items() for url in urls)


def etcd_argv(
    binary: str, *, name: str, files: EtcdFiles, address: str, cluster: Mapping[str, Sequence[str]],
    state: str = "new", client_port: int = CLIENT_PORT, peer_port: int = PEER_PORT, token: str = "graven",
) -> list[str]:
    """The etcd command line of member ``name`` advertising ``address``; ``cluster`` maps each member of the
    initial cluster (this one included) to its peer URLs; ``state`` is ``new`` (bootstrap) or ``existing``
    (a learner joining)."""
    if state not in ("new", "existing"):
        raise ValueError(f"initial cluster state must be new or existing, not {state!r}")
    listen = list(dict.fromkeys([client_url(address, client_port), client_url("127.0.0.1", client_port)]))
    return [
        binary,
        f"--name={name}",
        f"--data-dir={files.data}",
        f"--listen-client-urls={','.join(listen)}",
        f"--advertise-client-urls={client_url(address, client_port)}",
        f"--listen-peer-urls={peer_url(address, peer_port)}",
        f"--initial-advertise-peer-urls={peer_url(address, peer_port)}",
        f"--initial-cluster={initial_cluster(cluster)}",
        f"--initial-cluster-state={state}",
        f"--initial-cluster-token={token}",
        f"--trusted-ca-file={files.ca}",
        f"--cert-file={files.server_crt}",
        f"--key-file={files.server_key}",
        "--client-cert-auth=true",
        f"--peer-trusted-ca-file={files.ca}",
        f"--peer-cert-file={files.peer_crt}",
        f"--peer-key-file={files.peer_key}",
        "--peer-client-cert-auth=true",
        "--experimental-initial-corrupt-check=true",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
