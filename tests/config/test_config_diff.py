from __future__ import annotations

import json

import msgspec
from config_fixtures import keys

import config


def with_key(cfg: config.MachineConfig, key: str | None) -> config.MachineConfig:
    ca = msgspec.structs.replace(cfg.machine.ca, key=key)
    return msgspec.structs.replace(cfg, machine=msgspec.structs.replace(cfg.machine, ca=ca))


def test_diff_of_equal_configs_is_empty(cfg):
    assert config.diff(cfg, cfg) == []
    assert config.diff(cfg, config.load(config.dump_yaml(cfg))) == []


def test_diff_paths_ops_and_values(cfg):
    new = config.apply_patch(
        cfg,
        config.load_patch(
            [
                {"op": "replace", "path": "/machine/network/hostname", "value": "node2"},
                {"op": "add", "path": "/machine/network/interfaces/0/addresses/-", "value": "10.0.0.3/24"},
                {"op": "remove", "path": "/machine/network/interfaces/0/mtu"},
                {"op": "add", "path": "/machine/network/interfaces/-", "value": {"interface": "eth2", "dhcp": True}},
                {"op": "remove", "path": "/machine/install/image"},
            ]
        ),
    )
    changes = {c.path: c for c in config.diff(cfg, new)}
    assert set(changes) == {
        "machine.install.image",
        "machine.network.hostname",
        "machine.network.interfaces[0].addresses",
        "machine.network.interfaces[0].mtu",
        "machine.network.interfaces[2]",
    }
    assert changes["machine.network.hostname"].to_dict() == {
        "path": "machine.network.hostname",
        "op": "replace",
        "old": "node1",
        "new": "node2",
    }
    assert changes["machine.network.interfaces[0].mtu"].op == "remove"
    assert changes["machine.network.interfaces[0].mtu"].old == 1500
    assert changes["machine.network.interfaces[2]"].op == "add"
    assert changes["machine.network.interfaces[2]"].new == {"interface": "eth2", "dhcp": True}
    assert changes["machine.network.interfaces[0].addresses"].new[-1] == "10.0.0.3/24"
    assert [c.path for c in config.diff(new, cfg)] != []


def test_diff_from_nothing_adds_everything(cfg):
    assert [(c.path, c.op) for c in config.diff(None, cfg)] == [
        ("version", "add"),
        ("machine", "add"),
        ("cluster", "add"),
    ]
    assert {(c.path, c.op) for c in config.diff(cfg, None)} == {
        ("version", "remove"),
        ("machine", "remove"),
        ("cluster", "remove"),
    }


def test_secrets_never_appear_in_clear(cfg):
    secret = cfg.machine.ca.key
    assert secret is not None
    other = with_key(cfg, keys()["key_pem"])
    for changes in (config.diff(cfg, other), config.diff(None, cfg), config.diff(cfg, with_key(cfg, None))):
        text = json.dumps([c.to_dict() for c in changes]) + repr(changes)
        assert secret not in text and keys()["key_pem"] not in text
        assert "sha256:" in text
    [change] = config.diff(cfg, other)
    assert change.path == "machine.ca.key" and change.op == "replace"
    assert change.old == config.secret_digest(secret)
    assert secret not in repr(cfg) and secret not in str(cfg) and secret not in repr(cfg.machine.ca)
    assert config.secret_digest(secret) in repr(cfg)


def test_redact(cfg):
    red = config.redact(cfg)
    assert red.machine.ca.key == config.secret_digest(cfg.machine.ca.key)
    assert red.machine.ca.crt == cfg.machine.ca.crt
    assert cfg.machine.ca.key not in config.dump_yaml(red)
    assert config.redacted_dict(cfg)["machine"]["ca"]["key"] == red.machine.ca.key
    # a redacted config cannot be applied by mistake
    assert [p.path for p in config.validate(red).errors] == ["machine.ca.key"]
    assert config.redact(with_key(cfg, None)).machine.ca.key is None


def test_digest_and_canonical(cfg):
    d = config.digest(cfg)
    assert d.startswith("sha256:") and len(d) == 7 + 64
    assert d == config.digest(config.load(config.dump_yaml(cfg)))
    assert d != config.digest(with_key(cfg, keys()["key_pem"]))
    assert json.loads(config.canonical(cfg)) == config.to_dict(cfg)
    assert config.canonical(cfg) == config.canonical(config.load(config.dump_yaml(cfg)))
