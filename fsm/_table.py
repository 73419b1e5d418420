"""The machine stages and the transition table, as data.

The stages are Talos's ``MachineStage`` (booting, maintenance, installing, running, upgrading, rebooting,
resetting, shutting_down) plus ``stopped``: the agent has powered the machine off and the log is sealed.
No other stage is needed: a failed boot is a boot that never reached ``running`` (the bootloader counts it),
and rollback is a reboot into the other slot, so both show in the log without a stage of their own.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["TRANSITIONS", "Row", "Stage", "Trigger"]


class Stage(enum.StrEnum):
    BOOTING = "booting"
    MAINTENANCE = "maintenance"
    INSTALLING = "installing"
    RUNNING = "running"
    UPGRADING = "upgrading"
    REBOOTING = "rebooting"
    RESETTING = "resetting"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"


class Trigger(enum.StrEnum):
    MAINTENANCE = "maintenance"  # initialize found no config
    CONFIGURED = "configured"  # a config arrived in maintenance and the node is installed
    INSTALL = "install"
    BOOTED = "booted"  # the boot sequence committed the boot
    UPGRADE = "upgrade"  # upgrade and stage-upgrade
    STAGED = "staged"  # stage-upgrade armed the next boot; nothing changes until then
    ABORT = "abort"  # install or upgrade failed before it changed what boots
    REBOOT = "reboot"
    RESET = "reset"
    SHUTDOWN = "shutdown"
    POWER_OFF = "power_off"


class Row(NamedTuple):
    trigger: Trigger
    sources: frozenset[Stage]
    dest: Stage


def _row(trigger: Trigger, sources: str, dest: Stage) -> Row:
    return Row(trigger, frozenset(Stage(s) for s in sources.split()), dest)


_ALIVE = " ".join(s for s in Stage if s is not Stage.STOPPED)

TRANSITIONS: tuple[Row, ...] = (
    _row(Trigger.MAINTENANCE, "booting", Stage.MAINTENANCE),
    _row(Trigger.CONFIGURED, "maintenance", Stage.BOOTING),
    _row(Trigger.INSTALL, "booting maintenance", Stage.INSTALLING),
    _row(Trigger.BOOTED, "booting", Stage.RUNNING),
    _row(Trigger.UPGRADE, "booting running", Stage.UPGRADING),
    _row(Trigger.STAGED, "upgrading", Stage.RUNNING),
    _row(Trigger.ABORT, "installing", Stage.MAINTENANCE),
    _row(Trigger.ABORT, "upgrading", Stage.RUNNING),
    _row(Trigger.REBOOT, "booting maintenance installing running upgrading resetting rebooting", Stage.REBOOTING),
    _row(Trigger.RESET, "booting maintenance running", Stage.RESETTING),
    _row(Trigger.SHUTDOWN, _ALIVE, Stage.SHUTTING_DOWN),
    _row(Trigger.POWER_OFF, "shutting_down resetting", Stage.STOPPED),
)
