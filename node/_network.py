"""The ``Network`` port on netlink (pyroute2): ``machine.network`` made so inside the node's network namespace.

What Graven adds it marks: addresses and routes carry the protocol number ``RTPROT_GRAVEN`` (71, shown as
``proto 71`` by ``ip``), and a small record (in memory, and in a file when the agent gives one) keeps what the
kernel cannot hold: the MTU a link had before Graven changed it, the links Graven brought up, and the
addresses it added (for kernels older than 6.3, which drop an address's protocol). A new config removes what
the old one added and nothing else: the kernel's own routes, addresses the platform gave the node and routes
somebody else added survive. Applying the same config twice changes nothing and says so (``network.applied``
with ``changes: 0``).

Every change is an event (``network.link``, ``network.address``, ``network.route``, with ``before`` and
``after``); a change the kernel refuses is a ``network.failed`` event naming the interface and the netlink error,
and ``configure`` then raises one ``GravenError`` listing every failure (the phase's error policy decides).
``NetlinkError`` is translated in one place, ``_netlink``.

All netlink work runs on one worker thread per adapter: pyroute2's synchronous API runs its own event loop,
which may not run on a thread that already runs one (the agent's API handlers), and one thread keeps a status
read from interleaving with an apply.

``select_network`` (``_net_platform``) picks the platform; ``_net_live`` is the netlink boundary and the live
state as plain values; ``_net_plan`` the wanted state and the record, with no I/O.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import config
from errors import (
    InvalidRequest,
    NotFound,
    OperationalError,
    TaskTimeout,
)
from events import Kind
from storage import write_durably

from ._net_live import (
    _FAMILY,
    _PROTO,
    _RTN,
    _SCOPE,
    MAIN_TABLE,
    RTPROT_GRAVEN,
    _Failure,
    _Link,
    _Netlink,
    _netlink,
    _Route,
    _translate,
)
from ._net_plan import (
    Emit,
    PathSource,
    _read_resolvers,
    _Record,
    _resolve,
    _want_addresses,
    _want_routes,
    _WantRoute,
    plan_rows,
)
from ._net_platform import PLATFORM_ENV, NetworkChoice, in_own_namespace, select_network

__all__ = [
    "PLATFORM_ENV",
    "RTPROT_GRAVEN",
    "NetlinkNetwork",
    "NetworkChoice",
    "in_own_namespace",
    "plan_rows",
    "select_network",
]

T = TypeVar("T")
CALL_TIMEOUT = 30.0  # a netlink call that takes longer than this is stuck


class _Apply:
    """One ``configure``: the steps in the order the kernel needs them, each change an event, failures collected.

    Order: links (up, MTU) → routes no config wants → addresses no config wants → wanted addresses → wanted
    routes (their gateways need the addresses) → links that left the config and Graven had brought up go down.
    """

    def __init__(self, ipr: _Netlink, record: _Record, interfaces: Sequence[config.Interface], emit: Emit) -> None:
        self.ipr, self.record, self.emit = ipr, record, emit
        self.wanted = {i.interface: i for i in interfaces}
        self.want_addrs = {i.interface: _want_addresses(i) for i in interfaces}
        self.want_routes = {i.interface: _want_routes(i) for i in interfaces}
        self.live = ipr.dump()
        self.names = self.live.by_index()
        self.mtu = {name: link.mtu for name, link in self.live.links.items()}  # as this run leaves them
        self.changes = 0
        self.failures: list[_Failure] = []
        self.notes: list[str] = []

    def attempt(self, interface: str, op: str, target: str, fn: Callable[[], object]) -> bool:
        try:
            with _netlink(interface, op, target):
                fn()
        except _Failure as failure:
            self.fail(failure)
            return False
        return True

    def fail(self, failure: _Failure) -> None:
        self.failures.append(failure)
        self.emit(Kind.NETWORK_FAILED, failure.to_dict())

    def changed(self, kind: str, payload: dict[str, object]) -> None:
        self.changes += 1
        self.emit(kind, payload)

    def _link(self, name: str, change: str, before: dict[str, object], after: dict[str, object]) -> None:
        self.changed(Kind.NETWORK_LINK, {"interface": name, "change": change, "before": before, "after": after})

    # -- 1. links ----------------------------------------------------------------------------------------------
    def links(self) -> None:
        for name, iface in self.wanted.items():
            link = self.live.links.get(name)
            if link is None:
                self.fail(_Failure(name, "configure", "link", NotFound(
                    f"{name}: no such link in this network namespace", interface=name, errno=errno_mod.ENODEV)))
                continue
            if iface.dhcp:
                self.notes.append(f"{name}: dhcp is not supported on this platform; only static addresses are set")
            mtu = link.mtu
            if iface.mtu is not None and iface.mtu != link.mtu:
                if self.attempt(name, "set mtu", str(iface.mtu),
                                partial(self.ipr.link, "set", index=link.index, mtu=iface.mtu)):
                    self.record.mtu.setdefault(name, link.mtu)
                    self._link(name, "mtu", {"up": link.up, "mtu": link.mtu}, {"up": link.up, "mtu": iface.mtu})
                    mtu = self.mtu[name] = iface.mtu
            elif iface.mtu is None and name in self.record.mtu:
                mtu = self.restore_mtu(link)
            if not link.up and self.attempt(name, "set", "up",
                                            partial(self.ipr.link, "set", index=link.index, state="up")):
                if name not in self.record.up:
                    self.record.up.append(name)
                self._link(name, "up", {"up": False, "mtu": mtu}, {"up": True, "mtu": mtu})
        for name in sorted(set(self.record.mtu) - set(self.wanted)):
            if name in self.live.links:
                self.restore_mtu(self.live.links[name])
            else:
                self.record.mtu.pop(name, None)

    def restore_mtu(self, link: _Link) -> int:
        """Give the link back the MTU it had before Graven changed it; returns the MTU it has now."""
        old = self.record.mtu[link.name]
        if old == link.mtu:
            self.record.mtu.pop(link.name)
            return old
        if self.attempt(link.name, "restore mtu", str(old), partial(self.ipr.link, "set", index=link.index, mtu=old)):
            self.record.mtu.pop(link.name)
            self._link(link.name, "mtu", {"up": link.up, "mtu": link.mtu}, {"up": link.up, "mtu": old})
            self.mtu[link.name] = old
            return old
        return link.mtu

    # -- 2, 3. what Graven added and no config wants any more -------------------------------------------------
    def remove_routes(self) -> None:
        for r in self.live.routes:
            if r.proto != RTPROT_GRAVEN or r.table != MAIN_TABLE:
                continue
            name = self.names.get(r.oif or -1, "")
            link = self.live.links.get(name)
            if link is not None and any(w.matches(r, link.index) for w in self.want_routes.get(name, ())):
                continue
            if self.attempt(name or "?", "remove route", _route_text(r.plain()),
                            partial(self.ipr.route, "del", **_route_spec(r))):
                self.changed(Kind.NETWORK_ROUTE, {"interface": name, "op": "remove", "before": r.plain(),
                                                  "after": None})

    def remove_addresses(self) -> None:
        owned = {(self.names.get(a.index, ""), a.cidr) for a in self.live.addrs if a.proto == RTPROT_GRAVEN}
        owned |= {(n, c) for n, c in self.record.addresses}
        wanted = {(n, f"{ip}/{p}") for n, addrs in self.want_addrs.items() for ip, p, _ in addrs}
        live = {(self.names.get(a.index, ""), a.cidr) for a in self.live.addrs}
        for a in self.live.addrs:
            key = (self.names.get(a.index, ""), a.cidr)
            if key not in owned or key in wanted:
                continue
            if self.attempt(key[0], "remove address", a.cidr,
                            partial(self.ipr.addr, "del", index=a.index, address=a.ip, prefixlen=a.prefixlen)):
                live.discard(key)
                self.changed(Kind.NETWORK_ADDRESS, {"interface": key[0], "op": "remove", "before": a.cidr,
                                                    "after": None})
        self.record.addresses = [[n, c] for n, c in self.record.addresses if (n, c) in live and (n, c) in wanted]

    # -- 4, 5. what the config wants and the kernel lacks -----------------------------------------------------
    def add_addresses(self) -> None:
        for name, addrs in self.want_addrs.items():
            link = self.live.links.get(name)
            if link is None:
                continue
            have = {(a.ip, a.prefixlen) for a in self.live.addrs if a.index == link.index}
            for ip, plen, family in addrs:
                if (ip, plen) in have:
                    continue
                cidr = f"{ip}/{plen}"
                if self.attempt(name, "add address", cidr, partial(
                        self.ipr.addr, "add", index=link.index, address=ip, prefixlen=plen, family=family,
                        proto=RTPROT_GRAVEN)):
                    self.record.addresses.append([name, cidr])
                    self.changed(Kind.NETWORK_ADDRESS, {"interface": name, "op": "add", "before": None,
                                                        "after": cidr})

    def add_routes(self) -> None:
        current = self.ipr.dump().routes if self.changes else self.live.routes
        for name, routes in self.want_routes.items():
            link = self.live.links.get(name)
            if link is None:
                continue
            for w in routes:
                if any(w.matches(r, link.index) for r in current):
                    continue
                dst, plen = w.dst.split("/")
                spec: dict[str, object] = {"dst": dst, "dst_len": int(plen), "family": w.family, "oif": link.index,
                                        "table": MAIN_TABLE, "proto": RTPROT_GRAVEN}
                if w.gateway:
                    spec["gateway"] = w.gateway
                if w.metric is not None:
                    spec["priority"] = w.metric
                if self.attempt(name, "add route", _route_text(w.plain()), partial(self.ipr.route, "add", **spec)):
                    self.changed(Kind.NETWORK_ROUTE, {"interface": name, "op": "add", "before": None,
                                                      "after": w.plain()})

    # -- 6. links that left the config ------------------------------------------------------------------------
    def links_left(self) -> None:
        """A link Graven brought up goes down again when it leaves the config, unless something Graven did not
        add lives on it (a global address, a route): taking the link down would take that away too."""
        gone = sorted(set(self.record.up) - set(self.wanted))
        if not gone:
            return
        now = self.ipr.dump() if self.changes else self.live
        for name in gone:
            link = now.links.get(name)
            self.record.up.remove(name)
            if link is None or not link.up:
                continue
            foreign = [a.cidr for a in now.addrs if a.index == link.index and a.proto != RTPROT_GRAVEN
                       and a.scope != 253] + [r.dst for r in now.routes if r.oif == link.index
                                              and r.table == MAIN_TABLE and r.proto not in (2, RTPROT_GRAVEN)]
            if foreign:
                self.notes.append(f"{name}: left up (Graven brought it up) since it carries what Graven did not "
                                  f"add: {', '.join(foreign)}")
                continue
            if self.attempt(name, "set", "down", partial(self.ipr.link, "set", index=link.index, state="down")):
                self._link(name, "down", {"up": True, "mtu": link.mtu}, {"up": False, "mtu": link.mtu})


# -- the adapter -------------------------------------------------------------------------------------------------
class NetlinkNetwork:
    """The sequencer's ``Network`` port on netlink, in this process's network namespace or in ``netns``.

    ``resolv_conf``: where ``set_resolvers`` writes (the agent passes a file on STATE); ``record``: a file that
    keeps what Graven changed across the agent's restarts (EPHEMERAL); either may be a callable, resolved at each
    use (the disk may not be partitioned yet). ``netns``: a named namespace (``ip netns``) to work in instead of
    the current one. ``own_uts``: whether the hostname is this node's to set (default: this process is in a UTS
    namespace of its own).
    """

    platform = "netns"

    def __init__(self, emit: Emit, *, resolv_conf: PathSource = None, record: PathSource = None,
                 netns: str | None = None, own_uts: bool | None = None) -> None:
        self._emit = emit
        self._resolv_conf = resolv_conf
        self._record_src = record
        self._netns = netns
        self._own_uts = in_own_namespace("uts") if own_uts is None else own_uts
        self._record: _Record | None = None
        self._hostname: str | None = None  # what set_hostname last asked for (recorded when not applied)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graven-netlink")

    # -- plumbing ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=CALL_TIMEOUT)
        except TimeoutError:
            raise TaskTimeout(f"netlink: no answer within {CALL_TIMEOUT:.0f}s", netns=self._netns) from None

    @contextlib.contextmanager
    def _ipr(self) -> Iterator[_Netlink]:
        ipr = _Netlink(self._netns)
        try:
            yield ipr
        finally:
            ipr.close()

    def _load_record(self) -> _Record:
        if self._record is None:
            path = _resolve(self._record_src)
            data: dict[str, object] = {}
            if path is not None:
                with contextlib.suppress(OSError, ValueError):
                    data = json.loads(path.read_text())
            self._record = _Record.from_json(data if isinstance(data, dict) else {})
        return self._record

    def _save_record(self) -> None:
        path = _resolve(self._record_src)
        if path is not None and self._record is not None:
            write_durably(path, json.dumps(self._record.to_json(), sort_keys=True).encode())

    # -- the port ------------------------------------------------------------------------------------------------
    def configure(self, interfaces: Sequence[config.Interface]) -> None:
        """Make the links, addresses and routes what ``interfaces`` says; undo what an older config added."""
        self._call(self._configure, tuple(interfaces))

    def set_hostname(self, hostname: str) -> None:
        self._call(self._set_hostname, hostname)

    def set_resolvers(self, nameservers: Sequence[str]) -> None:
        self._call(self._set_resolvers, tuple(nameservers))

    # -- reads ------------------------------------------------------------------------------------------------
    def read_state(self) -> dict[str, list[dict[str, object]]]:
        """The live links, addresses and routes (main table) as plain dicts; ``graven`` marks what Graven added."""
        return self._call(self._read_state)

    def query(self, what: str) -> list[dict[str, object]]:
        """One of ``links``, ``addresses``, ``routes`` (the ``Network`` RPC), or ``drift`` against the last config."""
        if what == "drift":
            return self.drift(None)
        if what not in ("links", "addresses", "routes"):
            raise InvalidRequest(f"network resource {what!r}: expected links, addresses or routes", what=what)
        return self.read_state()[what]

    def rows(self, what: str, network: config.Network | None) -> list[dict[str, object]]:
        """The ``Network`` RPC's rows; ``drift`` against ``network`` (none without a config)."""
        if what == "drift":
            return self.drift(network) if network is not None else []
        return self.query(what)

    def live_drift(self, network: config.Network) -> list[dict[str, object]] | None:
        return self.drift(network)

    def drift(self, network: config.Network | Sequence[config.Interface] | None) -> list[dict[str, object]]:
        """What differs between ``network`` (``machine.network``, or its interfaces) and the live state, one
        dict per difference: ``{interface, kind, want, have}``; empty when they agree."""
        return self._call(self._drift, network)

    # -- on the worker thread -----------------------------------------------------------------------------------
    def _configure(self, interfaces: tuple[config.Interface, ...]) -> None:
        record = self._load_record()
        with self._ipr() as ipr:
            run = _Apply(ipr, record, interfaces, self._emit)
            run.links()
            run.remove_routes()
            run.remove_addresses()
            run.add_addresses()
            run.add_routes()
            run.links_left()
        self._save_record()
        counts = (len(run.wanted), sum(len(a) for a in run.want_addrs.values()),
                  sum(len(r) for r in run.want_routes.values()))
        summary = f"{run.changes} change(s)" if run.changes else "no change"
        if run.failures:
            summary += f", {len(run.failures)} failed"
        elif not run.changes:
            summary += f": {counts[0]} link(s), {counts[1]} address(es), {counts[2]} route(s) already as configured"
        self._emit(Kind.NETWORK_APPLIED, {"platform": self.platform, "changes": run.changes,
                                          "failed": len(run.failures), "summary": summary,
                                          "interfaces": sorted(run.wanted), "notes": run.notes})
        if run.failures:
            first = run.failures[0].error
            if len(run.failures) == 1:
                raise first
            text = "; ".join(f.error.message for f in run.failures)
            raise type(first)(f"{len(run.failures)} network changes failed: {text}",
                              failures=[f.to_dict() for f in run.failures])

    def _set_hostname(self, hostname: str) -> None:
        if self._own_uts:
            before = socket.gethostname()
            if before == hostname:
                return
            try:
                socket.sethostname(hostname)
            except OSError as exc:
                raise _translate(exc, "hostname", f"set hostname {hostname}") from exc
            self._hostname = hostname
            self._emit(Kind.NETWORK_HOSTNAME, {"before": before, "after": hostname, "applied": True})
            return
        if self._hostname == hostname:
            return
        recorded, self._hostname = self._hostname, hostname
        self._emit(Kind.NETWORK_HOSTNAME, {"before": recorded, "after": hostname, "applied": False,
                                           "why": "no UTS namespace of its own: the host's name is not the node's"})

    def _set_resolvers(self, nameservers: tuple[str, ...]) -> None:
        path = _resolve(self._resolv_conf)
        if path is None:
            return
        before = _read_resolvers(path)
        after = list(nameservers)
        if before == after and (path.exists() or not after):
            return
        try:
            if after:
                text = "# written by graven from machine.network.nameservers\n" + "".join(
                    f"nameserver {s}\n" for s in after)
                write_durably(path, text.encode())
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise OperationalError(f"resolv.conf {path}: {exc.strerror}", path=str(path)) from exc
        self._emit(Kind.NETWORK_RESOLVERS, {"path": str(path), "before": before, "after": after})

    def _read_state(self) -> dict[str, list[dict[str, object]]]:
        with self._ipr() as ipr:
            live = ipr.dump()
        record = self._load_record()
        names = live.by_index()
        recorded = {(a, b) for a, b in record.addresses}
        addresses = [{"interface": names.get(a.index, str(a.index)), "address": a.cidr,
                      "family": _FAMILY.get(a.family, str(a.family)), "scope": _SCOPE.get(a.scope, str(a.scope)),
                      "graven": a.proto == RTPROT_GRAVEN or (names.get(a.index), a.cidr) in recorded}
                     for a in live.addrs]
        routes: list[dict[str, object]]
        routes = [{"interface": names.get(r.oif, None) if r.oif else None, "network": r.dst, "gateway": r.gateway,
                   "metric": r.metric, "family": _FAMILY.get(r.family, str(r.family)),
                   "protocol": _PROTO.get(r.proto, str(r.proto)), "scope": _SCOPE.get(r.scope, str(r.scope)),
                   "type": _RTN.get(r.type, str(r.type)), "graven": r.proto == RTPROT_GRAVEN}
                  for r in live.routes if r.table == MAIN_TABLE]
        return {"links": [link.to_dict() for link in sorted(live.links.values(), key=lambda li: li.index)],
                "addresses": addresses, "routes": routes}

    def _drift(self, network: config.Network | Sequence[config.Interface] | None) -> list[dict[str, object]]:
        if network is None:
            return []
        interfaces = network.interfaces if isinstance(network, config.Network) else tuple(network)
        with self._ipr() as ipr:
            live = ipr.dump()
        record = self._load_record()
        names = live.by_index()
        out: list[dict[str, object]] = []
        wanted_addrs: set[tuple[str, str]] = set()
        wanted_routes: dict[str, list[_WantRoute]] = {}
        for iface in interfaces:
            name = iface.interface
            link = live.links.get(name)
            if link is None:
                out.append({"interface": name, "kind": "link", "want": "present", "have": "missing"})
                continue
            if not link.up:
                out.append({"interface": name, "kind": "link", "want": "up", "have": "down"})
            if iface.mtu is not None and iface.mtu != link.mtu:
                out.append({"interface": name, "kind": "mtu", "want": iface.mtu, "have": link.mtu})
            have = {(a.ip, a.prefixlen) for a in live.addrs if a.index == link.index}
            for ip, plen, _ in _want_addresses(iface):
                wanted_addrs.add((name, f"{ip}/{plen}"))
                if (ip, plen) not in have:
                    out.append({"interface": name, "kind": "address", "want": f"{ip}/{plen}", "have": None})
            wanted_routes[name] = _want_routes(iface)
            for w in wanted_routes[name]:
                if not any(w.matches(r, link.index) for r in live.routes):
                    out.append({"interface": name, "kind": "route", "want": w.plain(), "have": None})
        recorded = {(a, b) for a, b in record.addresses}
        for a in live.addrs:
            key = (names.get(a.index, ""), a.cidr)
            if (a.proto == RTPROT_GRAVEN or key in recorded) and key not in wanted_addrs:
                out.append({"interface": key[0], "kind": "address", "want": None, "have": a.cidr})
        for r in live.routes:
            if r.proto != RTPROT_GRAVEN or r.table != MAIN_TABLE:
                continue
            name = names.get(r.oif or -1, "")
            link = live.links.get(name)
            if link is None or not any(w.matches(r, link.index) for w in wanted_routes.get(name, ())):
                out.append({"interface": name, "kind": "route", "want": None, "have": r.plain()})
        if isinstance(network, config.Network):
            if network.hostname and self._own_uts and socket.gethostname() != network.hostname:
                out.append({"interface": None, "kind": "hostname", "want": network.hostname,
                            "have": socket.gethostname()})
            path = _resolve(self._resolv_conf)
            if path is not None and network.nameservers and _read_resolvers(path) != list(network.nameservers):
                out.append({"interface": None, "kind": "resolvers", "want": list(network.nameservers),
                            "have": _read_resolvers(path)})
        return out


def _route_spec(r: _Route) -> dict[str, object]:
    dst, plen = r.dst.split("/")
    spec: dict[str, object] = {"dst": dst, "dst_len": int(plen), "family": r.family, "table": r.table,
                            "priority": r.metric, "proto": r.proto}
    if r.oif is not None:
        spec["oif"] = r.oif
    if r.gateway:
        spec["gateway"] = r.gateway
    return spec


def _route_text(r: dict[str, object]) -> str:
    text = str(r["network"])
    if r.get("gateway"):
        text += f" via {r['gateway']}"
    if r.get("metric") is not None:
        text += f" metric {r['metric']}"
    return text
