"""Adapters from the sequencer's ports to the real parts: the disk, META, images, audit sinks.

Each translates names only (slot letters); the work is in ``storage`` and ``image``.
"""

from __future__ import annotations

import io
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

import config
import image
from boot import BootEnv, Slot
from config import install_disk_mismatch
from config.limits import LIMITS
from errors import BadImage, DiskFull, InvalidRequest, StorageError, TooLarge
from events import Event, Kind, encode_event
from pki import load_certificate
from sequencer.ports import Image as SequencerImage
from sequencer.ports import RunningImage
from storage import DiskBase, write_durably

from ._net_plan import plan_rows

__all__ = ["BootEnvPort", "DirSinks", "DiskPort", "ImagesPort", "PlanNetwork", "SlotsPort"]


class DiskPort:
    """The sequencer's ``Disk`` over a ``storage`` disk (sandbox or block).

    ``defer_wipe``, when given, takes over wiping EPHEMERAL: the log is open there until the agent exits, so the
    agent records the wipe as pending (``node._wipe``) instead of pulling the filesystem from under the log.
    """

    def __init__(self, disk: DiskBase, *, defer_wipe: Callable[[Sequence[str]], None] | None = None) -> None:
        self.disk = disk
        self._defer_wipe = defer_wipe

    @property
    def kind(self) -> str:
        return str(self.disk.kind)

    @property
    def makes_filesystems(self) -> bool:
        return self.disk.makes_filesystems

    def is_partitioned(self) -> bool:
        return self.disk.is_partitioned()

    def check_install_disk(self, device: str) -> None:
        host_name = os.environ.get(DISK_NAME_ENV)  # a container machine's disk, as the host names it
        if self.disk.named_device and not self.disk.is_named(device) and device != host_name:
            name = host_name or str(getattr(self.disk, "source", self.disk))
            raise install_disk_mismatch(device, f"{name} (given to graven machine --disk)")

    def partition(self) -> None:
        self.disk.partition()

    def format(self, labels: Sequence[str]) -> None:
        self.disk.format(labels)

    def wipe(self, labels: Sequence[str]) -> None:
        later = [label for label in labels if label == "EPHEMERAL"] if self._defer_wipe else []
        now = [label for label in labels if label not in later]
        if now:
            self.disk.wipe(now)
        if later and self._defer_wipe is not None:
            self._defer_wipe(later)

    def verify_slot(self, slot: str, trusted_keys: Sequence[bytes]) -> image.VerifiedImage:
        return image.verify_slot(self.disk, Slot.parse(slot), list(trusted_keys))

    def _file(self, label: str, name: str) -> Path:
        return self.disk.path(label) / name

    def read(self, label: str, name: str) -> bytes | None:
        if not self.disk.is_partitioned():
            return None
        try:
            return self._file(label, name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{label}/{name}: {exc.strerror}", label=label, name=name) from exc

    def write(self, label: str, name: str, data: bytes) -> None:
        write_durably(self._file(label, name), data)

    def remove(self, label: str, name: str) -> None:
        self._file(label, name).unlink(missing_ok=True)


class SlotsPort:
    """The sequencer's ``Slots``: ``image.plan_install`` against META, then ``image.install`` (take the slot out
    of service, write, read back, record); arming stays with the sequence's bootloader phase."""

    def __init__(self, disk: DiskBase) -> None:
        self.disk = disk

    def install(self, img: SequencerImage, running: Slot | None) -> Slot:
        if not isinstance(img, image.VerifiedImage):  # only image.verify makes one: nothing else is written
            raise TypeError(f"{type(img).__name__} is not a verified image")
        plan = image.plan_install(self.disk.read_boot_env(), img, booted=running)
        return image.install(self.disk, plan, activate=False).plan.slot


class BootEnvPort:
    """META through the sequencer's ``BootEnv`` port; every store is a new, newer environment."""

    def __init__(self, disk: DiskBase) -> None:
        self.disk = disk

    def load(self) -> BootEnv | None:
        if not self.disk.is_partitioned():
            return None  # an empty disk: nothing to boot yet
        return self.disk.read_boot_env()

    def store(self, env: BootEnv) -> None:
        current = self.disk.read_boot_env()
        if current is not None and env.seq <= current.seq:  # META takes only a newer environment
            env = msgspec.structs.replace(env, seq=current.seq + 1)
        self.disk.write_boot_env(env)


HOST_VIEW_ENV = "GRAVEN_HOST_VIEW"
DISK_NAME_ENV = "GRAVEN_DISK_NAME"  # node._launch: the disk inside a container machine as the host names it


def host_path(path: Path) -> Path:
    """A host path named in the config (an install image, an audit sink), as this agent reaches it: inside a
    container machine the host directories shared with it appear under ``$GRAVEN_HOST_VIEW`` at their host
    paths (``node._launch``); elsewhere, the path itself."""
    view = os.environ.get(HOST_VIEW_ENV)
    if not view or not path.is_absolute():
        return path
    inside = Path(view + str(path))
    shared = next((p for p in (inside, *inside.parents) if p.exists()), None)
    return inside if shared is not None and shared != Path(view) and Path(view) in shared.parents else path


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _copy_bounded(src: _Reader, dst: _Writer, spool: Path, source: str) -> None:
    """A fetched image within the upload limits: its size (``upload_bytes``) and the free space it leaves on
    EPHEMERAL (``upload_free_bytes``), checked as it arrives."""
    size = 0
    while chunk := src.read(1 << 20):
        size += len(chunk)
        if size > LIMITS.upload_bytes:
            raise TooLarge(f"image {source} is larger than {LIMITS.upload_bytes} bytes (limit upload_bytes)",
                           limit="upload_bytes", value=size, max=LIMITS.upload_bytes, source=source)
        st = os.statvfs(spool)
        if st.f_bavail * st.f_frsize - len(chunk) < LIMITS.upload_free_bytes:
            raise DiskFull(f"fetching image {source} would leave less than {LIMITS.upload_free_bytes} bytes free "
                           f"on EPHEMERAL (limit upload_free_bytes)", limit="upload_free_bytes",
                           value=st.f_bavail * st.f_frsize, max=LIMITS.upload_free_bytes, source=source)
        dst.write(chunk)


class ImagesPort:
    """Images from a path, ``file://`` or ``https://`` URL; only ``image.verify`` makes what gets installed."""

    def __init__(self, spool: Callable[[], Path], running: RunningImage) -> None:
        self._spool = spool
        self._running = running

    def running(self) -> RunningImage:
        return self._running

    def verify(self, source: str, trusted_keys: Sequence[bytes]) -> image.VerifiedImage:
        if not trusted_keys:
            raise BadImage("no trusted image keys: machine.install.trustedKeys is empty", source=source)
        path = self._fetch(source)
        try:
            return image.verify(path, list(trusted_keys))
        except BaseException:
            if path.parent == self._spool():  # fetched or uploaded here: a refused image is not kept
                path.unlink(missing_ok=True)
            raise

    def _fetch(self, source: str) -> Path:
        url = urllib.parse.urlparse(source)
        if url.scheme in ("", "file"):
            path = host_path(Path(urllib.parse.unquote(url.path) if url.scheme else source))
            if not path.is_file():
                raise BadImage(f"image {source}: no such file", source=source)
            return path
        if url.scheme != "https":
            raise InvalidRequest(f"image source {source!r}: only a path, file:// or https:// URL", source=source)
        spool = self._spool()
        spool.mkdir(parents=True, exist_ok=True)
        dest = spool / f"fetched-{time.time_ns()}.img"
        from urllib.request import urlopen  # only here: http.client and email cost ~1 MiB of RSS for every agent

        try:
            with urlopen(source, timeout=60) as resp, dest.open("wb") as f:
                _copy_bounded(resp, f, spool, source)
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise BadImage(f"image {source}: cannot fetch: {exc}", source=source) from exc
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest


class PlanNetwork:
    """Where the node may not touch the host's links (the sandbox), it records the plan it would apply."""

    def __init__(self, emit: Callable[[str, dict[str, object]], None]) -> None:
        self._emit = emit
        self.state: dict[str, object] = {"links": [], "hostname": None, "resolvers": []}

    def configure(self, interfaces: Sequence[object]) -> None:
        plan = [msgspec.to_builtins(i) for i in interfaces]
        self.state["links"] = plan
        self._emit(Kind.NETWORK_PLANNED, {"interfaces": plan, "applied": False,
                                       "why": "sandbox platform: the host's links are not the node's to change"})

    def set_hostname(self, hostname: str) -> None:
        self.state["hostname"] = hostname

    def set_resolvers(self, nameservers: Sequence[str]) -> None:
        self.state["resolvers"] = list(nameservers)

    def rows(self, what: str, network: config.Network | None) -> list[dict[str, object]]:
        return plan_rows(self.state, what)

    def live_drift(self, network: config.Network) -> list[dict[str, object]] | None:
        return None  # the host's links are not the node's: nothing to compare


class DirSinks:
    """Audit sinks that are directories: write the whole log as a bundle there, then verify the copy."""

    def __init__(self, ca_pem: Callable[[], bytes | None], emit: Callable[[str, dict[str, object]], None]) -> None:
        self._ca_pem = ca_pem
        self._emit = emit

    def ship(self, sinks: Sequence[str], events: Iterable[Event]) -> int:
        from events import read_bundle, verify_bundle, write_bundle  # loaded when a sink is configured

        raw = [(e.seq, encode_event(e)) for e in events]
        if not raw:
            return 0
        ca_pem = self._ca_pem()
        if ca_pem is None:
            raise InvalidRequest("cannot verify shipped logs without machine.ca")
        ca = load_certificate(ca_pem)
        for sink in sinks:
            target = host_path(Path(sink.removeprefix("file://")))
            if "://" in sink and not sink.startswith("file://"):
                raise InvalidRequest(f"audit sink {sink!r}: only directories are supported", sink=sink)
            target.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            manifest = write_bundle(buf, raw)
            out = target / f"{manifest.origin.replace('/', '_')}-{manifest.to_seq:08d}.tar"
            tmp = out.with_name(out.name + ".partial")
            tmp.write_bytes(buf.getvalue())
            with tmp.open("rb") as f:
                verify_bundle(read_bundle(f), ca)
                os.fsync(f.fileno())
            os.replace(tmp, out)
            self._emit(Kind.AUDIT_SHIPPED, {"sink": str(target), "file": out.name, "to_seq": manifest.to_seq,
                                            "events": manifest.count})
        return len(raw)
