"""Local clusters on real addresses (root only): one bridge in the host namespace, one network namespace per node
joined to it by a veth pair, addresses from the benchmarking range 198.18.0.0/15 (RFC 2544; never 10/8,
172.16/12 or 192.168/16).

Per cluster, one /24 of that range: the bridge holds ``.1`` (so this host, where ``gravenctl`` runs, reaches every
node), the nodes ``.2`` on. Nothing leaves the bridge: the nodes get no default route, the bridge and its ports
do not forward (``net.ipv4.conf.<link>.forwarding=0``, the per-interface switch, which leaves the host's other
links alone), no NAT rule is made, and IPv6 is off on the host side (no link-local chatter). Each namespace has
its loopback up and ``eth0`` with its address.

A virtual machine's namespace (``create(..., vms=True)``, Talos's way): its ``eth0`` keeps no address; a bridge
``br0`` inside the namespace joins it to a tap device ``tap0``, where qemu attaches the VM's virtio NIC, so the
guest itself holds the node's address on the cluster's bridge (the bootloader hands it over; the machine config
sets it).

Names come from the cluster name: namespaces ``graven.<cluster>.<node>`` (the dots cannot occur in either
name, so one cluster's namespaces never match another's), links ``gv<tag>`` (the bridge) and ``gv<tag>-<i>``
(the host ends of the veths), where ``<tag>`` is the name's first letters and a hash (link names have at most
15 characters); each link also carries the alias ``graven cluster=<cluster>``. ``destroy`` finds everything by
these names alone, so it cleans up after a crash, and running it twice is fine.

The plumbing is iproute2's ``ip`` (simple to read back by hand: ``ip netns list``, ``ip link``); ``exec_in``
gives the command prefix that starts a process inside a node's namespace (and its own UTS namespace, so the
node can set its hostname).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from errors import GravenError, InvalidRequest, NotFound, OperationalError, PermissionDenied

__all__ = [
    "BENCHMARK_RANGE",
    "NodeNet",
    "clusters",
    "create",
    "destroy",
    "exec_in",
    "link_names",
    "netns_name",
    "show",
]

BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544: for benchmarking, never routed
NS_PREFIX = "graven."
NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path("/run/graven-netns.lock")
NODE_IF = "eth0"
VM_BRIDGE, VM_TAP = "br0", "tap0"  # inside a VM's namespace
DEFAULT_PORT = 50000
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_PROC_SYS = Path("/proc/sys/net")


@dataclass(frozen=True)
class NodeNet:
    """One node's place on the cluster network."""

    cluster: str
    name: str
    netns: str  # ``ip netns`` name
    address: str  # the node's address on eth0, e.g. 198.18.7.2
    prefixlen: int
    interface: str  # inside the namespace (eth0)
    host_veth: str  # the veth's end in the host namespace, a port of the bridge
    bridge: str
    bridge_address: str  # the host's address on the cluster network
    tap: str | None = None  # a VM's namespace: the tap device the VM's NIC attaches to (its eth0 has no address)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    def endpoint(self, port: int = DEFAULT_PORT) -> str:
        """``ADDRESS:PORT``: where this node's API listens (``graven agent --listen``) and clients connect."""
        return f"{self.address}:{port}"

    def exec_prefix(self, *, uts: bool = True) -> list[str]:
        return exec_in(self.netns, uts=uts)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "cidr": self.cidr}


# -- names -------------------------------------------------------------------------------------------------------
def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise InvalidRequest(f"{what} {name!r}: use 1-40 lower-case letters, digits and '-' (not at either end)",
                             name=name)


def netns_name(cluster: str, node: str) -> str:
    _check_name("cluster name", cluster)
    _check_name("node name", node)
    return f"{NS_PREFIX}{cluster}.{node}"


def link_names(cluster: str) -> tuple[str, str]:
    """``(bridge, veth_prefix)``: the bridge's name and the prefix of the host-side veths (``prefix<i>``)."""
    _check_name("cluster name", cluster)
    tag = re.sub(r"[^a-z0-9]", "", cluster)[:5] + hashlib.sha256(cluster.encode()).hexdigest()[:4]
    bridge = f"gv{tag}"
    return bridge, f"{bridge}-"


def _alias(cluster: str, node: str | None = None) -> str:
    return f"graven cluster={cluster}" + (f" node={node}" if node else "")


def exec_in(netns: str, *, uts: bool = True) -> list[str]:
    """The argv prefix that runs a command inside ``netns`` (``ip netns exec NAME``), by default in a UTS
    namespace of its own too (``unshare --uts``), where the node may set its hostname. Both exec, so the pid
    ``subprocess.Popen`` reports is the command's own."""
    cmd = ["ip", "netns", "exec", netns]
    return [*cmd, "unshare", "--uts", "--"] if uts else cmd


# -- running ip ------------------------------------------------------------------------------------------------
def _require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("local cluster networks need root (network namespaces, a bridge, veth pairs)")


def _ip(*args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise NotFound("iproute2's ip command is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationalError(f"ip {' '.join(args)}: no answer within 30s") from exc
    if check and proc.returncode != 0:
        raise OperationalError(f"ip {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}",
                               command=["ip", *args])
    return proc.stdout


def _ip_json(*args: str) -> list[dict[str, object]]:
    out = _ip("-j", *args)
    return list(json.loads(out)) if out.strip() else []


def _sysctl(path: str, value: str) -> None:
    target = _PROC_SYS / path
    try:
        target.write_text(value)
        got = target.read_text().strip()
    except OSError as exc:
        raise OperationalError(f"sysctl net/{path}: {exc.strerror}", path=str(target)) from exc
    if got != value:
        raise OperationalError(f"sysctl net/{path}: wrote {value}, reads {got}", path=str(target))


def _isolate_host_link(name: str) -> None:
    """No routing into or out of the cluster network through this link, and no IPv6 on it."""
    _sysctl(f"ipv4/conf/{name}/forwarding", "0")
    if (_PROC_SYS / "ipv6" / "conf" / name).exists():
        _sysctl(f"ipv6/conf/{name}/disable_ipv6", "1")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One create or destroy at a time on this host (two creates would pick the same free subnet)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- what exists -----------------------------------------------------------------------------------------------
def _namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _cluster_namespaces(cluster: str) -> list[str]:
    prefix = f"{NS_PREFIX}{cluster}."
    return [ns for ns in _namespaces() if ns.startswith(prefix) and "." not in ns[len(prefix):]]


def _cluster_links(cluster: str) -> list[dict[str, object]]:
    bridge, prefix = link_names(cluster)
    mine = re.compile(rf"^{re.escape(prefix)}\d+$")
    alias = _alias(cluster)
    return [link for link in _ip_json("link", "show")
            if link.get("ifname") == bridge or mine.match(str(link.get("ifname", "")))
            or str(link.get("ifalias", "")) == alias or str(link.get("ifalias", "")).startswith(alias + " ")]


def clusters() -> list[str]:
    """Clusters that have namespaces on this host (also those a crash left behind)."""
    return sorted({ns[len(NS_PREFIX):].split(".", 1)[0] for ns in _namespaces()
                   if ns.startswith(NS_PREFIX) and ns.count(".") == 2})


def _inet(link: dict[str, object]) -> list[tuple[str, int]]:
    """The IPv4 addresses of one link in ``ip -json addr``: (address, prefix length)."""
    infos = link.get("addr_info")
    return [(str(a["local"]), int(a["prefixlen"])) for a in (infos if isinstance(infos, list) else [])
            if isinstance(a, dict) and a.get("family") == "inet"]


def _free_subnet(cluster: str) -> ipaddress.IPv4Network:
    """A /24 of the benchmarking range no address or route of this host touches; the search starts at a place
    the cluster name picks, so a cluster tends to get the same subnet each time."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for link in _ip_json("addr", "show"):
        for local, prefixlen in _inet(link):
            used.append(ipaddress.ip_network(f"{local}/{prefixlen}", strict=False))
    for r in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(r.get("dst", ""))
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    subnets = list(BENCHMARK_RANGE.subnets(new_prefix=24))
    start = int(hashlib.sha256(cluster.encode()).hexdigest(), 16) % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            return candidate
    raise OperationalError("no free /24 left in 198.18.0.0/15 on this host")


# -- create, show, destroy -----------------------------------------------------------------------------------
def create(cluster: str, n: int, *, names: Sequence[str] | None = None, subnet: str | None = None,
           vms: bool = False) -> list[NodeNet]:
    """Make the cluster's network: the bridge, and for each of ``n`` nodes a namespace joined by a veth pair.

    ``names``: the nodes' names (default ``node1``..``nodeN``); ``subnet``: a /24 (or larger) inside
    198.18.0.0/15 (default: a free /24); ``vms``: the nodes are virtual machines, each namespace gets a tap
    device bridged to its ``eth0`` instead of the node's address. A cluster whose network exists already is
    refused (``destroy`` it first); a failure part-way removes what was made.
    """
    _require_root()
    node_names = list(names) if names is not None else [f"node{i}" for i in range(1, n + 1)]
    if n < 1 or len(node_names) != n:
        raise InvalidRequest(f"a cluster needs at least one node, and one name per node (got {n} and "
                             f"{len(node_names)} names)", nodes=n)
    if len(set(node_names)) != n:
        raise InvalidRequest("node names must differ", names=node_names)
    namespaces = [netns_name(cluster, name) for name in node_names]
    bridge, veth_prefix = link_names(cluster)
    with _locked():
        if _cluster_namespaces(cluster) or _cluster_links(cluster):
            raise InvalidRequest(f"cluster {cluster!r} already has a network on this host; destroy it first",
                                 cluster=cluster)
        net = _parse_subnet(subnet) if subnet else _free_subnet(cluster)
        hosts = list(net.hosts())
        if len(hosts) < n + 1:
            raise InvalidRequest(f"subnet {net} has room for {len(hosts) - 1} nodes, not {n}", subnet=str(net))
        plen = net.prefixlen
        gateway = str(hosts[0])
        nodes = [NodeNet(cluster=cluster, name=name, netns=ns, address=str(hosts[i + 1]), prefixlen=plen,
                         interface=NODE_IF, host_veth=f"{veth_prefix}{i + 1}", bridge=bridge, bridge_address=gateway,
                         tap=VM_TAP if vms else None)
                 for i, (name, ns) in enumerate(zip(node_names, namespaces, strict=True))]
        try:
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0")
            _ip("link", "set", bridge, "alias", _alias(cluster))
            _isolate_host_link(bridge)
            _ip("addr", "add", f"{gateway}/{plen}", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for node in nodes:
                _plumb(node)
        except GravenError:
            _destroy(cluster, kill_timeout=1.0)
            raise
    return nodes


def _parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidRequest(f"subnet {subnet!r}: {exc}", subnet=subnet) from exc
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(BENCHMARK_RANGE):
        raise InvalidRequest(f"subnet {subnet}: cluster networks come from 198.18.0.0/15 (RFC 2544) only",
                             subnet=subnet)
    return net


def _plumb(node: NodeNet) -> None:
    _ip("netns", "add", node.netns)
    _ip("link", "add", node.host_veth, "type", "veth", "peer", "name", node.interface, "netns", node.netns)
    _ip("link", "set", node.host_veth, "alias", _alias(node.cluster, node.name))
    _isolate_host_link(node.host_veth)
    _ip("link", "set", node.host_veth, "master", node.bridge, "up")
    _ip("-n", node.netns, "link", "set", "lo", "up")
    _ip("-n", node.netns, "link", "set", node.interface, "addrgenmode", "none")
    if node.tap is None:
        _ip("-n", node.netns, "addr", "add", node.cidr, "dev", node.interface)
        _ip("-n", node.netns, "link", "set", node.interface, "up")
        return
    # a VM's namespace: eth0, br0 and tap0 carry frames only; the address is the guest's
    _ip("-n", node.netns, "link", "add", VM_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    _ip("-n", node.netns, "link", "set", VM_BRIDGE, "addrgenmode", "none")
    _ip("-n", node.netns, "tuntap", "add", "dev", node.tap, "mode", "tap")
    _ip("-n", node.netns, "link", "set", node.tap, "addrgenmode", "none")
    for link in (node.interface, node.tap):
        _ip("-n", node.netns, "link", "set", link, "master", VM_BRIDGE, "up")
    _ip("-n", node.netns, "link", "set", VM_BRIDGE, "up")


def show(cluster: str) -> list[NodeNet]:
    """The cluster's nodes as they exist now (read back from the namespaces and links; empty if none)."""
    bridge, _ = link_names(cluster)
    bridge_address = ""
    with contextlib.suppress(GravenError):
        for link in _ip_json("addr", "show", "dev", bridge):
            for local, _ in _inet(link):
                bridge_address = local
    veths = {str(link.get("ifalias", "")).removeprefix(_alias(cluster) + " node="): str(link["ifname"])
             for link in _cluster_links(cluster) if link.get("ifname") != bridge}
    nodes = []
    for ns in _cluster_namespaces(cluster):
        name = ns.rsplit(".", 1)[1]
        address, plen = "", 0
        with contextlib.suppress(GravenError):
            for link in _ip_json("-n", ns, "addr", "show", "dev", NODE_IF):
                for local, prefixlen in _inet(link):
                    if not address:
                        address, plen = local, prefixlen
        tap = None
        with contextlib.suppress(GravenError):
            tap = VM_TAP if _ip_json("-n", ns, "link", "show", "dev", VM_TAP) else None
        nodes.append(NodeNet(cluster=cluster, name=name, netns=ns, address=address, prefixlen=plen,
                             interface=NODE_IF, host_veth=veths.get(name, ""), bridge=bridge,
                             bridge_address=bridge_address, tap=tap))
    return nodes


def destroy(cluster: str, *, kill_timeout: float = 5.0) -> dict[str, list[str]]:
    """Remove every namespace and link of the cluster, and end the processes still inside its namespaces
    (SIGTERM, then SIGKILL after ``kill_timeout``). Works from names alone (after a crash too); a second run
    finds nothing and returns empty lists."""
    _require_root()
    with _locked():
        return _destroy(cluster, kill_timeout=kill_timeout)


def _destroy(cluster: str, *, kill_timeout: float) -> dict[str, list[str]]:
    namespaces = _cluster_namespaces(cluster)
    pids = _end_processes(namespaces, kill_timeout)
    links = [str(link["ifname"]) for link in _cluster_links(cluster)]
    bridge, _ = link_names(cluster)
    # the veths first (each takes its peer in the namespace with it, at once), then the namespaces, the bridge
    for name in sorted(links, key=lambda x: x == bridge):
        _ip("link", "del", name, check=False)
    for ns in namespaces:
        _ip("netns", "del", ns, check=False)
    deadline = time.monotonic() + 5.0
    while (_cluster_links(cluster) or _cluster_namespaces(cluster)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [str(link["ifname"]) for link in _cluster_links(cluster)] + _cluster_namespaces(cluster)
    if left:
        raise OperationalError(f"cluster {cluster!r}: could not remove {', '.join(left)}", left=left)
    return {"namespaces": namespaces, "links": links, "processes": [str(p) for p in pids]}


def _pids_in(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


def _end_processes(namespaces: Sequence[str], timeout: float) -> list[int]:
    """SIGTERM to every process inside the namespaces, SIGKILL to those left after ``timeout``."""
    ended = [pid for ns in namespaces for pid in _pids_in(ns)]
    if not ended:
        return []
    for pid in ended:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pids_in(ns) for ns in namespaces):
        time.sleep(0.05)
    for ns in namespaces:
        for pid in _pids_in(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_pids_in(ns) for ns in namespaces):
        time.sleep(0.05)
    return ended
