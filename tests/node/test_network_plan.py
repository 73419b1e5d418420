"""The parts of the network adapter that need no root: the sandbox's rows for the ``Network`` RPC, the error
translation at the netlink boundary, the platform choice without root, and ``gravenctl status``'s drift cell."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from cli._node import _drift_cell
from errors import InvalidRequest, NotFound, OperationalError, PermissionDenied
from node._net_live import _translate
from node._network import plan_rows, select_network
from node._ports import PlanNetwork

PLAN = {"links": [{"interface": "eth0", "addresses": ["198.18.0.2/24"], "mtu": 1400, "dhcp": False,
                   "routes": [{"network": "198.19.0.0/24", "gateway": "198.18.0.1", "metric": 5}]}],
        "hostname": "n1", "resolvers": []}


def test_plan_rows_have_the_live_shape_and_say_planned() -> None:
    assert plan_rows(PLAN, "links") == [{"interface": "eth0", "up": None, "mtu": 1400, "planned": True}]
    assert plan_rows(PLAN, "addresses") == [{"interface": "eth0", "address": "198.18.0.2/24", "planned": True}]
    assert plan_rows(PLAN, "routes") == [{"interface": "eth0", "network": "198.19.0.0/24", "gateway": "198.18.0.1",
                                          "metric": 5, "planned": True}]
    assert plan_rows(PLAN, "drift") == []
    with pytest.raises(InvalidRequest):
        plan_rows(PLAN, "neighbours")


class _NetlinkError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code, "x")
        self.code = code


@pytest.mark.parametrize(("code", "cls"), [(errno.ENODEV, NotFound), (errno.EPERM, PermissionDenied),
                                           (errno.ENETUNREACH, InvalidRequest), (errno.EBUSY, OperationalError)])
def test_netlink_errors_become_graven_errors_naming_the_interface(code: int, cls: type) -> None:
    err = _translate(_NetlinkError(code), "eth1", "add route 198.19.0.0/24")
    assert type(err) is cls
    assert err.message.startswith("eth1: add route 198.19.0.0/24: ")
    assert err.details == {"interface": "eth1", "errno": code, "errno_name": errno.errorcode[code]}


def test_sandbox_is_the_default_outside_a_node_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setenv("GRAVEN_PLATFORM", "sandbox")
    choice = select_network(lambda k, p: events.append((k, p)), resolv_conf=None)
    assert isinstance(choice.port, PlanNetwork) and choice.platform == "sandbox"
    assert "recorded, not applied" in choice.reason
    monkeypatch.setenv("GRAVEN_PLATFORM", "auto")
    assert select_network(lambda k, p: None, resolv_conf=None).platform == "sandbox"  # tests run in the host's


def test_drift_cell() -> None:
    assert _drift_cell({"drift": None}) is None
    assert _drift_cell({"drift": []}) == "none"
    assert _drift_cell({"drift": [{"interface": "eth0", "kind": "mtu", "want": 1400, "have": 1500},
                                  {"interface": None, "kind": "hostname", "want": "a", "have": "b"}]}) == \
        "2: eth0 mtu: want 1400, have 1500 ..."
    assert _drift_cell({"drift": None, "drift_error": "netlink: no answer"}) == "unknown: netlink: no answer"
