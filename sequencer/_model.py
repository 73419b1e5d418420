"""The words of the sequencer: a ``Sequence`` is phases run in order; a ``Phase`` is tasks run together.

Tables of these are data (``sequences.py``); ``Task`` and ``Condition`` wrap small named functions so the
tables read as declarations and the runner can name what it runs in its events.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from fsm import Stage, Trigger

if TYPE_CHECKING:
    from ._context import Context
    from ._requests import Request

__all__ = ["Condition", "OnError", "Outcome", "Phase", "Sequence", "SequenceName", "Task", "TaskFn", "condition",
           "task"]


class SequenceName(enum.StrEnum):
    INITIALIZE = "initialize"
    BOOT = "boot"
    INSTALL = "install"
    UPGRADE = "upgrade"
    STAGE_UPGRADE = "stage-upgrade"
    ROLLBACK = "rollback"
    RESET = "reset"
    REBOOT = "reboot"
    SHUTDOWN = "shutdown"


class Outcome(enum.StrEnum):
    """How a sequence, a phase or a task ended (the ``outcome`` of its STOP or failed event)."""

    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OnError(enum.StrEnum):
    FATAL = "fatal"  # the phase fails, its other tasks are cancelled, the sequence fails
    CONTINUE = "continue"  # logged as task.failed (fatal: false); the phase goes on


TaskFn: TypeAlias = "Callable[[Context], Awaitable[None]]"


@dataclass(frozen=True)
class Task:
    name: str
    run: TaskFn
    timeout: float = 30.0  # seconds; exceeding it is a ``TaskTimeout`` handled by ``on_error``
    on_error: OnError = OnError.FATAL

    def __repr__(self) -> str:
        return f"Task({self.name!r}, timeout={self.timeout}, on_error={self.on_error.value})"


def task(
    *, timeout: float = 30.0, on_error: OnError = OnError.FATAL, name: str | None = None
) -> Callable[[TaskFn], Task]:
    """Declare an async function of a ``Context`` as a task, with its timeout and error policy."""

    def wrap(fn: TaskFn) -> Task:
        return Task(name or fn.__name__, fn, timeout, on_error)

    return wrap


@dataclass(frozen=True)
class Condition:
    """A named predicate over the context, evaluated just before its phase would run."""

    name: str
    test: Callable[[Context], bool]

    def __repr__(self) -> str:
        return f"Condition({self.name!r})"


def condition(fn: Callable[[Context], bool]) -> Condition:
    return Condition(fn.__name__, fn)


@dataclass(frozen=True)
class Phase:
    name: str
    tasks: tuple[Task, ...]
    when: Condition | None = None  # skipped (a ``phase.skipped`` event) when this is false
    fires: Trigger | None = None  # fired on the FSM as the phase starts


@dataclass(frozen=True)
class Sequence:
    name: SequenceName
    phases: tuple[Phase, ...]
    stages: frozenset[Stage]  # the stages it may be asked in
    request: type[Request] | None = None  # the request record it takes, if any
    enter: Trigger | None = None  # fired as it starts
    done: Trigger | None = None  # fired when every phase succeeded
    failed: Trigger | None = None  # fired when it fails (not when it is cancelled)
    summary: str = field(default="", compare=False)
