"""What the service needs beyond the sequencer's ports: small protocols the node implements (``node/agent.py``)
and the tests fake in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from config import MachineConfig
from events import Actor
from sequencer import SequenceName

__all__ = ["BootFacts", "Cluster", "Host", "NetworkView", "NoCluster", "NoNetworkView"]


@dataclass(frozen=True)
class BootFacts:
    """What this boot runs, as the supervisor said (fixed for the agent's life)."""

    boot_id: str
    slot: str | None
    version: str
    digest: str


class Host(Protocol):
    """The node under the service."""

    def log_durable(self) -> bool:
        """Whether the event log is on disk yet (a fresh sandbox node keeps it in memory until it has a key)."""
        ...

    def adopt(self, cfg: MachineConfig) -> None:
        """A sandbox node with no install to come takes its identity now, from its folders (blocking)."""
        ...

    async def config_changed(self) -> None:
        """After a config is applied: what follows the config outside the sequences (the metrics endpoint)."""
        ...


class Cluster(Protocol):
    """The cluster's say before this node goes down (etcd): each raises a recorded refusal, or returns."""

    async def check_quorum(self, sequence: SequenceName, actor: Actor, request_seq: int) -> None: ...

    async def take_upgrade_lock(self, actor: Actor, request_seq: int) -> None: ...


class NetworkView(Protocol):
    """The live network against the config, for status (netlink nodes; None where it cannot be read)."""

    @property
    def platform(self) -> str | None: ...

    def drift(self, cfg: MachineConfig) -> list[dict[str, object]] | None: ...


class NoCluster:
    """A node outside any etcd cluster: nothing to check."""

    async def check_quorum(self, sequence: SequenceName, actor: Actor, request_seq: int) -> None:
        return None

    async def take_upgrade_lock(self, actor: Actor, request_seq: int) -> None:
        return None


class NoNetworkView:
    platform: str | None = None

    def drift(self, cfg: MachineConfig) -> list[dict[str, object]] | None:
        return None
