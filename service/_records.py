"""The service's typed language: commands in, replies and status records out (msgspec Structs).

``api`` maps proto messages to these and back, and nothing else; the service (``service._app``) decides what a
command may do and what it records. A command names its sequence and says what the ``api.request`` event records
of it (``args``: the same payload the log has always held, so old and new logs read alike).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from config import ApplyMode, Change
from sequencer import RebootRequest, Request, ResetRequest, SequenceName, ShutdownRequest, UpgradeRequest

__all__ = [
    "Accepted",
    "Applied",
    "ApplyConfig",
    "Command",
    "Fallback",
    "Reboot",
    "Reset",
    "Rollback",
    "RunningSequence",
    "SequenceRequest",
    "Shutdown",
    "Status",
    "StatusDetails",
    "Upgrade",
    "VersionInfo",
]

WIPE_ALL: tuple[str, ...] = ("STATE", "EPHEMERAL")
SequenceRequest = Request
Plain = str | int | bool | float | None | list[str]


# -- commands ----------------------------------------------------------------------------------------------
class ApplyConfig(msgspec.Struct, frozen=True, kw_only=True):
    data: bytes
    mode: ApplyMode = ApplyMode.AUTO
    dry_run: bool = False
    try_timeout: float = 60.0


class Upgrade(msgspec.Struct, frozen=True, kw_only=True):
    """Upgrade from ``source`` (a file the node holds, or an https URL); ``stage``: write it and boot it on the
    next reboot; ``force``: skip the cluster's checks (etcd quorum, the upgrade lock)."""

    source: str
    stage: bool = False
    force: bool = False

    @property
    def sequence(self) -> SequenceName:
        return SequenceName.STAGE_UPGRADE if self.stage else SequenceName.UPGRADE

    def args(self) -> dict[str, Plain]:
        return {"source": self.source, "stage": self.stage, "force": self.force}

    def request(self, verified: str) -> UpgradeRequest:
        return UpgradeRequest(image=verified)


class Rollback(msgspec.Struct, frozen=True, kw_only=True):
    force: bool = False
    sequence: ClassVar[SequenceName] = SequenceName.ROLLBACK

    def args(self) -> dict[str, Plain]:
        return {}

    def request(self) -> None:
        return None


class Reset(msgspec.Struct, frozen=True, kw_only=True):
    """Wipe ``wipe`` (partition labels); ``graceful``: leave etcd, ship the log to the sinks and stop services
    first; ``reboot``: into maintenance afterwards (else power off); ``force``: wipe unshipped events too."""

    wipe: tuple[str, ...] = WIPE_ALL
    graceful: bool = False
    reboot: bool = False
    force: bool = False
    sequence: ClassVar[SequenceName] = SequenceName.RESET

    def args(self) -> dict[str, Plain]:
        return {"wipe": list(self.wipe), "graceful": self.graceful, "reboot": self.reboot, "force": self.force}

    def request(self) -> ResetRequest:
        return ResetRequest(graceful=self.graceful, reboot=self.reboot, wipe=self.wipe or WIPE_ALL)


class Reboot(msgspec.Struct, frozen=True, kw_only=True):
    force: bool = False
    sequence: ClassVar[SequenceName] = SequenceName.REBOOT

    def args(self) -> dict[str, Plain]:
        return {"force": True} if self.force else {}

    def request(self) -> RebootRequest:
        return RebootRequest()


class Shutdown(msgspec.Struct, frozen=True, kw_only=True):
    force: bool = False
    sequence: ClassVar[SequenceName] = SequenceName.SHUTDOWN

    def args(self) -> dict[str, Plain]:
        return {"force": True} if self.force else {}

    def request(self) -> ShutdownRequest:
        return ShutdownRequest()


Command = Upgrade | Rollback | Reset | Reboot | Shutdown


# -- replies -----------------------------------------------------------------------------------------------
class Applied(msgspec.Struct, frozen=True, kw_only=True):
    mode: ApplyMode
    changes: tuple[Change, ...]
    digest: str
    seq: int  # of config.applied / config.staged / config.confirmed; 0 for a dry run or a no-op
    reboot_required: bool = False
    warnings: tuple[str, ...] = ()


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    sequence: SequenceName
    seq: int  # of the api.request event


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    image_digest: str
    slot: str
    boot_id: str
    node: str
    kernel: str = ""
    os_image: str = ""
    provisioner: str = ""


# -- status ------------------------------------------------------------------------------------------------
class RunningSequence(msgspec.Struct, frozen=True, kw_only=True):
    name: SequenceName
    actor: str
    started_seq: int  # 0 until its sequence.started is in the log


class Fallback(msgspec.Struct, frozen=True, kw_only=True):
    from_slot: str
    to_slot: str
    reason: str
    seq: int


class StatusDetails(msgspec.Struct, frozen=True, kw_only=True):
    """What ``gravenctl status`` shows beyond the summary (``details_json`` on the wire)."""

    slots: dict[str, dict[str, object]]
    last_sequence: dict[str, object] | None
    durable_log: bool
    boots: int
    try_config: dict[str, object] | None
    network_platform: str | None = None
    drift: list[dict[str, object]] | None = None  # None where the live network cannot be read (the sandbox)
    drift_error: str | None = None


class Status(msgspec.Struct, frozen=True, kw_only=True):
    stage: str
    ready: bool
    slot: str | None
    version: str
    boot_id: str
    log_next_seq: int
    config_digest: str | None
    staged_config_digest: str | None
    node: str
    sequence: RunningSequence | None
    last_fallback: Fallback | None
    details: StatusDetails
