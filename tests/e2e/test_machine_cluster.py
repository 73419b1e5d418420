"""``gravenctl cluster create|show|destroy`` on loopback ports: machines booted from the v1 installer, installed,
Running, reachable through the client config's context; destroy stops them, also after a crash, and is safe to
repeat. (Clusters in network namespaces have their own tests.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from machinekit import gravenctl, requires_block

from node._launch import container_problem
from provision._destroy import _loops_below, _mounts_below

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize(("disk", "nodes"), [("sandbox", 2), pytest.param("block", 1, marks=requires_block)])
def test_cluster_create_show_destroy(tmp_path: Path, disk: str, nodes: int) -> None:
    state, client = tmp_path / "clusters", tmp_path / "client-config"
    env = {"GRAVENCONFIG": str(client)}
    r = gravenctl("cluster", "create", "--name", "c1", "--state", str(state), "--port", "0", "--nodes", str(nodes),
                  "--disk", disk, "--network", "loopback", "--health-timeout", "5", "-o", "json", timeout=150,
                  env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "running, ready (slot A, v1)" in r.stderr  # progress on stderr
        # container machines by default where they can run, on block disks as on sandbox ones
        containers = container_problem() is None and os.environ.get("GRAVEN_PROVISIONER", "container") == "container"
        assert ("provisioner: container" in r.stderr) == containers, r.stderr
        data = json.loads((state / "c1" / "cluster.json").read_text())
        assert {"gravenconfig", "ca_cert", "image_key", "image_pubkey", "nodes"} <= set(data)
        assert len(data["nodes"]) == nodes
        for node in data["nodes"]:
            assert {"name", "root", "endpoint"} <= set(node)
            assert Path(node["root"]).is_dir() and node["endpoint"].startswith("127.0.0.1:")

        # the context was merged into the client config and made current: plain gravenctl reaches the nodes
        for node in data["nodes"]:
            r = gravenctl("-n", node["endpoint"], "-e", node["endpoint"], "version", "-o", "json", env=env)
            assert r.returncode == 0, r.stderr
            server = json.loads(r.stdout)["server"]
            assert server["version"] == "v1" and server["slot"] == "A" and server["node"] == node["name"]
        r = gravenctl("cluster", "show", "--name", "c1", "--state", str(state), "-o", "json", env=env)
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert [n["machine"] for n in shown["nodes"]] == ["running"] * nodes
        assert all(n["stage"] == "running (ready)" for n in shown["nodes"])
        r = gravenctl("cluster", "show", "--name", "c1", "--state", str(state), env=env)
        assert r.returncode == 0 and "c1-1" in r.stdout

        # a crash: the first machine's supervisor dies without cleaning up (its mounts stay behind)
        crashed = data["nodes"][0]
        os.killpg(crashed["pid"], signal.SIGKILL)
    finally:
        r = gravenctl("cluster", "destroy", "--name", "c1", "--state", str(state), timeout=90, env=env)
    assert r.returncode == 0, r.stderr
    assert "cluster c1 destroyed" in r.stderr
    assert not (state / "c1").exists()
    assert not any(_alive(n["pid"]) for n in data["nodes"])
    assert _mounts_below(state) == [] and _loops_below(state) == []
    assert "c1" not in (client.read_text() if client.exists() else "")
    again = gravenctl("cluster", "destroy", "--name", "c1", "--state", str(state), env=env)
    assert again.returncode == 0 and "nothing to destroy" in again.stderr


def test_cluster_create_refuses_a_taken_port_and_an_existing_cluster(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = gravenctl("cluster", "create", "--name", "c2", "--state", str(tmp_path), "--port", str(port),
                      "--network", "loopback", "--no-merge")
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    assert not (tmp_path / "c2").exists()
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "cluster.json").write_text("{}")
    r = gravenctl("cluster", "create", "--name", "c3", "--state", str(tmp_path), "--port", "0",
                  "--network", "loopback", "--no-merge")
    assert r.returncode == 1 and "cluster 'c3' exists" in r.stderr and "cluster destroy --name c3" in r.stderr
