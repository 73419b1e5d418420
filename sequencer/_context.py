"""What a task gets: the ports, the node's runtime state, the request, the actor, and a cancellation token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from boot import BootEnv
from config import MachineConfig
from errors import Cancelled, InvalidRequest
from events import Actor, Event, EventLog
from fsm import NodeFSM, Trigger

from ._model import SequenceName
from ._requests import Request
from .ports import (
    BootEnvStore,
    Clock,
    Disk,
    Identity,
    Image,
    Images,
    Network,
    Power,
    RunningImage,
    Services,
    Sinks,
    Slots,
)

__all__ = ["CancelToken", "Context", "Ports", "Runtime"]

R = TypeVar("R")


class CancelToken:
    """Set when a take-over cancels the run. Tasks check it in loops or await it; the runner checks it
    between phases. Cancelling is cooperative, so a task is never cut off halfway through a write."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(f"cancelled: {self.reason}", reason=self.reason)

    async def wait(self) -> None:
        await self._event.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise ``Cancelled`` as soon as the token is set."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return
        self.check()


@dataclass(frozen=True)
class Ports:
    boot_env: BootEnvStore
    disk: Disk
    slots: Slots
    images: Images
    network: Network
    services: Services
    power: Power
    clock: Clock
    identity: Identity
    sinks: Sinks


@dataclass
class Runtime:
    """What the node knows between sequences (the agent's memory, rebuilt every boot)."""

    config: MachineConfig | None = None  # active
    persisted: MachineConfig | None = None
    staged: MachineConfig | None = None
    boot_env: BootEnv | None = None
    image: RunningImage | None = None
    identity: str | None = None
    services: list[str] = field(default_factory=list)  # in start order


@dataclass
class Context:
    sequence: SequenceName
    request: Request | None
    actor: Actor
    ports: Ports
    log: EventLog
    fsm: NodeFSM
    runtime: Runtime
    cancel: CancelToken
    pending: list[Future[Event]] = field(default_factory=list)  # every event of the run, awaited before it ends
    image: Image | None = None  # the image verify found, for write
    slot: str | None = None  # the slot write filled, for the bootloader to arm
    power: str | None = None  # "reboot" | "power_off", carried out by the runner once all is durable
    sealed: bool = False

    def emit(self, kind: str, payload: Mapping[str, object]) -> Future[Event]:
        """Append an event as the run's actor; the run ends only once it is durable."""
        fut = self.log.submit(kind, payload, self.actor)
        self.pending.append(fut)
        return fut

    def fire(self, trigger: Trigger) -> None:
        self.pending.append(self.fsm.fire(trigger, actor=self.actor).durable)

    def request_as(self, cls: type[R]) -> R:
        if self.request is None:
            return cls()
        if not isinstance(self.request, cls):
            raise InvalidRequest(f"{self.sequence} takes a {cls.__name__}, not {type(self.request).__name__}")
        return self.request

    @property
    def config(self) -> MachineConfig:
        if self.runtime.config is None:
            raise InvalidRequest(f"{self.sequence} needs a machine config and the node has none")
        return self.runtime.config

    async def blocking(self, fn: Callable[..., R], *args: object) -> R:
        """Run a blocking port call off the event loop."""
        return await asyncio.to_thread(fn, *args)
