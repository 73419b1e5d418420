"""Fixtures for the client's tests.

- ``cluster``: one ``gen config`` output (session-wide): secrets, the admin ``gravenconfig`` and its path.
- ``fake_node`` / ``maintenance_node``: a started ``fakenode.FakeNode`` (mutual TLS / maintenance), stopped after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakenode import Cluster, FakeNode

from api._pki import ClusterSecrets, gen_config


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    d = tmp_path_factory.mktemp("cluster")
    gen_config("test", "127.0.0.1", d)
    secrets = ClusterSecrets.load("test", (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes(),
                                  (d / "image.key").read_bytes())
    return Cluster(d, secrets, d / "gravenconfig")


@pytest.fixture
def fake_node(cluster: Cluster) -> Iterator[FakeNode]:
    node = FakeNode(cluster.secrets).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def maintenance_node(cluster: Cluster) -> Iterator[FakeNode]:
    node = FakeNode(cluster.secrets, maintenance=True).start()
    try:
        yield node
    finally:
        node.stop()
