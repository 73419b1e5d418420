"""The machine config schema: frozen msgspec Structs, Talos-shaped YAML names.

A string field names its value check in ``Meta(extra={"check": ...})`` (see ``_checks``); a field marked
``Meta(extra={"secret": True})`` never appears in clear in a diff, an event, a repr or a redacted config.
Sequences are tuples so that a config is an immutable value.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec

from ._checks import decode_pem, ed25519_public_raw

__all__ = [
    "CA",
    "Audit",
    "Cluster",
    "Etcd",
    "Install",
    "Interface",
    "Machine",
    "MachineConfig",
    "Network",
    "Route",
    "secret_digest",
]


def _str(check: str, description: str, **schema: object) -> msgspec.Meta:
    return msgspec.Meta(extra={"check": check}, description=description, extra_json_schema=schema or None)


PemCertificate = Annotated[str, _str("pem-cert", "PEM certificate, or base64 of the PEM text (as Talos writes it).")]
PemPrivateKey = Annotated[
    str,
    msgspec.Meta(
        extra={"check": "pem-key", "secret": True},
        description="PEM private key, or base64 of the PEM text. Secret: only its digest is ever shown.",
        extra_json_schema={"writeOnly": True},
    ),
]
Ed25519Key = Annotated[
    str, _str("ed25519", "Ed25519 public key: PEM (PUBLIC KEY), base64 of that PEM, or base64 of the 32 raw bytes.")
]
IPAddress = Annotated[str, _str("ip", "IPv4 or IPv6 address.", examples=["192.168.1.1", "fd00::1"])]
InterfaceAddress = Annotated[str, _str("cidr", "Address with prefix length.", examples=["10.0.0.2/24"])]
NetworkCIDR = Annotated[str, _str("network", "Destination network.", examples=["0.0.0.0/0", "10.1.0.0/16"])]
Hostname = Annotated[str, _str("hostname", "RFC 1123 host name.")]
SubjectAltName = Annotated[str, _str("san", "IP address or DNS name for the API certificate.")]
Endpoint = Annotated[str, _str("endpoint", "https://HOST[:PORT] or HOST[:PORT].", examples=["https://10.0.0.2:50000"])]
ClusterName = Annotated[str, _str("cluster-name", "Cluster name.")]
InterfaceName = Annotated[str, _str("ifname", "Link name.", examples=["eth0"])]
DiskPath = Annotated[str, _str(
    "disk", "The disk to install onto: a device, a link to one (/dev/disk/by-id/...) or a disk image file. It must "
    "be the disk the machine runs from (else the install is refused); a sandbox node, which has none, ignores it.",
    examples=["/dev/sda"])]
ImageRef = Annotated[str, _str("image", "Image to install: a path, URL or name:tag.")]
Sink = Annotated[str, _str("sink", "Directory (absolute path or file:///DIR) or http(s):// URL.")]
MTU = Annotated[int, msgspec.Meta(ge=68, le=65535, description="Link MTU in bytes.")]
Metric = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1, description="Route metric (lower wins).")]
MetricsPort = Annotated[int, msgspec.Meta(ge=1, le=65535, description="TCP port of the metrics endpoint.")]
CheckpointEvery = Annotated[
    int, msgspec.Meta(ge=1, le=1_000_000, description="Append a signed Merkle checkpoint every N events.")
]


def secret_digest(value: str | None) -> str | None:
    """What a secret shows instead of itself: ``sha256:`` and the hex digest of its text."""
    return None if value is None else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


_OPTS: dict[str, object] = {"frozen": True, "forbid_unknown_fields": True, "rename": "camel", "kw_only": True}


class CA(msgspec.Struct, **_OPTS):
    """The machine CA: it certifies the node's log key and its API certificates."""

    crt: PemCertificate
    key: PemPrivateKey | None = None

    def crt_pem(self) -> bytes:
        return decode_pem(self.crt)

    def key_pem(self) -> bytes | None:
        return None if self.key is None else decode_pem(self.key)

    def __repr__(self) -> str:
        return f"CA(crt={self.crt!r}, key={secret_digest(self.key)!r})"

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("crt", self.crt), ("key", secret_digest(self.key))]


class Install(msgspec.Struct, **_OPTS):
    """How the node installs itself, and which image-signing keys it trusts."""

    disk: DiskPath
    image: ImageRef | None = None
    wipe: bool = False
    trusted_keys: tuple[Ed25519Key, ...] = ()

    def trusted_public_keys(self) -> tuple[bytes, ...]:
        """The 32 raw bytes of each trusted Ed25519 key."""
        return tuple(ed25519_public_raw(k) for k in self.trusted_keys)


class Route(msgspec.Struct, **_OPTS):
    network: NetworkCIDR
    gateway: IPAddress | None = None
    metric: Metric | None = None


class Interface(msgspec.Struct, **_OPTS):
    interface: InterfaceName
    addresses: tuple[InterfaceAddress, ...] = ()
    routes: tuple[Route, ...] = ()
    mtu: MTU | None = None
    dhcp: bool = False


class Network(msgspec.Struct, **_OPTS):
    hostname: Hostname | None = None
    nameservers: tuple[IPAddress, ...] = ()
    interfaces: tuple[Interface, ...] = ()


class Audit(msgspec.Struct, **_OPTS):
    """The signed event log: checkpoint cadence, and where the sealed log is shipped before a reset."""

    checkpoint_every: CheckpointEvery = 1000
    sinks: tuple[Sink, ...] = ()


class Metrics(msgspec.Struct, **_OPTS):
    """Prometheus metrics, served over mutual TLS: a client certificate from the machine CA, any role, scrapes."""

    enabled: bool = False
    port: MetricsPort = 9101


class Machine(msgspec.Struct, **_OPTS):
    type: Literal["controlplane", "worker"]
    ca: CA
    cert_sans: tuple[SubjectAltName, ...] = msgspec.field(default=(), name="certSANs")
    install: Install | None = None
    network: Network = msgspec.field(default_factory=Network)
    audit: Audit = msgspec.field(default_factory=Audit)
    metrics: Metrics = msgspec.field(default_factory=Metrics)

    def trusted_image_keys(self) -> tuple[bytes, ...]:
        """The raw keys an image must be signed by (``install.trustedKeys``); none without an install section."""
        return self.install.trusted_public_keys() if self.install is not None else ()


class Etcd(msgspec.Struct, **_OPTS):
    """The cluster's etcd, run by controlplane nodes: its CA (ECDSA), from which each controlplane node issues its
    own server and peer certificates at boot; workers carry no etcd CA."""

    ca: CA
    endpoints: tuple[Endpoint, ...] = ()
    """Where a joining controlplane node finds etcd: the other controlplane nodes' addresses (HOST or HOST:PORT,
    port 2379 by default). Empty: the host of ``cluster.endpoint``."""


class Cluster(msgspec.Struct, **_OPTS):
    name: ClusterName
    endpoint: Endpoint
    etcd: Etcd | None = None


class MachineConfig(msgspec.Struct, **_OPTS):
    """A Graven machine config (one YAML document)."""

    version: Literal["v1alpha1"]
    machine: Machine
    cluster: Cluster
