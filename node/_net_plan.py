"""The pure side of the network: the wanted state from ``machine.network``, what Graven added and the kernel cannot
remember (``_Record``), and the sandbox's plan as the ``Network`` RPC's rows."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import config
from errors import (
    InvalidRequest,
)
from sequencer.ports import Network

from ._net_live import MAIN_TABLE, _Route

__all__ = ["Emit", "NodeNetwork", "PathSource", "plan_rows"]

Emit = Callable[[str, dict[str, object]], None]
PathSource = Path | Callable[[], Path | None] | None


class NodeNetwork(Network, Protocol):
    """The sequencer's ``Network`` port and what the agent reads back from it: the ``Network`` RPC's rows, and the
    drift from the config (None where the live network cannot be read: the sandbox)."""

    def rows(self, what: str, network: config.Network | None) -> list[dict[str, object]]: ...

    def live_drift(self, network: config.Network) -> list[dict[str, object]] | None: ...


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def plan_rows(plan: dict[str, object], what: str) -> list[dict[str, object]]:
    """The sandbox's answer to the ``Network`` RPC: the recorded plan (``PlanNetwork.state``) in the shape of the
    live rows, each marked ``planned`` (nothing was applied); no drift can be read there."""
    links = [i for i in _list(plan.get("links")) if isinstance(i, dict)]
    if what == "links":
        return [{"interface": i.get("interface"), "up": None, "mtu": i.get("mtu"), "planned": True} for i in links]
    if what == "addresses":
        return [{"interface": i.get("interface"), "address": a, "planned": True}
                for i in links for a in _list(i.get("addresses"))]
    if what == "routes":
        return [{"interface": i.get("interface"), "network": r.get("network"), "gateway": r.get("gateway"),
                 "metric": r.get("metric"), "planned": True} for i in links for r in _list(i.get("routes"))
                if isinstance(r, dict)]
    if what == "drift":
        return []
    raise InvalidRequest(f"network resource {what!r}: expected links, addresses or routes", what=what)


# -- the wanted state ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WantRoute:
    dst: str
    gateway: str | None
    metric: int | None
    family: int

    def plain(self) -> dict[str, object]:
        return {"network": self.dst, "gateway": self.gateway, "metric": self.metric}

    def matches(self, r: _Route, oif: int) -> bool:
        metric = self.metric
        if metric == 0 and self.family == socket.AF_INET6:
            metric = 1024  # the kernel's IPv6 default: it turns a metric of 0 into this
        return (r.table == MAIN_TABLE and r.oif == oif and r.dst == self.dst and r.gateway == self.gateway
                and (metric is None or r.metric == metric))


def _want_addresses(iface: config.Interface) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for a in iface.addresses:
        try:
            i = ipaddress.ip_interface(a)
        except ValueError as exc:
            raise InvalidRequest(f"{iface.interface}: address {a!r}: {exc}", interface=iface.interface) from exc
        out.append((str(i.ip), i.network.prefixlen, socket.AF_INET if i.version == 4 else socket.AF_INET6))
    return out


def _want_routes(iface: config.Interface) -> list[_WantRoute]:
    out = []
    for r in iface.routes:
        try:
            net = ipaddress.ip_network(r.network, strict=False)
            gw = str(ipaddress.ip_address(r.gateway)) if r.gateway else None
        except ValueError as exc:
            raise InvalidRequest(f"{iface.interface}: route {r.network}: {exc}", interface=iface.interface) from exc
        out.append(_WantRoute(str(net), gw, r.metric, socket.AF_INET if net.version == 4 else socket.AF_INET6))
    return out


# -- what Graven added and the kernel cannot remember --------------------------------------------------------
@dataclass
class _Record:
    mtu: dict[str, int] = field(default_factory=dict)  # link -> its MTU before Graven changed it
    up: list[str] = field(default_factory=list)  # links Graven brought up (they were down)
    addresses: list[list[str]] = field(default_factory=list)  # [link, cidr] Graven added

    def to_json(self) -> dict[str, object]:
        return {"mtu": self.mtu, "up": sorted(self.up), "addresses": sorted(self.addresses)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> _Record:
        mtu = data.get("mtu")
        return cls(mtu={str(k): int(v) for k, v in mtu.items()} if isinstance(mtu, dict) else {},
                   up=[str(x) for x in _list(data.get("up"))],
                   addresses=[[str(p[0]), str(p[1])] for p in _list(data.get("addresses"))
                              if isinstance(p, list) and len(p) == 2])


def _resolve(source: PathSource) -> Path | None:
    if source is None or isinstance(source, Path):
        return source
    return source()


def _read_resolvers(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        text = path.read_text()
    except OSError:
        return []
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver ") and len(line.split()) > 1]
