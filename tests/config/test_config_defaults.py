from __future__ import annotations

from config_fixtures import keys

import config


def test_default_config_is_valid_and_round_trips():
    k = keys()
    cfg = config.default_config("demo", "https://127.0.0.1:50000", k["crt_pem"].encode(), k["key_pem"], [k["pub_pem"]])
    result = config.validate(cfg)
    assert result.ok, result.errors
    assert [p.path for p in result.warnings] == ["machine.audit.sinks"]
    assert cfg.machine.type == "controlplane"
    assert cfg.machine.ca.crt_pem() == k["crt_pem"].encode()
    assert cfg.machine.ca.key_pem() == k["key_pem"].encode()
    assert cfg.machine.install is not None
    assert cfg.machine.install.trusted_public_keys() == (bytes.fromhex(k["pub_raw"]),)
    assert cfg.machine.cert_sans == ("127.0.0.1", "localhost")
    assert cfg.machine.network.hostname == "demo"
    text = config.dump_yaml(cfg)
    assert text.startswith("version: v1alpha1\nmachine:\n  type: controlplane\n")
    assert config.load(text) == cfg


def test_default_config_options():
    k = keys()
    cfg = config.default_config(
        "my_cluster", "node.example:50000", k["crt_pem"], None, [k["pub_raw_b64"]],
        machine_type="worker", sinks=["/srv/audit"], install_image="graven.img",
    )  # fmt: skip
    result = config.validate(cfg)
    assert result.ok, result.errors
    assert {p.path for p in result.warnings} == {"machine.ca.key", "machine.network.hostname"}
    assert cfg.machine.cert_sans[0] == "node.example"
    assert cfg.machine.install is not None and cfg.machine.install.image == "graven.img"


def test_dump_yaml_writes_pem_as_literal_blocks():
    k = keys()
    cfg = config.load(config.dump_yaml(config.default_config("d", "d:1", k["crt_pem"], None, [])))
    import msgspec

    pem = msgspec.structs.replace(cfg.machine.ca, crt=k["crt_pem"])
    cfg = msgspec.structs.replace(cfg, machine=msgspec.structs.replace(cfg.machine, ca=pem))
    text = config.dump_yaml(cfg)
    assert "crt: |\n      -----BEGIN CERTIFICATE-----\n" in text
    assert config.load(text) == cfg
