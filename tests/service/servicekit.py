"""Helpers for the service's tests (a module of its own: ``conftest`` names collide across test folders): fakes of
the service's ports that record what they are asked, and the in-memory node they make up."""

from __future__ import annotations

from dataclasses import dataclass, field

from config import MachineConfig
from errors import QuorumAtRisk
from events import Actor, MemoryEventLog
from fsm import NodeFSM, Stage, Trigger
from sequencer import Ports, SequenceName, Sequencer
from service import NodeService

PATHS: dict[Stage, tuple[Trigger, ...]] = {
    Stage.BOOTING: (),
    Stage.MAINTENANCE: (Trigger.MAINTENANCE,),
    Stage.RUNNING: (Trigger.BOOTED,),
}


@dataclass
class FakeHost:
    durable: bool = True
    adopted: list[str] = field(default_factory=list)
    changed: int = 0

    def log_durable(self) -> bool:
        return self.durable

    def adopt(self, cfg: MachineConfig) -> None:
        self.adopted.append(cfg.cluster.name)

    async def config_changed(self) -> None:
        self.changed += 1


@dataclass
class FakeCluster:
    """Records each check; ``refuse`` names the sequences whose quorum check fails."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def check_quorum(self, sequence: SequenceName, actor: Actor, request_seq: int) -> None:
        self.calls.append((f"quorum:{sequence.value}", request_seq))
        if sequence.value in self.refuse:
            raise QuorumAtRisk(f"{sequence.value} would lose etcd's quorum")

    async def take_upgrade_lock(self, actor: Actor, request_seq: int) -> None:
        self.calls.append(("lock", request_seq))


@dataclass
class FakeNetwork:
    platform: str | None = "netns"
    rows: list[dict[str, object]] | None = field(default_factory=list)

    def drift(self, cfg: MachineConfig) -> list[dict[str, object]] | None:
        return self.rows


@dataclass
class Node:
    log: MemoryEventLog
    fsm: NodeFSM
    ports: Ports
    seq: Sequencer
    service: NodeService
    host: FakeHost
    cluster: FakeCluster
