from __future__ import annotations

import ast
import json
import pathlib
import sys

import config
from config import schema

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_committed_schema_is_current():
    path = ROOT / "specs" / "config.schema.json"
    assert path.read_text() == schema.render(), "stale: regenerate with `python -m config.schema`"
    assert schema.main(["--check", str(path)]) == 0


def test_check_flags_a_stale_file_and_main_writes_it(tmp_path, capsys):
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    assert schema.main(["--check", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    assert schema.main([str(stale)]) == 0
    assert schema.main(["--check", str(stale)]) == 0


def test_schema_shape():
    s = json.loads(schema.render())
    assert s["$schema"].endswith("2020-12/schema")
    defs = s["$defs"]
    assert all(d.get("additionalProperties") is False for d in defs.values())
    assert defs["MachineConfig"]["required"] == ["version", "machine", "cluster"]
    assert defs["Machine"]["properties"]["type"]["enum"] == ["controlplane", "worker"]
    assert "certSANs" in defs["Machine"]["properties"]
    assert set(defs["Install"]["properties"]) == {"disk", "image", "wipe", "trustedKeys"}
    assert {"checkpointEvery", "sinks"} == set(defs["Audit"]["properties"])
    key = defs["CA"]["properties"]["key"]["anyOf"][0]
    assert key["writeOnly"] is True
    mtu = defs["Interface"]["properties"]["mtu"]["anyOf"][0]
    assert (mtu["minimum"], mtu["maximum"]) == (68, 65535)


def test_secret_paths():
    assert config.secret_paths() == ["machine.ca.key", "cluster.etcd.ca.key"]


ALLOWED = {"msgspec", "yaml", "jsonpatch", "errors", "__future__"}


def test_config_imports_only_stdlib_msgspec_yaml_jsonpatch_and_errors():
    for path in (ROOT / "config").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                ok = name in ALLOWED or top in ALLOWED or top in sys.stdlib_module_names
                assert ok, f"{path.name} imports {name}"
