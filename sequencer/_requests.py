"""What a caller may ask of a sequence. Checked against ``Sequence.request`` before anything runs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InstallRequest", "RebootRequest", "Request", "ResetRequest", "ShutdownRequest", "UpgradeRequest"]


@dataclass(frozen=True)
class InstallRequest:
    image: str | None = None  # default: ``machine.install.image``


@dataclass(frozen=True)
class UpgradeRequest:
    image: str


@dataclass(frozen=True)
class ResetRequest:
    graceful: bool = True  # ship the log to the audit sinks and stop services first
    reboot: bool = False  # reboot afterwards (into maintenance), else power off
    wipe: tuple[str, ...] = ("STATE", "EPHEMERAL")


@dataclass(frozen=True)
class RebootRequest:
    force: bool = False  # skip stopping services


@dataclass(frozen=True)
class ShutdownRequest:
    force: bool = False


# Every request a sequence takes: what a run carries from the caller to its tasks.
Request = InstallRequest | UpgradeRequest | ResetRequest | RebootRequest | ShutdownRequest
