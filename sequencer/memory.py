"""In-memory ports for the core's tests: they keep what they were told, and can be told to fail."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

import boot
from boot import BootEnv, Slot
from config import Interface, MachineConfig, install_disk_mismatch
from errors import BadImage, StorageError, Unavailable
from events import Event, SystemClock

from ._context import Ports
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

__all__ = [
    "MemoryBootEnv",
    "MemoryDisk",
    "MemoryIdentity",
    "MemoryImage",
    "MemoryImages",
    "MemoryNetwork",
    "MemoryPower",
    "MemoryServices",
    "MemorySinks",
    "MemorySlots",
    "memory_ports",
]


@dataclass
class MemoryBootEnv:
    """META in memory: as on a disk, every store is newer than the one before (``seq``)."""

    state: BootEnv | None = None
    history: list[BootEnv] = field(default_factory=list)

    def load(self) -> BootEnv | None:
        return self.state

    def store(self, env: BootEnv) -> None:
        if self.state is not None and env.seq <= self.state.seq:
            env = msgspec.structs.replace(env, seq=self.state.seq + 1)
        self.state = env
        self.history.append(env)


@dataclass(frozen=True)
class MemoryImage:
    version: str
    key_id: str = "test-key"
    payload_sha256: bytes = b""

    @property
    def digest(self) -> str:
        return self.payload_sha256.hex()

    @classmethod
    def of(cls, version: str) -> MemoryImage:
        return cls(version, payload_sha256=hashlib.sha256(version.encode()).digest())


@dataclass
class MemoryImages:
    """``catalog`` maps a source to the image it holds; a source not in it (or in ``bad``) fails to verify."""

    catalog: dict[str, MemoryImage] = field(default_factory=dict)
    current: RunningImage = field(default_factory=lambda: RunningImage("A", "v1", MemoryImage.of("v1").digest))
    bad: set[str] = field(default_factory=set)
    verified: list[str] = field(default_factory=list)

    def verify(self, source: str, trusted_keys: Sequence[bytes]) -> Image:
        self.verified.append(source)
        if source in self.bad or source not in self.catalog:
            raise BadImage(f"{source}: signature does not verify", source=source)
        return self.catalog[source]

    def running(self) -> RunningImage:
        return self.current


@dataclass
class MemoryDisk:
    kind: str = "sandbox"
    makes_filesystems: bool = False
    partitioned: bool = False
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    slots: dict[str, Image] = field(default_factory=dict)
    formatted: list[tuple[str, ...]] = field(default_factory=list)
    wiped: list[tuple[str, ...]] = field(default_factory=list)
    device: str | None = None  # a block disk's name; None: a sandbox, which takes any

    def is_partitioned(self) -> bool:
        return self.partitioned

    def check_install_disk(self, device: str) -> None:
        if self.device is not None and device != self.device:
            raise install_disk_mismatch(device, self.device)

    def partition(self) -> None:
        self.partitioned = True
        self.files.clear()
        self.slots.clear()

    def format(self, labels: Sequence[str]) -> None:
        self.formatted.append(tuple(labels))

    def wipe(self, labels: Sequence[str]) -> None:
        self.wiped.append(tuple(labels))
        for key in [k for k in self.files if k[0] in labels]:
            del self.files[key]

    def verify_slot(self, slot: str, trusted_keys: Sequence[bytes]) -> Image:
        if slot not in self.slots:
            raise BadImage(f"slot {slot} holds no image", slot=slot)
        return self.slots[slot]

    def read(self, label: str, name: str) -> bytes | None:
        return self.files.get((label, name))

    def write(self, label: str, name: str, data: bytes) -> None:
        self.files[(label, name)] = data

    def remove(self, label: str, name: str) -> None:
        self.files.pop((label, name), None)


@dataclass
class MemorySlots:
    """The install protocol over a ``MemoryDisk``'s slots and META: the target by ``boot.install_target``, taken
    out of service (``boot.mark_bad``), then written; ``fail_write`` fails the write after that."""

    disk: MemoryDisk
    meta: BootEnvStore
    fail_write: bool = False

    def install(self, image: Image, running: Slot | None) -> Slot:
        env = self.meta.load()
        target = boot.install_target(env, running)
        self.meta.store(boot.mark_bad(env or BootEnv(), target)[0])
        if self.fail_write:
            raise StorageError(f"slot {target.value}: write failed", slot=target.value)
        self.disk.slots[target.value] = image
        return target


@dataclass
class MemoryNetwork:
    interfaces: tuple[Interface, ...] = ()
    hostname: str | None = None
    nameservers: tuple[str, ...] = ()

    def configure(self, interfaces: Sequence[Interface]) -> None:
        self.interfaces = tuple(interfaces)

    def set_hostname(self, hostname: str) -> None:
        self.hostname = hostname

    def set_resolvers(self, nameservers: Sequence[str]) -> None:
        self.nameservers = tuple(nameservers)


@dataclass
class MemoryServices:
    """``unhealthy`` services never report healthy; ``stuck`` ones refuse to stop."""

    running: list[str] = field(default_factory=list)
    unhealthy: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)
    log: list[tuple[str, str]] = field(default_factory=list)

    def start(self, name: str) -> None:
        self.log.append(("start", name))
        self.running.append(name)

    def stop(self, name: str) -> None:
        self.log.append(("stop", name))
        if name in self.stuck:
            raise Unavailable(f"{name} does not stop", service=name)
        self.running.remove(name)

    def healthy(self, name: str) -> bool:
        return name in self.running and name not in self.unhealthy


@dataclass
class MemoryPower:
    actions: list[str] = field(default_factory=list)

    def reboot(self) -> None:
        self.actions.append("reboot")

    def power_off(self) -> None:
        self.actions.append("power_off")


@dataclass
class MemoryIdentity:
    key_id: str | None = None

    def load(self) -> str | None:
        return self.key_id

    def create(self, config: MachineConfig) -> str:
        self.key_id = hashlib.sha256(config.cluster.name.encode()).hexdigest()[:16]
        return self.key_id


@dataclass
class MemorySinks:
    shipped: list[tuple[tuple[str, ...], int]] = field(default_factory=list)

    def ship(self, sinks: Sequence[str], events: Iterable[Event]) -> int:
        count = sum(1 for _ in events)
        self.shipped.append((tuple(sinks), count))
        return count


def memory_ports(*, boot_env: BootEnvStore | None = None, disk: Disk | None = None, slots: Slots | None = None,
                 images: Images | None = None, network: Network | None = None, services: Services | None = None,
                 power: Power | None = None, clock: Clock | None = None, identity: Identity | None = None,
                 sinks: Sinks | None = None) -> Ports:
    """A full set of in-memory ports; pass any of them (by ``Ports`` field name) to replace the default. The
    default ``slots`` installs into the given disk (a ``MemoryDisk``) and META."""
    meta = MemoryBootEnv() if boot_env is None else boot_env
    disk = MemoryDisk() if disk is None else disk
    if slots is None:
        slots = MemorySlots(disk if isinstance(disk, MemoryDisk) else MemoryDisk(), meta)
    return Ports(boot_env=meta, disk=disk, slots=slots,
                 images=MemoryImages() if images is None else images,
                 network=MemoryNetwork() if network is None else network,
                 services=MemoryServices() if services is None else services,
                 power=MemoryPower() if power is None else power,
                 clock=SystemClock() if clock is None else clock,
                 identity=MemoryIdentity() if identity is None else identity,
                 sinks=MemorySinks() if sinks is None else sinks)
