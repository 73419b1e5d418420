"""The ports the sequencer's tasks talk through. Small on purpose: only what a task needs.

Adapters (``storage``, ``image``, ``node``) implement them; ``sequencer.memory`` holds in-memory ones for the
core's tests. Calls are synchronous (the adapters do blocking I/O); tasks run them off the event loop.
``EventLog`` (from ``events``) and ``Clock`` (``events.Clock``: ``time_ns``, ``monotonic_ns``) complete the set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from boot import BootEnv, Slot
from config import Interface, MachineConfig
from events import Clock, Event, EventLog

__all__ = [
    "BootEnvStore",
    "Clock",
    "Disk",
    "EventLog",
    "Identity",
    "Image",
    "Images",
    "Network",
    "Power",
    "RunningImage",
    "Services",
    "Sinks",
    "Slots",
]

class BootEnvStore(Protocol):
    """META: the boot environment shared with the bootloader (``boot.BootEnv``, changed only by ``boot``'s rules)."""

    def load(self) -> BootEnv | None:
        """The current environment; None on a blank META (a fresh disk)."""
        ...

    def store(self, env: BootEnv) -> None:
        """Replace the environment; durable (torn-write safe) when it returns."""
        ...


class Image(Protocol):
    """A verified image (``image.VerifiedImage``): only ``Images.verify`` makes one."""

    @property
    def version(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    @property
    def payload_sha256(self) -> bytes: ...


@dataclass(frozen=True)
class RunningImage:
    """What this boot runs, as measured by the bootloader before it started the agent."""

    slot: str | None
    version: str
    digest: str  # hex SHA-256 of the payload


class Images(Protocol):
    def verify(self, source: str, trusted_keys: Sequence[bytes]) -> Image:
        """Fetch ``source`` and verify it against the keys; ``BadImage`` or ``UntrustedKey`` if it fails."""
        ...

    def running(self) -> RunningImage: ...


class Disk(Protocol):
    """The machine disk, partitions by label (``EFI``, ``BOOT-A``, ``BOOT-B``, ``META``, ``STATE``, ``EPHEMERAL``)."""

    @property
    def kind(self) -> str:
        """``sandbox`` (files and folders) or ``block`` (a GPT disk): for people; ask the capabilities."""
        ...

    @property
    def makes_filesystems(self) -> bool:
        """Install formats its partitions (a block disk); a sandbox's partitions are folders."""
        ...

    def is_partitioned(self) -> bool: ...

    def check_install_disk(self, device: str) -> None:
        """``InvalidConfig`` (at ``machine.install.disk``) unless ``device`` names this disk; a sandbox, which
        has no device, takes any name."""
        ...

    def partition(self) -> None: ...

    def format(self, labels: Sequence[str]) -> None: ...

    def wipe(self, labels: Sequence[str]) -> None: ...

    def verify_slot(self, slot: str, trusted_keys: Sequence[bytes]) -> Image:
        """Verify the image the slot holds (signature, payload digest, slot record); ``BadImage`` if it fails."""
        ...

    def read(self, label: str, name: str) -> bytes | None:
        """A file on a filesystem partition (STATE: ``config.yaml``, ``staged.yaml``); None if absent."""
        ...

    def write(self, label: str, name: str, data: bytes) -> None:
        """Write a file atomically and durably (temp file, fsync, rename)."""
        ...

    def remove(self, label: str, name: str) -> None: ...


class Slots(Protocol):
    """The A/B slots. ``install`` is the one way an image reaches a slot (``image.plan_install`` and
    ``image.install``, RAUC's protocol): only an ``Images.verify`` image is written."""

    def install(self, image: Image, running: Slot | None) -> Slot:
        """Write ``image`` into the slot that is not ``running`` (``boot.install_target``; nothing running: slot
        A, a fresh install): take that slot out of service in META first (``boot.mark_bad``), so that a write cut
        off half-way is never booted, fallen back to or rolled back to; then write it, read it back and record
        it. Returns the slot written; arming it is the caller's (``boot.arm``, ``boot.installed``). META may have
        changed when it raises."""
        ...


class Network(Protocol):
    def configure(self, interfaces: Sequence[Interface]) -> None:
        """Bring links up with their MTU, addresses and routes; idempotent."""
        ...

    def set_hostname(self, hostname: str) -> None: ...

    def set_resolvers(self, nameservers: Sequence[str]) -> None: ...


class Services(Protocol):
    """The agent's services (the API server, the health service). The sequencer keeps the start order."""

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def healthy(self, name: str) -> bool: ...


class Power(Protocol):
    """Carries out a power action at once. The runner calls it only after the sequence that asked for it has
    ended and every event of it, the final checkpoint included, is durable."""

    def reboot(self) -> None: ...

    def power_off(self) -> None: ...


class Identity(Protocol):
    """The node's log key on STATE, certified by the machine CA."""

    def load(self) -> str | None:
        """The key id, or None before install."""
        ...

    def create(self, config: MachineConfig) -> str:
        """Make the key, certify it with ``machine.ca``, store it on STATE; the log rotates to it."""
        ...


class Sinks(Protocol):
    def ship(self, sinks: Sequence[str], events: Iterable[Event]) -> int:
        """Copy the log to the audit sinks (``machine.audit.sinks``); returns the number of events shipped."""
        ...
