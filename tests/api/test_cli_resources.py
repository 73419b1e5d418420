"""``gravenctl processes``, ``get processes|mounts`` and ``version``'s kernel and OS columns, against a fake node
over real mutual TLS."""

from __future__ import annotations

import json

import pytest
from fakenode import Cluster, FakeNode

from cli.main import main


def ctl(cluster: Cluster, node: FakeNode, *argv: str) -> int:
    return main(["--gravenconfig", str(cluster.config_path), "-e", node.endpoint, *argv])


def test_processes_table_and_json(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "processes") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["NODE", "PID", "PPID"]
    assert "node agent" in out[1] and out[1].split()[1] == "1" and "60.0 MiB" in out[1]
    assert ctl(cluster, fake_node, "processes", "--sort", "cpu", "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["pid"] for r in rows] == [7, 1] and rows[0]["node"] == fake_node.endpoint


def test_get_mounts_shows_root_read_only(cluster: Cluster, fake_node: FakeNode,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "get", "mounts") == 0
    lines = capsys.readouterr().out.splitlines()
    root = next(line.split() for line in lines if line.split()[1:2] == ["/"])
    assert root[2:5] == ["squashfs", "/dev/loop3", "ro"]


def test_version_reports_kernel_and_os(cluster: Cluster, fake_node: FakeNode,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "version", "-o", "json") == 0
    server = json.loads(capsys.readouterr().out)["server"]
    assert (server["kernel"], server["os_image"], server["provisioner"]) == ("6.1.0-test", "Graven v1", "container")
    assert ctl(cluster, fake_node, "version") == 0
    out = capsys.readouterr().out
    assert "KERNEL" in out and "6.1.0-test" in out and "Graven v1" in out
