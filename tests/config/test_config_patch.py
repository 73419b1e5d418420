from __future__ import annotations

import pytest

import config
from errors import InvalidConfig


def test_merge_patch_rfc7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None, "y": 1}}
    assert config.merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {"y": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}  # not modified
    assert config.merge_patch({"a": 1}, ["x"]) == ["x"]
    assert config.merge_patch([1], {"a": None, "b": 2}) == {"b": 2}


def test_yaml_merge_patch_sets_deletes_and_replaces_lists(cfg):
    patch = config.load_patch(
        """
        machine:
          network:
            hostname: node2
            nameservers: [9.9.9.9]
          install: {image: null}
        """.replace("\n        ", "\n")
    )
    assert isinstance(patch, config.MergePatch)
    out = config.apply_patch(cfg, patch)
    assert out.machine.network.hostname == "node2"
    assert out.machine.network.nameservers == ("9.9.9.9",)
    assert out.machine.install is not None and out.machine.install.image is None
    assert out.machine.network.interfaces == cfg.machine.network.interfaces


def test_json_patch_ops(cfg):
    patch = config.load_patch(
        '[{"op": "add", "path": "/machine/certSANs/-", "value": "n.example"},'
        ' {"op": "replace", "path": "/machine/network/interfaces/0/mtu", "value": 9000},'
        ' {"op": "remove", "path": "/machine/network/interfaces/1"},'
        ' {"op": "test", "path": "/cluster/name", "value": "test-cluster"}]'
    )
    assert isinstance(patch, config.JsonPatch)
    out = config.apply_patch(cfg, patch)
    assert out.machine.cert_sans[-1] == "n.example"
    assert out.machine.network.interfaces[0].mtu == 9000
    assert len(out.machine.network.interfaces) == 1


def test_json_patch_in_yaml(cfg):
    patch = config.load_patch("- op: replace\n  path: /machine/network/hostname\n  value: node9\n")
    assert config.apply_patch(cfg, patch).machine.network.hostname == "node9"


def test_patches_apply_in_order(cfg):
    a = config.load_patch({"machine": {"network": {"hostname": "a"}}})
    b = config.load_patch([{"op": "replace", "path": "/machine/network/hostname", "value": "b"}])
    assert config.apply_patch(cfg, a, b).machine.network.hostname == "b"
    assert config.apply_patch(cfg, b, a).machine.network.hostname == "a"


def test_failing_json_patch_op_is_named(cfg):
    patch = config.load_patch(
        [
            {"op": "replace", "path": "/machine/network/hostname", "value": "ok"},
            {"op": "test", "path": "/cluster/name", "value": "other"},
        ]
    )
    with pytest.raises(InvalidConfig) as info:
        config.apply_patch(cfg, patch)
    [err] = info.value.details["errors"]
    assert err["path"] == "patch[1]" and "test /cluster/name" in err["message"]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ("just a string", "patch"),
        ("[1, 2]", "patch[0]"),
        ('[{"op": "add"}]', "patch[0]"),
        ("a: [", "patch"),
    ],
)
def test_bad_patches(data, path):
    with pytest.raises(InvalidConfig) as info:
        config.load_patch(data)
    assert info.value.details["errors"][0]["path"] == path


def test_patched_result_is_revalidated_with_every_error(cfg):
    patch = config.load_patch(
        {"machine": {"type": "boss", "network": {"interfaces": [{"interface": "eth0", "mtu": 1, "colour": "red"}]}}}
    )
    with pytest.raises(InvalidConfig) as info:
        config.apply_patch(cfg, patch)
    paths = [e["path"] for e in info.value.details["errors"]]
    assert paths == ["machine.type", "machine.network.interfaces[0].mtu", "machine.network.interfaces[0].colour"]
    assert str(info.value).startswith("patched config: invalid machine config: 3 errors")


def test_merge_patch_can_create_a_missing_section(cfg):
    import msgspec

    bare = msgspec.structs.replace(cfg, machine=msgspec.structs.replace(cfg.machine, install=None))
    out = config.apply_patch(bare, config.load_patch({"machine": {"install": {"disk": "/dev/vda"}}}))
    assert out.machine.install == config.Install(disk="/dev/vda")
