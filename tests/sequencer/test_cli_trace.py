"""``gravenctl trace boots`` and ``gravenctl trace boot`` on a real LMDB log, in-process."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from seqkit import history, run

import config
from cli.main import main


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory, pki: Any) -> Path:
    from storage import LmdbEventLog

    path = tmp_path_factory.mktemp("node") / "log"
    logs: list[LmdbEventLog] = []

    def open_log(boot_id: str) -> LmdbEventLog:
        if logs:
            logs[-1].close()
        logs.append(LmdbEventLog(path, pki.signer, boot_id=boot_id, origin="graven/node1", cert_der=pki.cert_der))
        return logs[-1]

    cfg = config.default_config("lab", "https://10.0.0.2:50000", pki.ca_pem, pki.ca_key_pem, [pki.image_key_pem],
                                hostname="node1")
    run(history(open_log("boot-ok"), config.dump_yaml(cfg).encode(), open_log))
    logs[-1].close()
    return path


def test_trace_boots_table_and_json(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "boots", str(log_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["BOOT", "BOOT_ID", "SLOT", "VERSION", "OUTCOME"]
    assert len(out) == 5
    assert "boot-failed" in out[2] and "failed" in out[2] and "boot/network/configure_links" in out[2]
    assert main(["trace", "boots", str(log_dir), "-o", "json"]) == 0
    boots = json.loads(capsys.readouterr().out)
    assert [b["outcome"] for b in boots] == ["rebooted", "failed", "failed", "running"]
    assert boots[1]["failure"]["task"] == "configure_links"


def test_trace_boot_table_defaults_to_the_last_boot(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "boot", str(log_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("boot 3  id boot-last")
    assert "commit_boot" in out and "critical path" in out


def test_trace_boot_failed_shows_where(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "boot", str(log_dir), "--boot", "1"]) == 0
    assert "FAILED at boot / network / configure_links: eth0: no carrier [UNAVAILABLE]" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["json", "chrome", "svg"])
def test_trace_boot_formats_to_a_file(log_dir: Path, tmp_path: Path, fmt: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"trace.{fmt}"
    assert main(["trace", "boot", str(log_dir), "--boot-id", "boot-ok", "-o", fmt, "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text()
    if fmt == "svg":
        root = ET.fromstring(text)
        assert root.tag.endswith("svg") and "request_reboot" in text
    elif fmt == "chrome":
        doc = json.loads(text)
        assert {e["ph"] for e in doc["traceEvents"]} == {"M", "X"}
        assert any(e["name"] == "configure_links" for e in doc["traceEvents"])
    else:
        doc = json.loads(text)
        assert doc["boot"]["boot_id"] == "boot-ok" and doc["spans"]


def test_unknown_boot_is_an_error(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "boot", str(log_dir), "--boot", "9"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["trace", "boot", str(log_dir / "nope")]) == 1
