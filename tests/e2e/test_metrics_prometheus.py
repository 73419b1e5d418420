"""Metrics end to end: a real Prometheus scrapes a real agent over mutual TLS, and a config apply moves the
counter it reads through Prometheus's own HTTP API; a scrape without a client certificate fails in the TLS
handshake; a metrics port already taken is an event, not a crashed agent."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentproc import AgentProc, free_port

from api._pki import ClusterSecrets, issue_client_certificate

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="needs Debian's prometheus (make test installs it through storage/_systools.py)")


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate("metrics")


@pytest.fixture
def node(tmp_path: Path, secrets: ClusterSecrets) -> Iterator[AgentProc]:
    agent = AgentProc(tmp_path / "machine", secrets, metrics_port=free_port()).start()
    try:
        agent.configure()
        yield agent
    finally:
        agent.kill()


def client_files(tmp_path: Path, secrets: ClusterSecrets) -> dict[str, str]:
    crt, key = issue_client_certificate(secrets.ca_key, secrets.ca_cert, cn="prometheus", roles=["os:reader"])
    files = {"ca_file": secrets.ca_crt_pem, "cert_file": crt, "key_file": key}
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = str(tmp_path / name)
    return out


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_value(port: int, promql: str, at_least: float, timeout: float = 40.0) -> float:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            result = query(port, promql)
        except OSError as exc:  # Prometheus still starting
            last = exc
        else:
            value = sum(float(r["value"][1]) for r in result)
            if result and value >= at_least:
                return value
            last = result
        time.sleep(0.5)
    raise AssertionError(f"{promql} did not reach {at_least}: {last}")


def test_prometheus_scrapes_the_node_and_sees_a_config_apply(node: AgentProc, secrets: ClusterSecrets,
                                                            tmp_path: Path) -> None:
    prom_port = free_port()
    scrape = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
              "scrape_configs": [{"job_name": "graven", "scheme": "https",
                                  "tls_config": client_files(tmp_path, secrets),
                                  "static_configs": [{"targets": [f"127.0.0.1:{node.metrics_port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        before = wait_value(prom_port, 'graven_config_applies_total{job="graven"}', 1)
        assert wait_value(prom_port, 'up{job="graven"}', 1) == 1
        assert wait_value(prom_port, 'graven_stage{stage="running"}', 1) == 1
        with node.client() as c:
            cfg = yaml.safe_load(node.config_yaml())
            cfg["machine"]["network"]["hostname"] = "renamed"
            c.apply_configuration(yaml.safe_dump(cfg).encode(), mode="no-reboot")
        after = wait_value(prom_port, 'graven_config_applies_total{job="graven",mode="no-reboot"}', 1)
        assert after >= 1 and before >= 1
        calls = wait_value(prom_port, 'graven_api_requests_total{method="ApplyConfiguration",code="OK"}', 1)
        assert calls >= 1
        assert wait_value(prom_port, "graven_log_next_seq", 10) >= 10
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()


def test_a_scrape_without_a_client_certificate_is_refused_in_the_handshake(node: AgentProc,
                                                                           secrets: ClusterSecrets) -> None:
    ctx = ssl.create_default_context(cadata=secrets.ca_crt_pem.decode())
    assert node.metrics_port is not None
    with (socket.create_connection(("127.0.0.1", node.metrics_port), timeout=5) as raw,
          pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)),
          ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        tls.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        tls.recv(1)  # TLS 1.3: the server's refusal of the missing certificate arrives here


def test_a_metrics_port_in_use_is_an_event_and_the_node_goes_on(tmp_path: Path, secrets: ClusterSecrets) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = AgentProc(tmp_path / "machine", secrets, metrics_port=port).start()
        try:
            agent.configure()
            with agent.client() as c:
                failed = [e for e in c.events(since=0) if e.kind == "service.failed"]
                assert c.version()["version"]
            assert failed and failed[0].payload["service"] == "metrics"
            assert f"127.0.0.1:{port}" in str(failed[0].payload["reason"])
        finally:
            agent.kill()
