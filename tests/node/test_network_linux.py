"""The netlink ``Network`` adapter (``node._network``) on a veth pair in a fresh network namespace (root only).

What it shows: a config's links, MTU, addresses and routes read back with pyroute2; a changed config changes
exactly the difference (what Graven did not add survives: a foreign address, a foreign route, the kernel's
own routes); a second apply is a no-op that says so; every change is an event with before and after; a change
the kernel refuses names the interface and the netlink error; hostname only in a UTS namespace of its own;
resolvers in the given file; the platform choice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netnskit import netns_add_problem

import config
from errors import GravenError, InvalidRequest, NotFound
from events import Kind
from node._network import RTPROT_GRAVEN, NetlinkNetwork, select_network
from node._ports import PlanNetwork
from provision._netns import exec_in

ROOT = Path(__file__).resolve().parents[2]


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and netlink changes)"
    return netns_add_problem()


PROBLEM = _problem()
pytestmark = [pytest.mark.root, pytest.mark.skipif(PROBLEM is not None, reason=f"netlink: {PROBLEM}")]

Iface, R = config.Interface, config.Route


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace holding one veth pair, t0 <-> t1 (the kernel here may lack the dummy driver)."""
    name = f"gvtest-{uuid.uuid4().hex[:10]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "t0", "type", "veth", "peer", "name", "t1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.append((kind, json.loads(json.dumps(payload))))

    def kinds(self) -> list[str]:
        return [k for k, _ in self]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self if k == kind]


def adapter(ns: str, events: Events, tmp: Path) -> NetlinkNetwork:
    return NetlinkNetwork(events, netns=ns, resolv_conf=tmp / "resolv.conf", record=tmp / "network.json",
                          own_uts=False)


def snapshot(ns: str) -> dict[str, Any]:
    """The namespace as pyroute2 reads it, independently of the adapter."""
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0, groups=0) as ipr:
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")}
        links = {m.get_attr("IFLA_IFNAME"): (bool(m["flags"] & 1), m.get_attr("IFLA_MTU")) for m in ipr.link("dump")}
        addrs = {(names[m["index"]], f"{m.get_attr('IFA_LOCAL') or m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}",
                  m.get_attr("IFA_PROTO") or 0) for m in ipr.addr("dump", family=socket.AF_INET)}
        routes = {(names.get(m.get_attr("RTA_OIF")), f"{m.get_attr('RTA_DST') or '0.0.0.0'}/{m['dst_len']}",
                   m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_PRIORITY") or 0, m["proto"])
                  for m in ipr.route("dump", family=socket.AF_INET) if m.get_attr("RTA_TABLE") == 254}
    return {"links": links, "addrs": addrs, "routes": routes}


CONFIG_1 = (Iface(interface="t0", addresses=("198.18.100.2/24", "198.18.101.2/24"),
              routes=(R(network="198.19.1.0/24", gateway="198.18.100.1", metric=50),), mtu=1400),)
CONFIG_2 = (Iface(interface="t0", addresses=("198.18.100.2/24", "198.18.102.2/24"),
              routes=(R(network="198.19.2.0/24", gateway="198.18.102.1", metric=60),), mtu=1450),)
G = RTPROT_GRAVEN


def test_apply_change_and_reapply(netns: str, tmp_path: Path) -> None:
    ip("-n", netns, "addr", "add", "198.18.100.9/24", "dev", "t0")  # the platform's address: not Graven's
    events = Events()
    net = adapter(netns, events, tmp_path)

    net.configure(CONFIG_1)
    s1 = snapshot(netns)
    assert s1["links"]["t0"] == (True, 1400)
    assert {("t0", "198.18.100.2/24", G), ("t0", "198.18.101.2/24", G), ("t0", "198.18.100.9/24", 0)} <= s1["addrs"]
    assert ("t0", "198.19.1.0/24", "198.18.100.1", 50, G) in s1["routes"]
    assert events.kinds() == [Kind.NETWORK_LINK, Kind.NETWORK_LINK, Kind.NETWORK_ADDRESS, Kind.NETWORK_ADDRESS,
                              Kind.NETWORK_ROUTE, Kind.NETWORK_APPLIED]
    assert events.of(Kind.NETWORK_LINK) == [
        {"interface": "t0", "change": "mtu", "before": {"up": False, "mtu": 1500}, "after": {"up": False, "mtu": 1400}},
        {"interface": "t0", "change": "up", "before": {"up": False, "mtu": 1400}, "after": {"up": True, "mtu": 1400}}]
    assert [(e["op"], e["before"], e["after"]) for e in events.of(Kind.NETWORK_ADDRESS)] == [
        ("add", None, "198.18.100.2/24"), ("add", None, "198.18.101.2/24")]
    assert events.of(Kind.NETWORK_ROUTE) == [{"interface": "t0", "op": "add", "before": None, "after": {
        "network": "198.19.1.0/24", "gateway": "198.18.100.1", "metric": 50}}]
    assert events.of(Kind.NETWORK_APPLIED)[0]["changes"] == 5
    assert net.drift(CONFIG_1) == []

    # somebody else's route on the same link: Graven never removes it
    ip("-n", netns, "route", "add", "198.19.200.0/24", "via", "198.18.100.1", "dev", "t0")
    before = snapshot(netns)
    events.clear()
    net.configure(CONFIG_2)
    after = snapshot(netns)
    assert after["links"]["t0"] == (True, 1450)
    assert before["addrs"] - after["addrs"] == {("t0", "198.18.101.2/24", G)}
    assert after["addrs"] - before["addrs"] == {("t0", "198.18.102.2/24", G)}
    # (proto 2: the kernel's own route for an address's subnet comes and goes with the address)
    assert before["routes"] - after["routes"] == {("t0", "198.19.1.0/24", "198.18.100.1", 50, G),
                                                  ("t0", "198.18.101.0/24", None, 0, 2)}
    assert after["routes"] - before["routes"] == {("t0", "198.19.2.0/24", "198.18.102.1", 60, G),
                                                  ("t0", "198.18.102.0/24", None, 0, 2)}
    assert ("t0", "198.19.200.0/24", "198.18.100.1", 0, 3) in after["routes"]  # proto boot: the foreign route
    assert [(k, p.get("op") or p.get("change"), p.get("before"), p.get("after")) for k, p in events][:5] == [
        (Kind.NETWORK_LINK, "mtu", {"up": True, "mtu": 1400}, {"up": True, "mtu": 1450}),
        (Kind.NETWORK_ROUTE, "remove", {"network": "198.19.1.0/24", "gateway": "198.18.100.1", "metric": 50}, None),
        (Kind.NETWORK_ADDRESS, "remove", "198.18.101.2/24", None),
        (Kind.NETWORK_ADDRESS, "add", None, "198.18.102.2/24"),
        (Kind.NETWORK_ROUTE, "add", None, {"network": "198.19.2.0/24", "gateway": "198.18.102.1", "metric": 60})]
    assert events[-1][0] == Kind.NETWORK_APPLIED and events[-1][1]["changes"] == 5

    # the same config again: nothing changes, and it says so
    events.clear()
    net.configure(CONFIG_2)
    assert snapshot(netns) == after
    assert events.kinds() == [Kind.NETWORK_APPLIED]
    assert events[0][1]["changes"] == 0 and events[0][1]["summary"].startswith("no change")

    # drift: an address Graven set disappears, a route it set is changed behind its back
    ip("-n", netns, "addr", "del", "198.18.102.2/24", "dev", "t0")
    drift = net.drift(CONFIG_2)
    assert drift == [{"interface": "t0", "kind": "address", "want": "198.18.102.2/24", "have": None}]
    net.configure(CONFIG_2)
    assert net.drift(CONFIG_2) == []


def test_record_survives_a_restart_and_undoes_everything(netns: str, tmp_path: Path) -> None:
    ip("-n", netns, "addr", "add", "198.18.100.9/24", "dev", "t0")
    ip("-n", netns, "link", "set", "t0", "up")  # up before Graven: it stays up
    with_t1 = (*CONFIG_1, Iface(interface="t1", mtu=1300))
    adapter(netns, Events(), tmp_path).configure(with_t1)
    assert snapshot(netns)["links"]["t1"] == (True, 1300)
    ip("-n", netns, "route", "add", "198.19.200.0/24", "via", "198.18.100.1", "dev", "t0")
    foreign = snapshot(netns)

    events = Events()  # a new agent process: what Graven changed comes from the record file (and the kernel)
    adapter(netns, events, tmp_path).configure(())
    s = snapshot(netns)
    assert s["links"] == {"lo": (False, 65536), "t0": (True, 1500), "t1": (False, 1500)}
    assert {a for a in s["addrs"] if a[2] == G} == set()
    assert ("t0", "198.18.100.9/24", 0) in s["addrs"]
    assert {r for r in s["routes"] if r[4] == G} == set()
    assert ("t0", "198.19.200.0/24", "198.18.100.1", 0, 3) in s["routes"]
    assert foreign["addrs"] - s["addrs"] == {("t0", "198.18.100.2/24", G), ("t0", "198.18.101.2/24", G)}
    link_events = [(p["interface"], p["change"], p["before"], p["after"]) for p in events.of(Kind.NETWORK_LINK)]
    assert ("t0", "mtu", {"up": True, "mtu": 1400}, {"up": True, "mtu": 1500}) in link_events
    assert ("t1", "mtu", {"up": True, "mtu": 1300}, {"up": True, "mtu": 1500}) in link_events
    assert ("t1", "down", {"up": True, "mtu": 1500}, {"up": False, "mtu": 1500}) in link_events
    assert json.loads((tmp_path / "network.json").read_text()) == {"addresses": [], "mtu": {}, "up": []}


def test_a_refused_change_names_the_interface_and_the_error(netns: str, tmp_path: Path) -> None:
    events = Events()
    net = adapter(netns, events, tmp_path)
    bad_route = (Iface(interface="t0", addresses=("198.18.100.2/24",),
                   routes=(R(network="198.19.9.0/24", gateway="203.0.113.1"),)),)
    with pytest.raises(InvalidRequest) as err:
        net.configure(bad_route)
    assert err.value.message.startswith("t0: add route 198.19.9.0/24 via 203.0.113.1: Network is unreachable")
    assert "ENETUNREACH" in err.value.message and err.value.details["interface"] == "t0"
    assert events.of(Kind.NETWORK_FAILED) == [{
        "interface": "t0", "op": "add route", "target": "198.19.9.0/24 via 203.0.113.1", "code": "INVALID_REQUEST",
        "errno": 101, "error": err.value.message}]
    assert ("t0", "198.18.100.2/24", G) in snapshot(netns)["addrs"]  # the rest was applied
    assert events[-1][1]["failed"] == 1

    events.clear()
    with pytest.raises(NotFound) as missing:
        net.configure((Iface(interface="nope0", addresses=("198.18.103.2/24",)),))
    assert missing.value.message == "nope0: no such link in this network namespace"
    assert events.of(Kind.NETWORK_FAILED)[0]["interface"] == "nope0"

    with pytest.raises(GravenError) as both:
        net.configure((*bad_route, Iface(interface="nope0")))
    assert both.value.message.startswith("2 network changes failed: ")
    assert [f["interface"] for f in both.value.details["failures"]] == ["nope0", "t0"]


def test_read_state_marks_what_graven_added(netns: str, tmp_path: Path) -> None:
    net = adapter(netns, Events(), tmp_path)
    net.configure(CONFIG_1)
    state = net.read_state()
    assert {"interface": "t0", "address": "198.18.100.2/24", "family": "inet", "scope": "global",
            "graven": True} in state["addresses"]
    link = next(li for li in state["links"] if li["interface"] == "t0")
    assert link["mtu"] == 1400 and link["up"] is True and link["kind"] == "veth"
    routes = {r["network"]: r for r in state["routes"]}
    assert routes["198.19.1.0/24"]["graven"] is True and routes["198.19.1.0/24"]["protocol"] == "graven"
    assert routes["198.18.100.0/24"]["graven"] is False and routes["198.18.100.0/24"]["protocol"] == "kernel"
    assert net.query("routes") == state["routes"]
    with pytest.raises(InvalidRequest):
        net.query("sockets")


def test_resolvers_and_hostname(netns: str, tmp_path: Path) -> None:
    events = Events()
    net = adapter(netns, events, tmp_path)
    host = socket.gethostname()
    net.set_resolvers(["198.18.0.53", "198.18.0.54"])
    net.set_resolvers(["198.18.0.53", "198.18.0.54"])
    assert (tmp_path / "resolv.conf").read_text().splitlines()[1:] == ["nameserver 198.18.0.53",
                                                                      "nameserver 198.18.0.54"]
    assert events.of(Kind.NETWORK_RESOLVERS) == [{"path": str(tmp_path / "resolv.conf"), "before": [],
                                                  "after": ["198.18.0.53", "198.18.0.54"]}]
    net.set_hostname("node-a")  # no UTS namespace of its own: recorded, the host keeps its name
    assert socket.gethostname() == host
    assert events.of(Kind.NETWORK_HOSTNAME)[0]["applied"] is False
    assert net.drift(config.Network(hostname="node-a", nameservers=("198.18.0.9",))) == [
        {"interface": None, "kind": "resolvers", "want": ["198.18.0.9"], "have": ["198.18.0.53", "198.18.0.54"]}]

    # in a UTS namespace of its own (what provision._netns.exec_in gives a node), the name is set
    script = ("import json, socket; from node._network import NetlinkNetwork; ev = []\n"
              "n = NetlinkNetwork(lambda k, p: ev.append(p))\n"
              "n.set_hostname('node-b'); n.set_hostname('node-b'); print(json.dumps([ev, socket.gethostname()]))")
    out = subprocess.run([*exec_in(netns), sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT).stdout
    ev, name = json.loads(out)
    assert name == "node-b" and ev == [{"before": host, "after": "node-b", "applied": True}]
    assert socket.gethostname() == host


def test_platform_choice(netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def emit(kind: str, payload: dict[str, Any]) -> None:
        pass

    monkeypatch.delenv("GRAVEN_PLATFORM", raising=False)
    auto = select_network(emit, resolv_conf=None)
    assert isinstance(auto.port, PlanNetwork) and "host's network namespace" in auto.reason  # pytest runs there
    forced = select_network(emit, resolv_conf=None, platform="netns")
    assert isinstance(forced.port, NetlinkNetwork) and forced.platform == "netns"
    forced.port.close()
    monkeypatch.setenv("GRAVEN_PLATFORM", "sandbox")
    assert select_network(emit, resolv_conf=None).platform == "sandbox"
    with pytest.raises(InvalidRequest):
        select_network(emit, resolv_conf=None, platform="docker")
    script = ("from node._network import select_network\n"
              "c = select_network(lambda k, p: None, resolv_conf=None); print(c.platform, '|', c.reason)")
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", script], check=True, text=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT), "GRAVEN_PLATFORM": ""},
                         cwd=ROOT).stdout
    assert out.startswith("netns | netns platform")


def test_a_link_left_by_the_config_stays_up_while_it_carries_foreign_things(netns: str, tmp_path: Path) -> None:
    events = Events()
    net = adapter(netns, events, tmp_path)
    net.configure((Iface(interface="t1", addresses=("198.18.110.2/24",)),))
    ip("-n", netns, "addr", "add", "198.18.111.9/24", "dev", "t1")  # somebody else's, on a link Graven brought up
    events.clear()
    net.configure(())
    assert snapshot(netns)["links"]["t1"] == (True, 1500)
    assert ("t1", "198.18.111.9/24", 0) in snapshot(netns)["addrs"]
    assert not events.of(Kind.NETWORK_LINK)
    assert events.of(Kind.NETWORK_APPLIED)[0]["notes"] == [
        "t1: left up (Graven brought it up) since it carries what Graven did not add: 198.18.111.9/24"]


def test_ipv6_from_the_benchmarking_range(netns: str, tmp_path: Path) -> None:
    events = Events()
    net = adapter(netns, events, tmp_path)
    v6 = (Iface(interface="t0", addresses=("2001:2::2/64",),
                routes=(R(network="2001:2:1::/64", gateway="2001:2::1", metric=0),)),)  # RFC 5180 range
    net.configure(v6)
    state = net.read_state()
    assert {"interface": "t0", "address": "2001:2::2/64", "family": "inet6", "scope": "global",
            "graven": True} in state["addresses"]
    assert any(r["network"] == "2001:2:1::/64" and r["graven"] and r["gateway"] == "2001:2::1"
               for r in state["routes"])
    events.clear()
    net.configure(v6)
    assert events.kinds() == [Kind.NETWORK_APPLIED] and events[0][1]["changes"] == 0
    assert net.drift(v6) == []
    net.configure(())
    assert not [a for a in net.read_state()["addresses"] if a["graven"]]
