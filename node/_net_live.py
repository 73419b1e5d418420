"""The netlink boundary: pyroute2's errors translated in one place (``_netlink``), and the kernel's links,
addresses and routes dumped as plain values."""

from __future__ import annotations

import contextlib
import errno as errno_mod
import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from errors import (
    GravenError,
    InvalidRequest,
    NotFound,
    OperationalError,
    PermissionDenied,
)

__all__ = ["RTPROT_GRAVEN"]

RTPROT_GRAVEN = 71  # the routing protocol number on what Graven adds (unused by iproute2's rt_protos)
MAIN_TABLE = 254
IFF_UP = 1
_FAMILY: dict[int, str] = {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6"}
_SCOPE = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_PROTO = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 16: "dhcp", 9: "ra",
          RTPROT_GRAVEN: "graven"}
_RTN = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
        7: "unreachable", 8: "prohibit"}


# -- the netlink boundary ------------------------------------------------------------------------------------
class _Failure(Exception):
    """One change the kernel refused (internal: ``configure`` collects them, then raises one ``GravenError``)."""

    def __init__(self, interface: str, op: str, target: str, error: GravenError) -> None:
        super().__init__(error.message)
        self.interface, self.op, self.target, self.error = interface, op, target, error

    def to_dict(self) -> dict[str, object]:
        return {"interface": self.interface, "op": self.op, "target": self.target, "error": self.error.message,
                "code": self.error.code.name, "errno": self.error.details.get("errno")}


def _translate(exc: BaseException, interface: str, what: str) -> GravenError:
    """A ``NetlinkError`` (or ``OSError``) as the error tree's leaf, naming the interface and the error."""
    code = int(getattr(exc, "code", 0) or getattr(exc, "errno", 0) or 0)
    text = os.strerror(code) if code > 0 else str(exc)
    name = errno_mod.errorcode.get(code, str(code))
    message = f"{interface}: {what}: {text} (netlink error {name})"
    details = {"interface": interface, "errno": code, "errno_name": name}
    if code in (errno_mod.ENODEV, errno_mod.ENOENT, errno_mod.ESRCH, errno_mod.EADDRNOTAVAIL):
        return NotFound(message, **details)
    if code in (errno_mod.EPERM, errno_mod.EACCES):
        return PermissionDenied(message, **details)
    if code in (errno_mod.EINVAL, errno_mod.ERANGE, errno_mod.ENETUNREACH, errno_mod.EHOSTUNREACH,
                errno_mod.EOPNOTSUPP, errno_mod.EAFNOSUPPORT, errno_mod.EEXIST):
        return InvalidRequest(message, **details)
    return OperationalError(message, **details)


@contextlib.contextmanager
def _netlink(interface: str, op: str, target: str) -> Iterator[None]:
    """The one place where pyroute2's errors become Graven's: raises ``_Failure`` naming what failed."""
    from pyroute2 import NetlinkError

    try:
        yield
    except (NetlinkError, OSError) as exc:
        raise _Failure(interface, op, target, _translate(exc, interface, f"{op} {target}".strip())) from exc


# -- live state as plain values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    up: bool
    mtu: int
    operstate: str
    mac: str | None
    kind: str | None

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "interface": self.name, "up": self.up, "mtu": self.mtu,
                "operstate": self.operstate, "mac": self.mac, "kind": self.kind}


@dataclass(frozen=True)
class _Addr:
    index: int
    ip: str
    prefixlen: int
    family: int
    scope: int
    proto: int

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True)
class _Route:
    family: int
    dst: str  # network/len
    gateway: str | None
    metric: int
    oif: int | None
    table: int
    proto: int
    scope: int
    type: int

    def plain(self) -> dict[str, object]:
        return {"network": self.dst, "gateway": self.gateway, "metric": self.metric}


@dataclass
class _Live:
    links: dict[str, _Link]
    addrs: list[_Addr]
    routes: list[_Route]

    def by_index(self) -> dict[int, str]:
        return {link.index: name for name, link in self.links.items()}


class _Netlink:
    """pyroute2's ``IPRoute`` (which has no types) behind typed calls: what is read comes back as the plain
    values above, and a change goes through ``link``, ``addr`` or ``route`` (with pyroute2's keyword arguments).
    Opened in ``netns`` (None: this namespace); close it when done."""

    def __init__(self, netns: str | None) -> None:
        from pyroute2 import IPRoute

        with _netlink(netns or "netns", "open netlink socket", netns or ""):
            self._ipr = IPRoute(netns=netns, flags=0, groups=0) if netns else IPRoute(groups=0)

    def close(self) -> None:
        self._ipr.close()

    def link(self, op: str, **spec: object) -> None:
        self._ipr.link(op, **spec)

    def addr(self, op: str, **spec: object) -> None:
        self._ipr.addr(op, **spec)

    def route(self, op: str, **spec: object) -> None:
        self._ipr.route(op, **spec)

    def dump(self) -> _Live:
        """The kernel's links, addresses and routes (both families), as plain values."""
        ipr = self._ipr
        links: dict[str, _Link] = {}
        for msg in ipr.link("dump"):
            name = msg.get_attr("IFLA_IFNAME")
            kind = None
            info = msg.get_attr("IFLA_LINKINFO")
            if info is not None:
                kind = info.get_attr("IFLA_INFO_KIND")
            links[name] = _Link(index=msg["index"], name=name, up=bool(msg["flags"] & IFF_UP),
                                mtu=int(msg.get_attr("IFLA_MTU") or 0), operstate=str(msg.get_attr("IFLA_OPERSTATE")),
                                mac=msg.get_attr("IFLA_ADDRESS"), kind=kind)
        addrs = []
        for msg in ipr.addr("dump"):
            ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if ip is None:
                continue
            addrs.append(_Addr(index=msg["index"], ip=str(ipaddress.ip_address(ip)), prefixlen=msg["prefixlen"],
                               family=msg["family"], scope=msg["scope"], proto=int(msg.get_attr("IFA_PROTO") or 0)))
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.route("dump", family=family):
                table = msg.get_attr("RTA_TABLE") or msg["table"]
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
                routes.append(_Route(family=family, dst=str(net), gateway=msg.get_attr("RTA_GATEWAY"),
                                     metric=int(msg.get_attr("RTA_PRIORITY") or 0), oif=msg.get_attr("RTA_OIF"),
                                     table=int(table), proto=int(msg["proto"]), scope=int(msg["scope"]),
                                     type=int(msg["type"])))
        return _Live(links, addrs, routes)
