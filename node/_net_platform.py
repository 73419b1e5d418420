"""Which ``Network`` port the agent uses: the netlink adapter where the node owns its links (root, in a network
namespace that is not the host's; ``GRAVEN_PLATFORM=netns`` forces it, ``GRAVEN_PLATFORM=sandbox`` forbids it),
else the sandbox's ``PlanNetwork``, which only records the plan."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from errors import (
    InvalidRequest,
)

if TYPE_CHECKING:  # the supervisor asks in_own_namespace at every boot: it need not import the network plan
    from ._net_plan import Emit, NodeNetwork, PathSource

__all__ = ["PLATFORM_ENV", "NetworkChoice", "in_own_namespace", "select_network"]

PLATFORM_ENV = "GRAVEN_PLATFORM"  # netns | sandbox | auto (default)


# -- platform choice -----------------------------------------------------------------------------------------
_INIT_INO = {"uts": 0xEFFFFFFE, "net": 0xEFFFFFF9}  # the kernel's fixed inode numbers of its first namespaces
NETNS_DIR = Path("/run/netns")


def in_own_namespace(kind: str) -> bool:
    """True when this process's ``kind`` namespace (``net`` or ``uts``) is provably not the host's.

    Where PID 1's namespace can be read (root, with ptrace rights over it), that is the comparison. Where it
    cannot (some VMs deny it even to root): a network namespace is the node's when it is a named one
    (``ip netns``, ``/run/netns``); a UTS namespace when it is not the kernel's first one and the network
    namespace is the node's. Anything else is the host's: the sandbox. PID 1 of a container machine
    (``node._launch``) always has its own UTS namespace; its network is what the supervisor says (GRAVEN_PLATFORM).
    """
    if kind == "uts" and os.getpid() == 1:
        from ._pid1 import is_pid1

        if is_pid1():
            return True
    try:
        return os.readlink(f"/proc/self/ns/{kind}") != os.readlink(f"/proc/1/ns/{kind}")
    except OSError:
        pass
    try:
        mine = os.stat(f"/proc/self/ns/{kind}")
    except OSError:
        return False
    if kind == "net":
        return _named_netns(mine)
    return mine.st_ino != _INIT_INO.get(kind) and in_own_namespace("net")


def _named_netns(mine: os.stat_result) -> bool:
    try:
        entries = list(NETNS_DIR.iterdir())
    except OSError:
        return False
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return True
    return False


@dataclass(frozen=True)
class NetworkChoice:
    """The ``Network`` port the agent uses, which platform it is, and why (the agent prints it at boot)."""

    port: NodeNetwork
    platform: str  # "netns" or "sandbox"
    reason: str


def select_network(emit: Emit, *, resolv_conf: PathSource, record: PathSource = None,
                   platform: str | None = None) -> NetworkChoice:
    """The netlink adapter where the node owns its links, else the sandbox ``PlanNetwork``.

    ``platform`` (default: ``$GRAVEN_PLATFORM``, else ``auto``): ``netns`` forces netlink, ``sandbox`` the plan;
    ``auto`` takes netlink only as root in a network namespace that is not PID 1's.
    """
    from ._network import NetlinkNetwork
    from ._ports import PlanNetwork

    wanted = (platform or os.environ.get(PLATFORM_ENV) or "auto").strip().lower()
    if wanted not in ("auto", "netns", "sandbox"):
        raise InvalidRequest(f"{PLATFORM_ENV}={wanted!r}: expected netns, sandbox or auto", platform=wanted)
    root = os.geteuid() == 0
    own_net = root and in_own_namespace("net")
    if wanted == "netns" or (wanted == "auto" and root and own_net):
        why = (f"netns platform: links, addresses and routes applied with netlink in network namespace "
               f"{_ns_id('net')}" + (f" ({PLATFORM_ENV}=netns)" if wanted == "netns" else ""))
        if not root:
            why += "; not root: changes will be refused"
        return NetworkChoice(NetlinkNetwork(emit, resolv_conf=resolv_conf, record=record), "netns", why)
    if wanted == "sandbox":
        why = f"sandbox platform ({PLATFORM_ENV}=sandbox): the network plan is recorded, not applied"
    elif not root:
        why = "sandbox platform (not root): the network plan is recorded, not applied"
    else:
        why = ("sandbox platform (root, but in the host's network namespace): the network plan is recorded, "
               "not applied")
    return NetworkChoice(PlanNetwork(emit), "sandbox", why)


def _ns_id(kind: str) -> str:
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return "?"
