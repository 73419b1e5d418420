from __future__ import annotations

import json

import pytest
import yaml
from config_fixtures import keys, replace_line, valid_yaml

import config
from config import _load
from errors import GravenError, InvalidConfig


def errors(text: str) -> list[tuple[str, int | None]]:
    return [(p.path, p.line) for p in config.validate(text).errors]


def test_valid_document_loads_without_warnings(text):
    result = config.validate(text)
    assert result.ok and result.errors == () and result.warnings == ()
    cfg = result.config
    assert cfg is not None
    assert cfg.machine.network.interfaces[0].routes[0].gateway == "10.0.0.1"
    assert cfg.machine.audit.checkpoint_every == 500
    assert cfg.machine.ca.key_pem() == keys()["key_pem"].encode()
    assert cfg.machine.install is not None
    assert cfg.machine.install.trusted_public_keys() == (bytes.fromhex(keys()["pub_raw"]),)


def test_uses_the_c_parser_when_available():
    if hasattr(yaml, "CSafeLoader"):
        assert issubclass(_load._Loader, yaml._yaml.CParser)


@pytest.mark.parametrize(
    ("lineno", "new", "path", "fragment"),
    [
        (3, "type: master", "machine.type", "one of: controlplane, worker"),
        (1, "version: v2", "version", "one of: v1alpha1"),
        (5, "crt: hello", "machine.ca.crt", "PEM certificate"),
        (6, "key: sha256:00", "machine.ca.key", "redacted"),
        (7, "certSANs: [10.0.0.2, 'not a name']", "machine.certSANs[1]", "neither an IP address nor a DNS name"),
        (9, "disk: sda", "machine.install.disk", "device path"),
        (11, "wipe: maybe", "machine.install.wipe", "expected a boolean"),
        (13, "- AAAA", "machine.install.trustedKeys[0]", "Ed25519"),
        (15, "hostname: -node", "machine.network.hostname", "not a valid hostname"),
        (16, "nameservers: [1.1.1.1, 1.1.1]", "machine.network.nameservers[1]", "not a valid IP address"),
        (18, "- interface: eth0/1", "machine.network.interfaces[0].interface", "interface name"),
        (19, "addresses: [10.0.0.2/24, 10.0.0.300/24]", "machine.network.interfaces[0].addresses[1]", "CIDR"),
        (19, "addresses: [10.0.0.2]", "machine.network.interfaces[0].addresses[0]", "no prefix length"),
        (19, "addresses: 10.0.0.2/24", "machine.network.interfaces[0].addresses", "expected a list"),
        (20, "mtu: 10", "machine.network.interfaces[0].mtu", "out of range (68 to 65535)"),
        (20, "mtu: 70000", "machine.network.interfaces[0].mtu", "out of range"),
        (20, "mtu: '1500'", "machine.network.interfaces[0].mtu", "expected an integer"),
        (22, "- network: 10.0.0.1/8", "machine.network.interfaces[0].routes[0].network", "host bits set"),
        (22, "- network: default", "machine.network.interfaces[0].routes[0].network", "prefix length"),
        (23, "gateway: 10.0.0", "machine.network.interfaces[0].routes[0].gateway", "not a valid IP address"),
        (23, "gateway: fd00::1", "machine.network.interfaces[0].routes[0].gateway", "is IPv6 but network"),
        (23, "gateway: 224.0.0.1", "machine.network.interfaces[0].routes[0].gateway", "not a unicast"),
        (24, "metric: -5", "machine.network.interfaces[0].routes[0].metric", "out of range"),
        (25, "- interface: eth0", "machine.network.interfaces[1].interface", "duplicate interface 'eth0'"),
        (26, "dhcp: 1", "machine.network.interfaces[1].dhcp", "expected a boolean"),
        (28, "checkpointEvery: 0", "machine.audit.checkpointEvery", "out of range"),
        (29, "sinks: [relative/dir]", "machine.audit.sinks[0]", "audit sink"),
        (31, "name: 'bad name'", "cluster.name", "cluster name"),
        (32, "endpoint: ftp://x", "cluster.endpoint", "endpoint"),
        (32, "endpoint: https://10.0.0.2:99999", "cluster.endpoint", "port"),
        (32, "endpoint: 2024-01-01", "cluster.endpoint", "a date"),
        (15, "hostname: no", "machine.network.hostname", "got a boolean (false); quote it"),
        (15, "hostnme: node1", "machine.network.hostnme", "did you mean 'hostname'"),
        (28, "extra: 2", "machine.audit.extra", "unknown key 'extra'"),
        (16, "hostname: node2", "machine.network.hostname", "duplicate key"),
    ],
)
def test_each_error_names_its_path_and_line(text, lineno, new, path, fragment):
    result = config.validate(replace_line(text, lineno, new))
    assert [(p.path, p.line) for p in result.errors] == [(path, lineno)], result.errors
    assert fragment in result.errors[0].message
    assert result.config is None


def test_missing_required_keys_point_at_the_parent(text):
    lines = text.splitlines()
    without_type = "\n".join(line for i, line in enumerate(lines, 1) if i not in (3, 31))
    assert errors(without_type) == [("machine.type", 2), ("cluster.name", 29)]


def test_missing_sections_and_install_disk():
    assert errors("version: v1alpha1\n") == [("machine", 1), ("cluster", 1)]
    text = replace_line(valid_yaml(), 9, "image: x.img")
    assert ("machine.install.disk", 8) in errors(text)


def test_every_error_is_returned_at_once(text):
    for lineno, new in [(3, "type: master"), (16, "nameservers: [x]"), (20, "mtu: 1"), (25, "- interface: eth0")]:
        text = replace_line(text, lineno, new)
    text = text.replace("  name: test-cluster\n", "  name: test-cluster\n  colour: blue\n")
    assert errors(text) == [
        ("machine.type", 3),
        ("machine.network.nameservers[0]", 16),
        ("machine.network.interfaces[0].mtu", 20),
        ("machine.network.interfaces[1].interface", 25),
        ("cluster.colour", 32),
    ]


def test_invalid_config_error_carries_every_problem(text):
    bad = replace_line(replace_line(text, 3, "type: master"), 20, "mtu: 1")
    with pytest.raises(InvalidConfig) as info:
        config.load(bad, name="node1.yaml")
    exc = info.value
    assert isinstance(exc, GravenError) and exc.code.name == "INVALID_CONFIG"
    assert [e["path"] for e in exc.details["errors"]] == ["machine.type", "machine.network.interfaces[0].mtu"]
    assert set(exc.details["errors"][0]) == {"path", "line", "message"}
    assert str(exc).splitlines()[0] == "node1.yaml: invalid machine config: 2 errors"
    assert "  - machine.network.interfaces[0].mtu (line 20): 1 is out of range (68 to 65535)" in str(exc)
    assert exc.to_dict()["details"]["errors"][1]["line"] == 20


@pytest.mark.parametrize(
    ("doc", "fragment", "line"),
    [
        ("version: v1alpha1\n---\nversion: v1alpha1\n", "single YAML document", 2),
        ("", "empty", None),
        ("# only a comment\n", "empty", None),
        ("- version: v1alpha1\n", "mapping at the top level, not a list", 1),
        ("just text\n", "mapping at the top level, not a scalar", 1),
        ("version: v1alpha1\nmachine: [\n", "not valid YAML", 3),
        ("version: v1alpha1\n\tmachine: {}\n", "not valid YAML", 2),
        (b"version: \x80abc\n", "not valid YAML", None),
    ],
)
def test_document_level_errors(doc, fragment, line):
    result = config.validate(doc)
    assert len(result.errors) == 1
    assert result.errors[0].path == "" and fragment in result.errors[0].message
    assert result.errors[0].line == line
    assert str(result.errors[0]).startswith("(document)")


def test_non_string_keys_and_wrong_container_types():
    doc = "version: v1alpha1\n1: x\nmachine: [a]\ncluster: 5\n"
    assert [(p.path, p.line) for p in config.validate(doc).errors] == [("['1']", 2), ("machine", 3), ("cluster", 4)]


def test_warnings():
    text = valid_yaml()
    text = text.replace("    hostname: node1\n", "")
    text = text.replace("    key: " + keys()["key_b64"] + "\n", "")
    text = text.replace("    trustedKeys:\n      - " + keys()["pub_raw_b64"] + "\n", "")
    text = text.replace("    sinks: [/var/lib/graven/audit, https://audit.example.com/upload]\n", "")
    text = text.replace("        dhcp: true", "        dhcp: false")
    result = config.validate(text)
    assert result.ok, result.errors
    assert {p.path for p in result.warnings} == {
        "machine.network.interfaces[1]",
        "machine.network.hostname",
        "machine.ca.key",
        "machine.install.trustedKeys",
        "machine.audit.sinks",
    }
    assert all(p.message for p in result.warnings)


def test_gateway_off_link_is_a_warning(text):
    result = config.validate(replace_line(text, 23, "gateway: 192.168.9.1"))
    assert result.ok
    assert [(p.path, p.line) for p in result.warnings] == [("machine.network.interfaces[0].routes[0].gateway", 23)]


def test_duplicate_address_across_interfaces(text):
    text = text.replace("        dhcp: true", "        addresses: [10.0.0.2/16]")
    assert errors(text) == [("machine.network.interfaces[1].addresses[0]", 26)]


def test_pem_and_base64_forms_are_both_accepted():
    k = keys()
    text = valid_yaml().replace(k["crt_b64"], "|\n      " + k["crt_pem"].replace("\n", "\n      ").rstrip())
    text = text.replace(k["pub_raw_b64"], "|\n          " + k["pub_pem"].replace("\n", "\n          ").rstrip())
    cfg = config.load(text)
    assert cfg.machine.ca.crt_pem().strip() == k["crt_pem"].strip().encode()
    assert cfg.machine.install is not None
    assert cfg.machine.install.trusted_public_keys() == (bytes.fromhex(k["pub_raw"]),)


def test_wrong_pem_kind_is_named():
    k = keys()
    text = valid_yaml().replace(k["crt_b64"], k["key_b64"])
    [problem] = config.validate(text).errors
    assert problem.path == "machine.ca.crt" and "PRIVATE KEY" in problem.message


def test_validate_a_built_config_and_a_broken_one(cfg):
    assert config.validate(cfg).ok
    import msgspec

    broken = msgspec.structs.replace(
        cfg, machine=msgspec.structs.replace(cfg.machine, cert_sans=("ok.example", "no way"))
    )
    assert [(p.path, p.line) for p in config.validate(broken).errors] == [("machine.certSANs[1]", None)]


def test_format_path():
    assert config.format_path(("machine", "network", "interfaces", 1, "addresses", 0)) == (
        "machine.network.interfaces[1].addresses[0]"
    )
    assert config.format_path(("machine", "a.b")) == "machine['a.b']"
    assert config.format_path(()) == ""


@pytest.mark.parametrize(
    "value", ["hunter2-secret", "-----BEGIN PRIVATE KEY-----\nhunter2é\n-----END PRIVATE KEY-----"]
)
def test_an_invalid_secret_is_not_echoed(text, value):
    bad = text.replace("key: " + keys()["key_b64"], "key: " + json.dumps(value))
    [problem] = config.validate(bad).errors
    assert problem.path == "machine.ca.key" and problem.line == 6
    assert "hunter2" not in problem.message


def test_non_ascii_pem_is_an_error(text):
    bad = text.replace(
        "crt: " + keys()["crt_b64"], 'crt: "-----BEGIN CERTIFICATE-----\\né\\n-----END CERTIFICATE-----"'
    )
    [problem] = config.validate(bad).errors
    assert problem.path == "machine.ca.crt" and "non-ASCII" in problem.message
