"""The client config file: format, endpoints, the path it is found at, 0600 atomic writes, and the
``config context|contexts|endpoint|node|info|merge`` commands."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from api import _clientconfig
from api._clientconfig import ClientConfig, Context, default_path, endpoint_target, load, loads, split_endpoint
from api._pki import ClusterSecrets
from cli.main import main
from errors import InvalidRequest, NotFound


@pytest.fixture(scope="module")
def secrets() -> ClusterSecrets:
    return ClusterSecrets.generate("cc")


def two_contexts(secrets: ClusterSecrets) -> ClientConfig:
    return ClientConfig(context="a", contexts={
        "a": secrets.client_context(["10.0.0.1"]),
        "b": secrets.client_context(["10.0.0.2:50001"], roles=["os:reader"]),
    })


@pytest.mark.parametrize(("text", "host", "port"), [
    ("10.0.0.1", "10.0.0.1", 50000),
    ("10.0.0.1:50001", "10.0.0.1", 50001),
    ("node1.example", "node1.example", 50000),
    ("https://node1:443/", "node1", 443),
    ("[fd00::1]:7", "fd00::1", 7),
    ("fd00::1", "fd00::1", 50000),
])
def test_split_endpoint(text: str, host: str, port: int) -> None:
    assert split_endpoint(text) == (host, port)


def test_endpoint_target_and_bad_endpoints() -> None:
    assert endpoint_target("fd00::1") == "[fd00::1]:50000"
    assert endpoint_target("n1") == "n1:50000"
    for bad in ("", "host:0", "host:http", "[fd00::1", "https://"):
        with pytest.raises(InvalidRequest):
            split_endpoint(bad)


def test_round_trip_stores_pem_as_base64(secrets: ClusterSecrets) -> None:
    cfg = two_contexts(secrets)
    text = cfg.dumps()
    doc = yaml.safe_load(text)
    assert doc["context"] == "a"
    assert set(doc["contexts"]["a"]) == {"endpoints", "nodes", "ca", "crt", "key"}
    assert base64.b64decode(doc["contexts"]["a"]["ca"]) == secrets.ca_crt_pem
    back = loads(text)
    assert back.context == "a"
    assert back.contexts["b"].endpoints == ["10.0.0.2:50001"]
    assert back.contexts["b"].roles() == ["os:reader"]
    assert back.contexts["a"].key == cfg.contexts["a"].key


@pytest.mark.parametrize(("doc", "where"), [
    ("context: a\ncontexts: {a: {endpoints: x}}\n", "contexts.a.endpoints"),
    ("contexts: {a: {ca: '!!notbase64'}}\n", "contexts.a.ca"),
    ("contexts: {a: {ca: aGVsbG8=}}\n", "contexts.a.ca"),
    ("contexts: {a: {proxy: x}}\n", "contexts.a: unknown key"),
    ("context: a\nextra: 1\n", "unknown key(s) extra"),
    ("- a\n", "expected a mapping"),
])
def test_bad_files_name_the_key(doc: str, where: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        loads(doc, "cfg.yaml")
    assert "cfg.yaml" in info.value.message and where in info.value.message


def test_current_context_errors(secrets: ClusterSecrets) -> None:
    cfg = two_contexts(secrets)
    assert cfg.current()[0] == "a"
    assert cfg.current("b")[0] == "b"
    with pytest.raises(NotFound, match=r"context 'zz' not found.*contexts: a, b"):
        cfg.current("zz")
    with pytest.raises(NotFound, match="no current context"):
        ClientConfig(contexts=cfg.contexts).current()


def test_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAVENCONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".graven" / "config"
    monkeypatch.setenv("GRAVENCONFIG", str(tmp_path / "env"))
    assert default_path() == tmp_path / "env"
    assert default_path(tmp_path / "flag") == tmp_path / "flag"
    with pytest.raises(NotFound, match=r"no client config at .*env.*gen config"):
        load()


def test_save_is_0600_and_atomic(tmp_path: Path, secrets: ClusterSecrets) -> None:
    path = tmp_path / "sub" / "config"
    two_contexts(secrets).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    cfg = load(path)
    cfg.context = "b"
    cfg.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path).context == "b"
    assert os.listdir(path.parent) == ["config"]


def test_merge_renames_taken_names(secrets: ClusterSecrets) -> None:
    cfg = two_contexts(secrets)
    other = ClientConfig(context="b", contexts={"b": Context(endpoints=["x"]), "c": Context(endpoints=["y"])})
    assert cfg.merge(other) == {"b": "b-1", "c": "c"}
    assert cfg.context == "b-1"
    assert cfg.contexts["b-1"].endpoints == ["x"]
    assert cfg.contexts["b"].endpoints == ["10.0.0.2:50001"]


def test_config_commands(tmp_path: Path, secrets: ClusterSecrets, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gravenconfig"
    two_contexts(secrets).save(path)
    monkeypatch.setenv("GRAVENCONFIG", str(path))  # the env var is used when --gravenconfig is not given

    assert main(["config", "contexts", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["current"], c["certificate"]["roles"]) for c in doc["contexts"]] == [
        ("a", True, ["os:admin"]), ("b", False, ["os:reader"])]

    assert main(["config", "context", "b"]) == 0
    assert load(path).context == "b"
    assert main(["config", "context", "nope"]) == 1
    assert "context 'nope' not found" in capsys.readouterr().err

    assert main(["config", "endpoint", "10.1.1.1", "10.1.1.2:7"]) == 0
    assert main(["config", "node", "10.1.1.9,10.1.1.8"]) == 0
    ctx = load(path).contexts["b"]
    assert (ctx.endpoints, ctx.nodes) == (["10.1.1.1", "10.1.1.2:7"], ["10.1.1.9", "10.1.1.8"])
    assert main(["config", "endpoint", "bad:port"]) == 1
    assert main(["config", "node"]) == 0
    assert load(path).contexts["b"].nodes == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    capsys.readouterr()
    assert main(["--context", "a", "config", "info"]) == 0
    out = capsys.readouterr().out
    assert "context    a" in out and "os:admin" in out and "10.0.0.1" in out
    assert main(["config", "info", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "b"

    assert main(["config", "contexts"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["CURRENT", "NAME", "ENDPOINTS", "NODES", "ROLES", "EXPIRES"]

    other = tmp_path / "other"
    ClientConfig(context="a", contexts={"a": secrets.client_context(["10.9.9.9"])}).save(other)
    assert main(["--gravenconfig", str(path), "config", "merge", str(other)]) == 0
    assert "merged context a-1 (renamed: a was taken)" in capsys.readouterr().out
    merged = load(path)
    assert merged.context == "a-1" and merged.contexts["a-1"].endpoints == ["10.9.9.9"]


def test_merge_into_a_new_file(tmp_path: Path, secrets: ClusterSecrets) -> None:
    src = tmp_path / "src"
    two_contexts(secrets).save(src)
    dst = tmp_path / "new" / "config"
    assert main(["--gravenconfig", str(dst), "config", "merge", str(src)]) == 0
    assert sorted(_clientconfig.load(dst).contexts) == ["a", "b"]
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600


def test_atomic_write_is_private_and_names_the_file_it_cannot_write(tmp_path: Path) -> None:
    atomic_write = _clientconfig.atomic_write
    target = tmp_path / "new" / "config"
    atomic_write(target, b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["config"]  # no temp left
    assert (target.stat().st_mode & 0o777, target.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    with pytest.raises(InvalidRequest, match=r"^/proc/graven/config: cannot write: No such file or directory$"):
        atomic_write("/proc/graven/config", b"x")
