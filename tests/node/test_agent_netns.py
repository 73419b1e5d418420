"""Two real agents, each in its own network namespace of a local cluster network (root only): the agent picks
the netlink platform by itself, applies ``machine.network`` from the config it is given over the API (an extra
address, a route, an MTU, the hostname in its own UTS namespace, resolvers on STATE), and ``gravenctl get
links|addresses|routes`` and ``gravenctl status`` (drift) read it back through the API, one row per node."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import config
from api import _clientconfig
from api._client import GravenClient
from api._clientconfig import ClientConfig
from api._pki import ClusterSecrets
from cli.main import main
from events import Kind
from provision import _netns
from provision._netns import NodeNet

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "198.19.77.0/24"


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, veth pairs)"
    probe = subprocess.run(["ip", "netns", "add", f"gvprobe-{uuid.uuid4().hex[:8]}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe.args[3]], capture_output=True)
    return None


PROBLEM = _problem()
pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(PROBLEM is not None, reason=f"agents in namespaces: {PROBLEM}")]


@dataclass
class Node:
    net: NodeNet
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def endpoint(self) -> str:
        return self.net.endpoint()

    @property
    def extra(self) -> str:
        """The address the config adds (the platform gave the node ``net.address``)."""
        last = int(self.net.address.rsplit(".", 1)[1])
        return f"{self.net.address.rsplit('.', 1)[0]}.{last + 100}/{self.net.prefixlen}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def machine_config(secrets: ClusterSecrets, node: Node) -> bytes:
    cfg = config.default_config(secrets.name, f"https://{node.endpoint}", secrets.ca_crt_pem, secrets.ca_key_pem,
                                [secrets.image_pub_pem], hostname=node.net.name)
    tree = config.to_dict(cfg)
    tree["machine"].pop("install", None)
    tree["machine"]["network"] = {
        "hostname": node.net.name, "nameservers": [node.net.bridge_address],
        "interfaces": [{"interface": "eth0", "addresses": [node.extra], "mtu": 1400,
                        "routes": [{"network": ROUTE, "gateway": node.net.bridge_address, "metric": 20}]}]}
    return config.dump_yaml(config.load(yaml.safe_dump(tree))).encode()


def wait_port(node: Node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise AssertionError(f"agent exited with {node.proc.returncode}: {node.output()}")
        try:
            with socket.create_connection((node.net.address, 50000), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"agent did not listen within {timeout}s: {node.output()}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterSecrets, list[Node], Path]]:
    name = f"a{uuid.uuid4().hex[:8]}"
    secrets = ClusterSecrets.generate(name)
    nodes: list[Node] = []
    try:
        for net in _netns.create(name, 2):
            root = tmp_path / net.name
            root.mkdir()
            log = root / "agent.log"
            cmd = [*net.exec_prefix(), sys.executable, "-m", "node", "agent", "--root", str(root),
                   "--listen", net.endpoint()]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            env.pop("GRAVEN_PLATFORM", None)
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=root)
            nodes.append(Node(net, root, proc, log))
        client_config = tmp_path / "gravenconfig"
        ClientConfig(context=name, contexts={name: secrets.client_context([n.endpoint for n in nodes])}
                     ).save(client_config)
        for node in nodes:
            wait_port(node)
            with GravenClient.insecure(node.endpoint, quiet=True) as c:
                c.apply_configuration(machine_config(secrets, node))
        for node in nodes:
            wait_running(secrets, node, client_config)
        yield secrets, nodes, client_config
    finally:
        _netns.destroy(name, kill_timeout=2.0)  # ends the agents inside too
        for node in nodes:
            node.proc.wait(timeout=10)


def wait_running(secrets: ClusterSecrets, node: Node, client_config: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with client(client_config, node) as c:
                last = c.status()
            if last["stage"] == "running" and last["ready"]:
                return
        except Exception as exc:  # not serving with mutual TLS yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{node.net.name} not running: {last}; {node.output()}")


def client(client_config: Path, node: Node) -> GravenClient:
    ctx = _clientconfig.load(client_config).current()[1]
    return GravenClient(node.endpoint, ctx.ca, ctx.crt, ctx.key, timeout=10)


def ctl(client_config: Path, *argv: str) -> int:
    return main(["--gravenconfig", str(client_config), *argv])


def test_agents_apply_and_report_their_network(cluster: tuple[ClusterSecrets, list[Node], Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, nodes, cfg = cluster
    capsys.readouterr()
    for node in nodes:
        assert "graven agent: network: netns platform" in node.output()

    assert ctl(cfg, "get", "addresses", "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    for node in nodes:
        mine = {(r["address"], r["graven"]) for r in rows if r["node"] == node.endpoint and r["interface"] == "eth0"}
        assert mine == {(node.net.cidr, False), (node.extra, True)}  # the platform's address, the config's

    assert ctl(cfg, "get", "routes", "-o", "json") == 0
    routes = json.loads(capsys.readouterr().out)
    for node in nodes:
        assert {"node": node.endpoint, "interface": "eth0", "network": ROUTE, "gateway": node.net.bridge_address,
                "metric": 20, "family": "inet", "protocol": "graven", "scope": "global", "type": "unicast",
                "graven": True} in routes
        assert not [r for r in routes if r["node"] == node.endpoint and r["network"] == "0.0.0.0/0"]

    assert ctl(cfg, "get", "links") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NODE", "INTERFACE", "UP", "MTU", "OPERSTATE", "MAC", "KIND"]
    eth0 = [line.split() for line in table[1:] if " eth0 " in line]
    assert sorted(r[0] for r in eth0) == sorted(n.endpoint for n in nodes) and {r[3] for r in eth0} == {"1400"}

    assert ctl(cfg, "status", "-o", "json") == 0
    assert [s["drift"] for s in json.loads(capsys.readouterr().out)] == [[], []]

    # the node's own events say what it changed, with before and after; hostname and resolvers are its own
    with client(cfg, nodes[0]) as c:
        events = list(c.events(since=0))
    by_kind = {e.kind: e.payload for e in events}
    assert by_kind[Kind.NETWORK_ADDRESS] == {"interface": "eth0", "op": "add", "before": None, "after": nodes[0].extra}
    assert by_kind[Kind.NETWORK_HOSTNAME] == {"before": socket.gethostname(), "after": nodes[0].net.name,
                                              "applied": True}
    assert socket.gethostname() != nodes[0].net.name
    resolv = next(nodes[0].root.rglob("resolv.conf")).read_text()
    assert f"nameserver {nodes[0].net.bridge_address}" in resolv

    # drift: somebody takes the config's address away behind the node's back
    subprocess.run(["ip", "-n", nodes[1].net.netns, "addr", "del", nodes[1].extra, "dev", "eth0"], check=True)
    assert ctl(cfg, "status", "-o", "json") == 0
    drift = {s["node"]: s["drift"] for s in json.loads(capsys.readouterr().out)}
    assert drift[nodes[0].endpoint] == []
    assert drift[nodes[1].endpoint] == [{"interface": "eth0", "kind": "address", "want": nodes[1].extra,
                                         "have": None}]
    assert ctl(cfg, "status") == 0
    out = capsys.readouterr().out
    assert "DRIFT" in out.splitlines()[0] and f"1: eth0 address: want {nodes[1].extra}, have -" in out
