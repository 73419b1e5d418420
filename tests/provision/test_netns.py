"""Local cluster networks (``provision._netns``, root only): three namespaces on one bridge talk over TCP on their
198.18.0.0/15 addresses, reach nothing else (no default route, no forwarding out of the bridge), and
``destroy`` leaves nothing behind (after a crash too; twice is fine)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from netnskit import netns_add_problem

from errors import InvalidRequest
from provision import _netns
from provision._netns import NodeNet

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, veth pairs)"
    problem = netns_add_problem()
    if problem:
        return problem
    bridge = f"gvp{uuid.uuid4().hex[:8]}"
    probe = subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a bridge: {probe.stderr.strip()}"
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    return None


PROBLEM = _problem()
pytestmark = [pytest.mark.root, pytest.mark.skipif(PROBLEM is not None, reason=f"local cluster network: {PROBLEM}")]

ECHO = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, peer = srv.accept()
    with conn:
        conn.sendall(conn.recv(64) + b" from " + sys.argv[1].encode())
"""

PROBE = """
import errno, json, socket, sys
targets, port, outside = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
answers = {}
for t in targets:
    with socket.create_connection((t, port), timeout=5) as s:
        s.sendall(b"hello")
        answers[t] = s.recv(64).decode()
try:
    socket.create_connection((outside, port), timeout=2).close()
    reached = "connected"
except OSError as exc:
    reached = errno.errorcode.get(exc.errno or 0, str(exc))
print(json.dumps({"answers": answers, "outside": reached}))
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def cluster() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        _netns.destroy(name, kill_timeout=1.0)


def host_address() -> str:
    """An address of this host outside the cluster networks (what a node must not reach)."""
    for link in json.loads(ip("-j", "-4", "addr", "show")):
        for a in link.get("addr_info", []):
            if a["local"] != "127.0.0.1" and not a["local"].startswith("198.1"):
                return str(a["local"])
    return "192.0.2.1"


def test_three_nodes_talk_to_each_other_and_to_nothing_else(cluster: str) -> None:
    nodes = _netns.create(cluster, 3)
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    bench = _netns.BENCHMARK_RANGE
    for n in nodes:
        addr = ipaddress.ip_address(n.address)
        assert addr in bench and not any(addr in ipaddress.ip_network(p) for p in PRIVATE)
        assert len(n.bridge) <= 15 and len(n.host_veth) <= 15
        assert n.bridge_address == nodes[0].bridge_address and ipaddress.ip_address(n.bridge_address) in bench
        # loopback up, eth0 with its address, no default route, no forwarding
        links = {li["ifname"]: li for li in json.loads(ip("-n", n.netns, "-j", "addr", "show"))}
        assert "UP" in links["lo"]["flags"] and "UP" in links["eth0"]["flags"]
        assert [a["local"] for a in links["eth0"]["addr_info"]] == [n.address]  # no IPv6 link-local either
        assert ip("-n", n.netns, "route", "show", "default").strip() == ""
        assert ip("-n", n.netns, "-6", "route", "show", "default").strip() == ""
        fwd = subprocess.run([*_netns.exec_in(n.netns, uts=False), "cat", "/proc/sys/net/ipv4/ip_forward"],
                             check=True, capture_output=True, text=True).stdout.strip()
        assert fwd == "0"
    for link in [nodes[0].bridge, *(n.host_veth for n in nodes)]:
        assert Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").read_text().strip() == "0"
        assert Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").read_text().strip() == "1"
    assert _netns.show(cluster) == nodes
    assert cluster in _netns.clusters()

    port = 7007
    servers = [subprocess.Popen([*n.exec_prefix(uts=False), sys.executable, "-c", ECHO, n.address, str(port)],
                                stdout=subprocess.PIPE, text=True, env=env()) for n in nodes]
    try:
        for s in servers:
            assert s.stdout is not None and s.stdout.readline().strip() == "listening"
        outside = host_address()
        for n in nodes:
            others = [o.address for o in nodes if o is not n]
            out = subprocess.run([*n.exec_prefix(), sys.executable, "-c", PROBE, json.dumps(others), str(port),
                                  outside], check=True, capture_output=True, text=True, env=env(), timeout=30).stdout
            result = json.loads(out)
            assert result["answers"] == {o: f"hello from {o}" for o in others}
            assert result["outside"] == "ENETUNREACH"  # no route off the cluster network
        # this host reaches every node through the bridge (where gravenctl runs)
        for n in nodes:
            with socket.create_connection((n.address, port), timeout=5) as conn:
                conn.sendall(b"hi")
                assert conn.recv(64) == f"hi from {n.address}".encode()
    finally:
        removed = _netns.destroy(cluster, kill_timeout=2.0)
        for s in servers:
            s.wait(timeout=10)  # destroy ended every process inside the namespaces
    assert sorted(removed["namespaces"]) == sorted(n.netns for n in nodes)
    assert sorted(removed["links"]) == sorted([nodes[0].bridge, *(n.host_veth for n in nodes)])
    assert sorted(int(p) for p in removed["processes"]) == sorted(s.pid for s in servers)
    assert_nothing_left(cluster, nodes)
    assert _netns.destroy(cluster) == {"namespaces": [], "links": [], "processes": []}


def assert_nothing_left(cluster: str, nodes: list[NodeNet]) -> None:
    namespaces = ip("netns", "list")
    links = ip("-o", "link", "show")
    bridge, prefix = _netns.link_names(cluster)
    assert f"graven.{cluster}." not in namespaces
    assert bridge not in links and prefix not in links
    assert all(n.address not in ip("-o", "addr", "show") for n in nodes)
    assert _netns.show(cluster) == [] and cluster not in _netns.clusters()


def test_destroy_cleans_up_after_a_crash(cluster: str) -> None:
    # what a create killed half-way leaves: a namespace, a veth named after the cluster (no alias yet), a bridge
    bridge, prefix = _netns.link_names(cluster)
    ns = _netns.netns_name(cluster, "node1")
    ip("netns", "add", ns)
    ip("link", "add", bridge, "type", "bridge")
    ip("link", "add", f"{prefix}1", "type", "veth", "peer", "name", "eth0", "netns", ns)
    sleeper = subprocess.Popen([*_netns.exec_in(ns), "sleep", "60"])
    time.sleep(0.2)
    removed = _netns.destroy(cluster, kill_timeout=2.0)
    assert sleeper.wait(timeout=10) != 0
    assert removed["namespaces"] == [ns] and sorted(removed["links"]) == sorted([bridge, f"{prefix}1"])
    assert_nothing_left(cluster, [])
    assert _netns.destroy(cluster)["links"] == []


def test_names_subnets_and_refusals(cluster: str) -> None:
    long = "a-very-long-cluster-name-for-testing"
    bridge, prefix = _netns.link_names(long)
    assert len(bridge) <= 15 and len(f"{prefix}253") <= 15
    assert _netns.link_names("cluster-1") != _netns.link_names("cluster-2")
    for bad in ("Upper", "dot.ted", "-x", "x" * 41, ""):
        with pytest.raises(InvalidRequest):
            _netns.link_names(bad)
    for subnet in ("10.0.0.0/24", "172.16.0.0/24", "192.168.1.0/24", "198.20.0.0/24", "fd00::/64"):
        with pytest.raises(InvalidRequest, match=r"198\.18\.0\.0/15"):
            _netns.create(cluster, 1, subnet=subnet)
    with pytest.raises(InvalidRequest):
        _netns.create(cluster, 2, names=["a", "a"])
    nodes = _netns.create(cluster, 2, names=["cp-1", "worker-1"], subnet="198.19.250.0/24")
    assert [(n.name, n.cidr, n.netns) for n in nodes] == [
        ("cp-1", "198.19.250.2/24", f"graven.{cluster}.cp-1"),
        ("worker-1", "198.19.250.3/24", f"graven.{cluster}.worker-1")]
    assert nodes[0].endpoint() == "198.19.250.2:50000"
    with pytest.raises(InvalidRequest, match="already has a network"):
        _netns.create(cluster, 1)
    # a second cluster gets another subnet of its own
    other = f"{cluster}b"
    try:
        more = _netns.create(other, 1)
        assert more[0].address.rsplit(".", 1)[0] != "198.19.250"
        assert [n.netns for n in _netns.show(cluster)] == [n.netns for n in nodes]  # prefixes do not mix
    finally:
        _netns.destroy(other)
    assert _netns.exec_in("graven.x.y") == ["ip", "netns", "exec", "graven.x.y", "unshare", "--uts", "--"]


def test_vm_namespaces_bridge_a_tap_to_the_veth(cluster: str) -> None:
    """A VM's namespace (Talos's way): eth0 without the node's address, bridged by br0 to tap0, where qemu puts
    the VM's NIC; the guest holds the address. ``show`` finds the tap; ``destroy`` removes it with the namespace."""
    nodes = _netns.create(cluster, 2, names=["cp-1", "worker-1"], vms=True)
    assert [n.tap for n in nodes] == ["tap0", "tap0"]
    for node in nodes:
        links = {link["ifname"]: link for link in json.loads(ip("-n", node.netns, "-j", "-d", "link", "show"))}
        assert links["tap0"]["linkinfo"]["info_kind"] == "tun" and links["tap0"].get("master") == "br0"
        assert links["eth0"].get("master") == "br0" and links["br0"]["linkinfo"]["info_kind"] == "bridge"
        assert all("UP" in links[n]["flags"] for n in ("eth0", "br0"))
        addrs = json.loads(ip("-n", node.netns, "-j", "addr", "show"))
        assert [a["local"] for link in addrs for a in link.get("addr_info", [])
                if a["family"] == "inet"] == ["127.0.0.1"]  # the node's address is the guest's, not the namespace's
    shown = [(n.name, n.tap, n.address) for n in _netns.show(cluster)]
    assert shown == [("cp-1", "tap0", ""), ("worker-1", "tap0", "")]
    _netns.destroy(cluster)
    assert_nothing_left(cluster, [])
