"""``gravenctl validate`` and ``gravenctl config patch|diff``, in process through ``cli.main.main``."""

from __future__ import annotations

import argparse
import json

import pytest
from config_fixtures import keys, replace_line, valid_yaml

import config
from cli import _config as _cli_config
from cli.main import main


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(valid_yaml())
    return path


@pytest.fixture
def bad(tmp_path):
    text = replace_line(replace_line(valid_yaml(), 3, "type: master"), 19, "addresses: [10.0.0.2/24, 10.0.0.999/24]")
    path = tmp_path / "bad.yaml"
    path.write_text(text + "colour: blue\n")
    return path


def test_validate_valid_file(good, capsys):
    assert main(["validate", "-f", str(good)]) == 0
    out = capsys.readouterr().out
    assert out == f"{good}: valid\n"


def test_validate_prints_warnings_and_exits_0(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(valid_yaml().replace("    hostname: node1\n", ""))
    assert main(["validate", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning" in out and "machine.network.hostname" in out
    assert out.splitlines()[-1] == f"{path}: valid (0 errors, 1 warning)"
    assert main(["validate", "-f", str(path), "--strict"]) == 1
    assert "--strict" in capsys.readouterr().out


def test_validate_lists_every_error_with_path_and_line(bad, capsys):
    assert main(["validate", "-f", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["LEVEL", "LINE", "PATH", "MESSAGE"]
    rows = [line.split(None, 3) for line in out[1:-1]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("error", "3", "machine.type"),
        ("error", "19", "machine.network.interfaces[0].addresses[1]"),
        ("error", "33", "colour"),
    ]
    assert out[-1] == f"{bad}: invalid: 3 errors, 0 warnings"


def test_validate_json(bad, good, capsys):
    assert main(["validate", "-f", str(bad), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["digest"] is None
    assert [(e["path"], e["line"]) for e in doc["errors"]] == [
        ("machine.type", 3),
        ("machine.network.interfaces[0].addresses[1]", 19),
        ("colour", 33),
    ]
    assert main(["validate", "-f", str(good), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "file": str(good),
        "valid": True,
        "errors": [],
        "warnings": [],
        "digest": config.digest(config.load(valid_yaml())),
    }


def test_validate_stdin_and_missing_file(monkeypatch, capsys, tmp_path):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"version: v1alpha1\n---\n{}\n")))
    assert main(["validate", "-f", "-"]) == 1
    assert "single YAML document" in capsys.readouterr().out
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "no such file" in err


def test_patch_with_merge_and_json_patches(good, tmp_path, capsys):
    merge = tmp_path / "merge.yaml"
    merge.write_text("machine:\n  network:\n    hostname: node7\n")
    ops = tmp_path / "ops.json"
    ops.write_text('[{"op": "replace", "path": "/machine/network/interfaces/0/mtu", "value": 9000}]')
    assert main(["config", "patch", "-f", str(good), "-p", str(merge), "-p", f"@{ops}"]) == 0
    out = capsys.readouterr().out
    patched = config.load(out)
    assert patched.machine.network.hostname == "node7"
    assert patched.machine.network.interfaces[0].mtu == 9000

    dest = tmp_path / "out.yaml"
    inline = '{"cluster": {"endpoint": "https://10.0.0.9:50000"}}'
    assert main(["config", "patch", "-f", str(good), "-p", inline, "-o", str(dest)]) == 0
    assert capsys.readouterr().out == ""
    assert config.load(dest.read_text()).cluster.endpoint == "https://10.0.0.9:50000"


def test_patch_errors(good, bad, tmp_path, capsys):
    assert main(["config", "patch", "-f", str(good), "-p", '{"machine": {"type": "boss", "mtu": 1}}']) == 1
    err = capsys.readouterr().err
    assert "machine.type" in err and "machine.mtu" in err and "2 errors" in err

    assert main(["config", "patch", "-f", str(bad), "-p", "{}"]) == 1
    err = capsys.readouterr().err
    assert "machine.type" in err and f"{bad}: invalid: 3 errors" in err

    assert main(["config", "patch", "-f", str(good), "-p", "missing.yaml"]) == 1
    assert "no such file" in capsys.readouterr().err

    ops = '[{"op": "remove", "path": "/machine/nothing"}]'
    assert main(["config", "patch", "-f", str(good), "-p", ops]) == 1
    assert "patch[0]" in capsys.readouterr().err


def test_diff(good, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    text = replace_line(valid_yaml(), 15, "hostname: node2").replace(keys()["key_b64"], keys()["key_pem"].strip())
    text = text.replace("key: -----BEGIN", "key: |\n      -----BEGIN").replace("\nMC4", "\n      MC4")
    text = text.replace("\n-----END PRIVATE", "\n      -----END PRIVATE")
    other.write_text(text)
    assert config.validate(text).ok, config.validate(text).errors

    assert main(["config", "diff", str(good), str(other)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["OP", "PATH", "OLD", "NEW"]
    assert "machine.network.hostname" in out and "node1" in out and "node2" in out
    assert "machine.ca.key" in out and "sha256:" in out
    assert keys()["key_b64"] not in out and "PRIVATE KEY" not in out

    assert main(["config", "diff", str(good), str(other), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["path"] for c in doc["changes"]} == {"machine.ca.key", "machine.network.hostname"}
    assert doc["new"]["digest"] == config.digest(config.load(text))
    assert "PRIVATE KEY" not in json.dumps(doc)

    assert main(["config", "diff", str(good), str(good)]) == 0
    assert capsys.readouterr().out == "no changes\n"
    assert main(["config", "diff", "--exit-code", str(good), str(other)]) == 1
    assert main(["config", "diff", "--exit-code", str(good), str(good)]) == 0


def test_diff_of_an_invalid_file_reports_its_errors(good, bad, capsys):
    assert main(["config", "diff", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "machine.type" in err and str(bad) in err


def test_config_group_is_shared():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    _cli_config.register(sub)
    cmds = _cli_config.config_subparsers(sub)
    assert {"patch", "diff"} <= set(cmds.choices)
    cmds.add_parser("contexts")
    assert _cli_config.config_subparsers(sub) is cmds
    assert parser.parse_args(["config", "contexts"]).config_command == "contexts"

    other = argparse.ArgumentParser().add_subparsers()
    first = _cli_config.config_subparsers(other)  # a module registering before this one
    first.add_parser("new")
    _cli_config.register(other)
    assert {"new", "patch", "diff"} <= set(_cli_config.config_subparsers(other).choices)
