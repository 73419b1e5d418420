"""``NodeFSM``: a typed facade over ``transitions.Machine`` that logs every transition."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from transitions import EventData, Machine, MachineError

from errors import TransitionRejected
from events import NODE, Actor, Event, EventLog, Kind

from ._table import TRANSITIONS, Row, Stage, Trigger

__all__ = ["NodeFSM", "Transition"]


@dataclass(frozen=True)
class Transition:
    trigger: Trigger
    src: Stage
    dst: Stage
    durable: Future[Event]  # resolves when the ``fsm.transition`` event is on disk


def _config(row: Row) -> dict[str, object]:
    # Plain strings: given Enum members, ``transitions`` would name states by the member name, not the value.
    return {"trigger": row.trigger.value, "source": sorted(s.value for s in row.sources), "dest": row.dest.value}


class _Model:
    state: str


class NodeFSM:
    """The node's stage. ``fire`` moves it and appends an ``fsm.transition`` event {trigger, src, dst}.

    The event is submitted, not awaited: ``Transition.durable`` resolves once it is on disk.
    """

    def __init__(self, log: EventLog, *, initial: Stage = Stage.BOOTING, table: Iterable[Row] = TRANSITIONS) -> None:
        self._log = log
        self._table = tuple(table)
        self._model = _Model()
        self._fired: Transition | None = None
        self._machine = Machine(
            model=self._model,
            states=[s.value for s in Stage],
            initial=initial.value,
            transitions=[_config(r) for r in self._table],
            auto_transitions=False,
            queued=True,
            send_event=True,
            before_state_change=self._record,
            on_exception=self._reject,
        )

    @property
    def stage(self) -> Stage:
        return Stage(self._model.state)

    def destination(self, trigger: Trigger) -> Stage | None:
        """Where ``trigger`` leads from the current stage, or None if it is not allowed here."""
        for row in self._table:
            if row.trigger is trigger and self.stage in row.sources:
                return row.dest
        return None

    def can(self, trigger: Trigger) -> bool:
        return self.destination(trigger) is not None

    def allowed(self) -> frozenset[Trigger]:
        return frozenset(t for t in Trigger if self.can(t))

    def fire(self, trigger: Trigger, *, actor: Actor = NODE) -> Transition:
        """Apply ``trigger``; raise ``TransitionRejected`` (naming stage and trigger) if this stage refuses it."""
        event = self._machine.events.get(trigger.value)
        if event is None:
            raise self._rejection(trigger)
        self._fired = None
        event.trigger(self._model, actor=actor)
        fired, self._fired = self._fired, None
        if fired is None:  # pragma: no cover - a row always leads somewhere
            raise self._rejection(trigger)
        return fired

    def _rejection(self, trigger: Trigger) -> TransitionRejected:
        allowed = sorted(t.value for t in self.allowed())
        return TransitionRejected(
            f"stage {self.stage.value!r} does not accept trigger {trigger.value!r}",
            stage=self.stage.value,
            trigger=trigger.value,
            allowed=allowed,
        )

    def _reject(self, event_data: EventData) -> None:
        error = event_data.error
        if isinstance(error, MachineError):
            raise self._rejection(Trigger(event_data.event.name)) from error
        if isinstance(error, BaseException):
            raise error

    # Before the state changes: if the log refuses the event, the stage stays where it was (live == fold).
    def _record(self, event_data: EventData) -> None:
        move = event_data.transition
        assert move is not None
        trigger = Trigger(event_data.event.name)
        src, dst = Stage(move.source), Stage(move.dest or move.source)
        actor: Actor = event_data.kwargs.get("actor", NODE)
        payload = {"trigger": trigger.value, "src": src.value, "dst": dst.value}
        durable = self._log.submit(Kind.FSM_TRANSITION, payload, actor)
        self._fired = Transition(trigger, src, dst, durable)
