"""One sequence at a time. ``TAKEOVER[running]`` is the set of sequences a new request may cancel it for.

    running         may be taken over by
    initialize      reboot, shutdown
    boot            reboot, reset, upgrade, shutdown
    reset           reboot, shutdown
    reboot          shutdown            (a second reboot is refused: one is already on its way)
    install         shutdown            (nothing else: a half-written disk is worse than waiting)
    upgrade         shutdown
    stage-upgrade   shutdown
    rollback        shutdown
    shutdown        shutdown            (shutdown always may)

Everything else is refused with ``Locked`` at once, naming the running sequence and who asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ._model import SequenceName as S

__all__ = ["TAKEOVER", "may_take_over"]

_ALWAYS = frozenset({S.SHUTDOWN})

TAKEOVER: Mapping[S, frozenset[S]] = MappingProxyType({
    S.INITIALIZE: _ALWAYS | {S.REBOOT},
    S.BOOT: _ALWAYS | {S.REBOOT, S.RESET, S.UPGRADE},
    S.RESET: _ALWAYS | {S.REBOOT},
    S.REBOOT: _ALWAYS,
    S.INSTALL: _ALWAYS,
    S.UPGRADE: _ALWAYS,
    S.STAGE_UPGRADE: _ALWAYS,
    S.ROLLBACK: _ALWAYS,
    S.SHUTDOWN: _ALWAYS,
})  # fmt: skip


def may_take_over(running: S, requested: S, table: Mapping[S, frozenset[S]] = TAKEOVER) -> bool:
    return requested in table.get(running, frozenset())
