"""A sensible config for the local sandbox node (``gravenctl gen config``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

from ._checks import CHECKS, ed25519_public_raw
from ._schema import CA, Audit, Cluster, Etcd, Install, Machine, MachineConfig, Network

__all__ = ["default_config"]


def _text(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _b64(pem: bytes | str) -> str:
    return base64.b64encode(_text(pem).encode("ascii")).decode("ascii")


def _key(value: bytes | str) -> str:
    """A trusted key as one line: base64 of its 32 raw bytes (kept as given if it is not a key)."""
    try:
        return base64.b64encode(ed25519_public_raw(_text(value))).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return _text(value)


def _etcd(ca: tuple[bytes | str, bytes | str | None] | None, endpoints: Sequence[str]) -> Etcd | None:
    if ca is None:
        return None
    return Etcd(ca=CA(crt=_b64(ca[0]), key=None if ca[1] is None else _b64(ca[1])), endpoints=tuple(endpoints))


def default_config(
    name: str,
    endpoint: str,
    ca_crt_pem: bytes | str,
    ca_key_pem: bytes | str | None,
    trusted_keys: Sequence[bytes | str],
    *,
    machine_type: Literal["controlplane", "worker"] = "controlplane",
    hostname: str | None = None,
    install_disk: str = "/dev/sda",
    install_image: str | None = None,
    sinks: Sequence[str] = (),
    etcd_ca: tuple[bytes | str, bytes | str | None] | None = None,
    etcd_endpoints: Sequence[str] = (),
) -> MachineConfig:
    """A config for one sandbox node of cluster ``name`` reached at ``endpoint``.

    CA PEMs are stored base64-encoded as Talos does; ``trusted_keys`` (Ed25519 public keys, PEM or base64 of
    the raw bytes) are stored as base64 of the raw bytes, one line each. The endpoint's host is added to
    ``certSANs`` with ``localhost`` and ``127.0.0.1``. ``etcd_ca`` (certificate and key PEM) becomes
    ``cluster.etcd.ca``; a worker gets no etcd CA at all.
    The result is not validated here; ``validate(config)`` tells its warnings.
    """
    host = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""
    sans = tuple(dict.fromkeys(s for s in (host, "127.0.0.1", "localhost") if s))
    return MachineConfig(
        version="v1alpha1",
        machine=Machine(
            type=machine_type,
            ca=CA(crt=_b64(ca_crt_pem), key=None if ca_key_pem is None else _b64(ca_key_pem)),
            cert_sans=sans,
            install=Install(
                disk=install_disk,
                image=install_image,
                trusted_keys=tuple(_key(k) for k in trusted_keys),
            ),
            network=Network(hostname=hostname or (name if CHECKS["hostname"](name) is None else None)),
            audit=Audit(sinks=tuple(sinks)),
        ),
        cluster=Cluster(name=name, endpoint=endpoint,
                        etcd=_etcd(etcd_ca, etcd_endpoints) if machine_type == "controlplane" else None),
    )
