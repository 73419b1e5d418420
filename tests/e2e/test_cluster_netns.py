"""A three-node local cluster on real addresses (``gravenctl cluster create --nodes 3 --network netns``, root):
every node answers on its own 198.18.0.0/15 address, ``--nodes a,b,c`` fans out one row per node, events come
from each, nothing is routed off the cluster's bridge, a rolling upgrade whose image does not boot on the
second node stops there (the first upgraded, the second falls back by itself, the third untouched), a killed
machine is an error row and not a hang, and ``cluster destroy`` (twice) leaves no namespace, link or process, also
after a ``cluster create`` that was killed part-way.

The rolling upgrade's image: one v2 image file, signed with the cluster's key, whose code (an overlay of
``node/__main__.py``) exits at start when its ``--root`` is the second node's, as an image that is broken only on
that node's hardware would: it is good on node 1, crashes every boot on node 2, and would be fine on node 3.

One cluster serves the whole module (module-scoped fixture); the tests run in file order and the destructive
one (killing a machine) comes last. The cluster is always destroyed in teardown.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from machinekit import gravenctl

pytestmark = pytest.mark.timeout(180)


def _netns_problem() -> str | None:
    from provision._cluster import netns_problem

    return netns_problem()


_PROBLEM = _netns_problem()
requires_netns = pytest.mark.skipif(_PROBLEM is not None,
                                    reason=f"local clusters on real addresses need root and `ip netns`: {_PROBLEM}")
HEALTH_TIMEOUT = "5"
BENCHMARK = ipaddress.ip_network("198.18.0.0/15")


@dataclass
class Cluster:
    name: str
    state: Path
    data: dict[str, Any]

    @property
    def gravenconfig(self) -> Path:
        return Path(self.data["gravenconfig"])

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return list(self.data["nodes"])

    @property
    def endpoints(self) -> list[str]:
        return [n["endpoint"] for n in self.nodes]

    def ctl(self, *args: str, nodes: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        target = ["--nodes", ",".join(nodes)] if nodes else []
        return gravenctl("--gravenconfig", str(self.gravenconfig), *target, *args, timeout=timeout)

    def json(self, *args: str, nodes: list[str] | None = None, timeout: float = 60) -> Any:
        r = self.ctl(*args, "-o", "json", nodes=nodes, timeout=timeout)
        assert r.returncode == 0, f"gravenctl {' '.join(args)}: {r.stdout}\n{r.stderr}\n{self.logs()}"
        return json.loads(r.stdout)

    def status(self, endpoint: str) -> dict[str, Any]:
        st: dict[str, Any] = self.json("status", nodes=[endpoint])
        return st

    def events(self, endpoint: str, *kinds: str) -> list[dict[str, Any]]:
        args = ["events", "-o", "json"] + [a for k in kinds for a in ("--kind", k)]
        r = self.ctl(*args, nodes=[endpoint])
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def logs(self, lines: int = 15) -> str:
        out = []
        for n in self.nodes:
            try:
                text = Path(n["log"]).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- {n['name']} ---\n" + "\n".join(text))
        return "\n".join(out)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def _left_behind(name: str) -> list[str]:
    """This cluster's namespaces, links and machine processes that still exist."""
    from provision import _netns

    bridge, prefix = _netns.link_names(name)
    found = [ns for ns in _ip("netns", "list").split() if ns.startswith(f"graven.{name}.")]
    found += [str(link["ifname"]) for link in json.loads(_ip("-j", "link", "show") or "[]")
              if str(link["ifname"]) == bridge or str(link["ifname"]).startswith(prefix)]
    procs = subprocess.run(["pgrep", "-f", f"/{name}/nodes/"], capture_output=True, text=True).stdout.split()
    return found + [f"pid {p}" for p in procs]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if _PROBLEM is not None:
        pytest.skip(f"local clusters on real addresses need root and `ip netns`: {_PROBLEM}")
    state = tmp_path_factory.mktemp("clusters")
    name = f"e2e-{os.getpid() % 100000}"
    base = ["cluster", "create", "--name", name, "--state", str(state), "--nodes", "3", "--network", "netns",
            "--health-timeout", HEALTH_TIMEOUT, "--timeout", "60", "--no-merge", "-o", "json"]
    try:
        r = gravenctl(*base, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "network: netns" in r.stderr
        yield Cluster(name, state, json.loads(r.stdout))
    finally:
        d1 = gravenctl("cluster", "destroy", "--name", name, "--state", str(state), timeout=120)
        d2 = gravenctl("cluster", "destroy", "--name", name, "--state", str(state), timeout=120)
        assert d1.returncode == 0, d1.stderr
        assert d2.returncode == 0 and "nothing to destroy" in d2.stderr, d2.stderr
        assert _left_behind(name) == []
        assert not (state / name).exists()


@requires_netns
def test_every_node_answers_on_its_own_address(cluster: Cluster) -> None:
    data = cluster.data
    assert data["network"] == "netns" and len(cluster.nodes) == 3
    subnet = ipaddress.ip_network(data["subnet"])
    assert subnet.subnet_of(BENCHMARK)  # type: ignore[arg-type]
    addresses = [n["address"] for n in cluster.nodes]
    assert len(set(addresses)) == 3 and all(ipaddress.ip_address(a) in subnet for a in addresses)
    assert [n["type"] for n in cluster.nodes] == ["controlplane", "worker", "worker"]
    # the client config lists every endpoint
    ctx = yaml.safe_load(cluster.gravenconfig.read_text())
    assert ctx["contexts"][cluster.name]["endpoints"] == cluster.endpoints

    rows = cluster.json("version", nodes=cluster.endpoints)
    assert [r["node"] for r in rows] == cluster.endpoints
    assert all(r["server"]["version"] == "v1" and r["server"]["slot"] == "A" for r in rows)
    assert len({r["server"]["boot_id"] for r in rows}) == 3  # three machines, not one answering thrice
    table = cluster.ctl("version", nodes=cluster.endpoints)
    assert table.returncode == 0
    lines = [line for line in table.stdout.splitlines() if line.startswith("198.")]
    assert [line.split()[0] for line in lines] == cluster.endpoints  # one row per node

    # each node's own address lives on eth0 inside its namespace, and the agent there uses netlink
    for node in cluster.nodes:
        addrs = cluster.json("get", "addresses", nodes=[node["endpoint"]])
        assert any(a["interface"] == "eth0" and a["address"].split("/")[0] == node["address"] for a in addrs)
        assert "netns platform" in Path(node["log"]).read_text()
        assert cluster.status(node["endpoint"])["stage"] == "running"

    show = gravenctl("cluster", "show", "--name", cluster.name, "--state", str(cluster.state))
    assert show.returncode == 0 and all(n["netns"] in show.stdout for n in cluster.nodes), show.stdout


@requires_netns
def test_events_from_each_node(cluster: Cluster) -> None:
    r = cluster.ctl("events", "--kind", "boot.committed", "-o", "json", nodes=cluster.endpoints)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    by_node = {e["node"] for e in events}
    assert by_node == set(cluster.endpoints)
    assert all(e["kind"] == "boot.committed" for e in events)


@requires_netns
def test_traffic_stays_on_the_cluster_network(cluster: Cluster) -> None:
    subnet = ipaddress.ip_network(cluster.data["subnet"])
    bridge = cluster.data["bridge"]
    assert Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").read_text().strip() == "0"
    for node in cluster.nodes:
        ns = node["netns"]
        assert _ip("-n", ns, "route", "show", "default").strip() == ""  # no default route
        assert _ip("-n", ns, "-6", "route", "show", "default").strip() == ""
        for family in ("-4", "-6"):
            for route in json.loads(_ip("-n", ns, "-j", family, "route", "show", "table", "all") or "[]"):
                dst = route.get("dst", "")
                assert dst not in ("", "default") and "gateway" not in route, route  # no way out
                net = ipaddress.ip_network(dst, strict=False)
                assert net.is_loopback or net.is_link_local or net.is_multicast or route.get("type") == "broadcast" \
                    or (net.version == 4 and net.subnet_of(subnet)), route  # type: ignore[arg-type]
        routes = cluster.json("get", "routes", nodes=[node["endpoint"]])
        assert routes and all(r["network"] not in ("default", "0.0.0.0/0") for r in routes), routes
    # node 1 reaches node 2's API over the bridge; nothing outside the subnet is reachable from inside
    one, two = cluster.nodes[0], cluster.nodes[1]
    probe = ("import socket, sys\n"
             "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
             "try:\n"
             "    socket.create_connection(('198.19.255.254', 50000), timeout=3)\n"
             "except OSError as exc:\n"
             "    print('outside:', exc.errno)\n"
             "else:\n"
             "    sys.exit('reached an address outside the cluster network')\n")
    host, port = two["endpoint"].rsplit(":", 1)
    r = subprocess.run(["ip", "netns", "exec", one["netns"], sys.executable, "-c", probe, host, port],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "outside: 101" in r.stdout  # ENETUNREACH: no route, at once


def _broken_on(cluster: Cluster, node_name: str, directory: Path) -> Path:
    """A v2 image signed with the cluster's key whose code exits at start on ``node_name`` only (found by the
    machine's folder on a process machine, by the hostname its launcher gives a container machine)."""
    overlay = directory / "overlay-broken-on-node2"
    main = overlay / "usr" / "lib" / "graven" / "node" / "__main__.py"
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(
        "import socket, sys\n\n"
        f"if any(a.endswith('/nodes/{node_name}') for a in sys.argv) or socket.gethostname() == '{node_name}':\n"
        f"    print('graven agent: this image does not boot on {node_name} (test image)', file=sys.stderr)\n"
        "    sys.exit(71)\n\n"
        "from node.cli import main\n\n"
        "sys.exit(main())\n")
    out = directory / "v2-broken-on-node2.img"
    r = gravenctl("image", "build", "--version", "v2", "--key", cluster.data["image_key"], "--overlay",
                  str(overlay), "-o", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    return out


@requires_netns
def test_rolling_upgrade_stops_at_the_second_node_which_falls_back(cluster: Cluster, tmp_path: Path) -> None:
    a, b, c = cluster.endpoints
    image = _broken_on(cluster, cluster.nodes[1]["name"], tmp_path)
    before_c = cluster.status(c)
    started = time.monotonic()
    r = cluster.ctl("upgrade", "--image", str(image), "--rolling", "--timeout", "90s", "-o", "json",
                    nodes=[a, b, c], timeout=150)
    assert r.returncode == 1, r.stdout + r.stderr + cluster.logs()
    report = json.loads(r.stdout)
    assert report["stopped_at"] == b and report["version"] == "v2"
    rows = {row["node"]: row for row in report["nodes"]}
    assert [row["node"] for row in report["nodes"]] == [a, b, c]
    assert (rows[a]["outcome"], rows[a]["before"], rows[a]["after"]) == ("upgraded", "v1 (A)", "v2 (B)")
    assert (rows[b]["outcome"], rows[b]["before"], rows[b]["after"]) == ("fell back", "v1 (A)", "v1 (A)")
    assert "fell back from slot B to A" in rows[b]["message"]
    assert (rows[c]["outcome"], rows[c]["before"], rows[c]["after"]) == ("untouched", "v1 (A)", "v1 (A)")
    # node 2 is not touched until node 1 is Running and committed on v2
    assert r.stderr.index(f"{a}: upgraded: Running and committed on v2 (B)") < r.stderr.index(f"{b}: upgrading")
    assert f"{c}: upgrading" not in r.stderr
    assert time.monotonic() - started < 120

    st_a = cluster.status(a)
    assert (st_a["stage"], st_a["ready"], st_a["version"], st_a["slot"]) == ("running", True, "v2", "B")
    # the second node fell back by itself: the bootloader, after three failed boots of slot B
    st_b = cluster.status(b)
    assert (st_b["stage"], st_b["ready"], st_b["version"], st_b["slot"]) == ("running", True, "v1", "A")
    assert (st_b["last_fallback"]["from_slot"], st_b["last_fallback"]["to_slot"]) == ("B", "A")
    failed = cluster.events(b, "boot.failed")
    assert len(failed) == 3 and all(e["payload"]["slot"] == "B" and e["payload"]["exit_code"] == 71 for e in failed)
    fallback = cluster.events(b, "boot.fallback")
    assert len(fallback) == 1 and fallback[0]["actor"]["id"] == "bootloader"
    # the third: same boot, same version, no upgrade was ever asked of it
    st_c = cluster.status(c)
    assert (st_c["boot_id"], st_c["version"], st_c["slot"]) == (before_c["boot_id"], "v1", "A")
    assert st_c["last_fallback"] is None
    assert not [e for e in cluster.events(c, "api.request") if e["payload"].get("method") == "upgrade"]
    assert not cluster.events(c, "image.installed")[1:]  # only the install's


@requires_netns
def test_an_unreachable_node_is_an_error_row_not_a_hang(cluster: Cluster) -> None:
    a, b, c = cluster.endpoints
    victim = cluster.nodes[2]
    os.killpg(os.getpgid(victim["pid"]), signal.SIGKILL)  # pull the third machine's plug
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and subprocess.run(["ip", "netns", "pids", victim["netns"]],
                                                         capture_output=True, text=True).stdout.strip():
        time.sleep(0.05)
    started = time.monotonic()
    r = cluster.ctl("version", nodes=[a, b, c], timeout=60)
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("198.")}
    assert list(rows) == [a, b, c]
    assert "v2" in rows[a] and "v1" in rows[b] and "[UNAVAILABLE]" in rows[c], r.stdout
    assert elapsed < 30, f"{elapsed:.1f}s"


def test_cluster_destroy_without_root_or_cluster_is_harmless(tmp_path: Path) -> None:
    """Destroying a cluster that does not exist says so and succeeds (twice), as any user."""
    for _ in range(2):
        r = gravenctl("cluster", "destroy", "--name", "never-made", "--state", str(tmp_path))
        assert r.returncode == 0 and "nothing to destroy" in r.stderr, r.stderr



@requires_netns
def test_destroy_after_a_crashed_create_leaves_nothing(tmp_path: Path) -> None:
    """``cluster create`` killed once its namespaces and machines exist; ``destroy`` (twice) removes them all."""
    from machinekit import _env

    name = f"crash-{os.getpid() % 100000}"
    cmd = [sys.executable, "-m", "cli", "cluster", "create", "--name", name, "--state", str(tmp_path),
           "--nodes", "2", "--network", "netns", "--no-merge"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            namespaces = [ns for ns in _ip("netns", "list").split() if ns.startswith(f"graven.{name}.")]
            if len(namespaces) == 2 and all(subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                                           text=True).stdout.strip() for ns in namespaces):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "create finished before it could be killed"
        proc.kill()  # the crash: no cleanup of its own
        proc.wait(10)
        assert _left_behind(name), "the crash left nothing to clean up; the test proves nothing"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
        first = gravenctl("cluster", "destroy", "--name", name, "--state", str(tmp_path), timeout=120)
        second = gravenctl("cluster", "destroy", "--name", name, "--state", str(tmp_path), timeout=120)
    assert first.returncode == 0 and "network: removed 2 namespace(s)" in first.stderr, first.stderr
    assert second.returncode == 0 and "nothing to destroy" in second.stderr, second.stderr
    assert _left_behind(name) == []
