"""A route whose network has the wrong type is one error at that path, not also a gateway family error
(``ipaddress`` takes the int 0 for 0.0.0.0, which made an IPv6 gateway look mismatched; found by hypothesis)."""

from __future__ import annotations

import yaml
from config_fixtures import valid_yaml

import config


def test_a_wrong_typed_route_network_is_named_alone() -> None:
    tree = yaml.safe_load(valid_yaml())
    iface = tree["machine"]["network"]["interfaces"][0]
    iface["routes"] = [{"network": 0, "gateway": "2001:db8::1"}]
    v = config.validate(yaml.safe_dump(tree))
    assert [p.path for p in v.errors] == ["machine.network.interfaces[0].routes[0].network"]
