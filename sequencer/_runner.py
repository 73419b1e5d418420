"""The runner: one sequence at a time, phases in order, the tasks of a phase together, every step an event.

Events go through ``EventLog.submit`` so a task never waits for fsync; a run ends (and its result is
returned) only once every event it wrote is durable. A refused request raises at once, before anything runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from errors import (
    Cancelled,
    GravenError,
    InvalidRequest,
    InvariantViolation,
    Locked,
    TaskTimeout,
    TransitionRejected,
)
from events import NODE, Actor, Event, EventLog, Kind
from fsm import NodeFSM

from ._context import CancelToken, Context, Ports, Runtime
from ._model import OnError, Outcome, Phase, Sequence, SequenceName, Task
from ._requests import Request
from ._takeover import TAKEOVER, may_take_over
from .sequences import SEQUENCES

__all__ = ["Run", "SequenceResult", "Sequencer"]


@dataclass(frozen=True)
class SequenceResult:
    sequence: SequenceName
    outcome: Outcome
    actor: Actor
    duration_ns: int
    error: GravenError | None = None
    phase: str | None = None  # where it failed
    task: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class Run:
    """A requested sequence: already the lock holder; ``wait()`` for its result."""

    def __init__(self, name: SequenceName, actor: Actor, request: Request | None) -> None:
        self.name = name
        self.actor = actor
        self.request = request
        self.token = CancelToken()
        self.task: asyncio.Task[SequenceResult]

    def done(self) -> bool:
        return self.task.done()

    async def wait(self) -> SequenceResult:
        return await asyncio.shield(self.task)

    def __repr__(self) -> str:
        return f"Run({self.name.value!r}, actor={self.actor})"


class _TaskFailed(Exception):
    def __init__(self, task: str, error: GravenError) -> None:
        super().__init__(task)
        self.task, self.error = task, error


class _PhaseFailed(Exception):
    def __init__(self, phase: str, task: str | None, error: GravenError) -> None:
        super().__init__(phase)
        self.phase, self.task, self.error = phase, task, error


def _error(exc: BaseException) -> GravenError:
    if isinstance(exc, GravenError):
        return exc
    err = InvariantViolation(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _error_fields(err: GravenError) -> dict[str, object]:
    return {"error": err.message, "code": err.code.name}


def _describe(request: Request | None) -> dict[str, object] | None:
    if request is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(request).items()}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


class Sequencer:
    def __init__(
        self,
        log: EventLog,
        fsm: NodeFSM,
        ports: Ports,
        *,
        runtime: Runtime | None = None,
        sequences: Mapping[SequenceName, Sequence] = SEQUENCES,
        takeover: Mapping[SequenceName, frozenset[SequenceName]] = TAKEOVER,
        takeover_timeout: float = 60.0,
    ) -> None:
        self.log = log
        self.fsm = fsm
        self.ports = ports
        self.runtime = runtime or Runtime()
        self.sequences = sequences
        self.takeover = takeover
        self.takeover_timeout = takeover_timeout
        self._current: Run | None = None
        self.wake = asyncio.Event()  # set whenever a run is asked for or ends, and when a config arrives

    @property
    def running(self) -> Run | None:
        current = self._current
        return current if current is not None and not current.done() else None

    # -- asking ---------------------------------------------------------------------------------------------
    def request(self, name: SequenceName | str, request: Request | None = None, *, actor: Actor = NODE) -> Run:
        """Start ``name`` now, or cancel the running sequence first if the take-over table lets it.

        Raises at once, before anything runs: ``Locked`` (another sequence runs and may not be taken over),
        ``InvalidRequest`` (wrong request record), ``TransitionRejected`` (not in this stage).
        """
        name = SequenceName(name)
        current = self.running
        if current is not None and not may_take_over(current.name, name, self.takeover):
            raise Locked(
                f"sequence {current.name.value!r} (asked by {current.actor}) is running and may not be taken over "
                f"by {name.value!r}",
                running=current.name.value, actor=str(current.actor), requested=name.value,
            )  # fmt: skip
        seq = self.sequences[name]
        request = self._check_request(seq, request)
        if self.fsm.stage not in seq.stages:
            raise TransitionRejected(
                f"sequence {name.value!r} cannot start in stage {self.fsm.stage.value!r}",
                stage=self.fsm.stage.value, sequence=name.value,
                allowed=sorted(s.value for s in seq.stages),
            )  # fmt: skip
        run = Run(name, actor, request)
        if current is not None:
            current.token.cancel(f"taken over by {name.value} ({actor})")
        run.task = asyncio.get_running_loop().create_task(self._execute(seq, run, current), name=f"seq-{name.value}")
        run.task.add_done_callback(lambda _: self.wake.set())
        self._current = run
        self.wake.set()
        return run

    @staticmethod
    def _check_request(seq: Sequence, request: Request | None) -> Request | None:
        if seq.request is None:
            if request is not None:
                raise InvalidRequest(f"{seq.name.value} takes no request, got {type(request).__name__}",
                                     sequence=seq.name.value)
            return None
        if request is None:
            default: Callable[[], Request] = seq.request  # a record whose fields all have defaults, or TypeError
            try:
                return default()
            except TypeError:
                wanted = seq.request.__name__
                raise InvalidRequest(f"{seq.name.value} needs a {wanted}", sequence=seq.name.value) from None
        if not isinstance(request, seq.request):
            raise InvalidRequest(f"{seq.name.value} takes a {seq.request.__name__}, not {type(request).__name__}",
                                 sequence=seq.name.value)
        return request

    async def run(
        self, name: SequenceName | str, request: Request | None = None, *, actor: Actor = NODE
    ) -> SequenceResult:
        return await self.request(name, request, actor=actor).wait()

    async def record(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Event:
        """Append one event and return once it is durable (how a config change is acknowledged)."""
        return await asyncio.wrap_future(self.log.submit(kind, payload, actor))

    # -- running --------------------------------------------------------------------------------------------
    async def _await_previous(self, previous: Run) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(previous.task), self.takeover_timeout)
        except TimeoutError:
            previous.task.cancel()  # it ignored its token for too long
            await asyncio.gather(previous.task, return_exceptions=True)

    async def _execute(self, seq: Sequence, run: Run, previous: Run | None) -> SequenceResult:
        if previous is not None:
            try:
                await self._await_previous(previous)
            except asyncio.CancelledError:  # taken over (and cut off) while waiting: its token says so
                if (me := asyncio.current_task()) is not None:
                    me.uncancel()
        ctx = Context(seq.name, run.request, run.actor, self.ports, self.log, self.fsm, self.runtime, run.token)
        clock = self.ports.clock
        started = clock.monotonic_ns()
        name = seq.name.value
        ctx.emit(Kind.SEQUENCE_STARTED, {"sequence": name, "phases": [p.name for p in seq.phases],
                                         "request": _describe(run.request)})
        outcome: Outcome = Outcome.OK
        error, phase, task = None, None, None
        try:
            ctx.cancel.check()
            if seq.enter is not None:
                ctx.fire(seq.enter)
            for index, step in enumerate(seq.phases):
                ctx.cancel.check()
                await self._phase(ctx, step, index, len(seq.phases))
            if seq.done is not None:
                ctx.fire(seq.done)
        except (Cancelled, asyncio.CancelledError):
            outcome = Outcome.CANCELLED
            if (current := asyncio.current_task()) is not None:
                current.uncancel()
        except _PhaseFailed as failure:
            outcome, error, phase, task = Outcome.FAILED, failure.error, failure.phase, failure.task
        except Exception as exc:
            outcome, error = Outcome.FAILED, _error(exc)
        duration = clock.monotonic_ns() - started
        try:
            if outcome is Outcome.FAILED and seq.failed is not None and self.fsm.can(seq.failed):
                ctx.fire(seq.failed)
            if outcome is Outcome.FAILED:
                assert error is not None
                ctx.emit(Kind.SEQUENCE_FAILED, {"sequence": name, "outcome": outcome, "duration_ns": duration,
                                                "phase": phase, "task": task, **_error_fields(error)})
            else:
                extra = {"cancelled_by": run.token.reason} if outcome is Outcome.CANCELLED else {}
                ctx.emit(Kind.SEQUENCE_STOPPED, {"sequence": name, "outcome": outcome, "duration_ns": duration,
                                                 **extra})
            if ctx.sealed or ctx.power:
                # The log's last word before the power goes is a sealed checkpoint over the whole sequence.
                ctx.pending.append(await asyncio.to_thread(_seal_future, self.log, f"{name}: final"))
            await self._durable(ctx.pending)
        except GravenError as exc:
            outcome, error = Outcome.FAILED, error or exc
        if outcome is Outcome.OK and ctx.power is not None:
            await asyncio.to_thread(getattr(self.ports.power, ctx.power))
        return SequenceResult(seq.name, outcome, run.actor, duration, error, phase, task)

    @staticmethod
    async def _durable(pending: list[Future[Event]]) -> None:
        waiting = [f for f in pending if not f.done()]
        if waiting:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in waiting))
        for f in pending:
            f.result()

    async def _phase(self, ctx: Context, phase: Phase, index: int, count: int) -> None:
        base = {"sequence": ctx.sequence.value, "phase": phase.name}
        if phase.when is not None and not phase.when.test(ctx):
            ctx.emit(Kind.PHASE_SKIPPED, {**base, "index": index, "count": count, "when": phase.when.name})
            return
        clock = self.ports.clock
        started = clock.monotonic_ns()
        ctx.emit(Kind.PHASE_STARTED, {**base, "index": index, "count": count})
        try:
            if phase.fires is not None:
                ctx.fire(phase.fires)
            if len(phase.tasks) == 1:
                await self._task(ctx, base, phase.tasks[0])
            else:
                async with asyncio.TaskGroup() as group:
                    for t in phase.tasks:
                        group.create_task(self._task(ctx, base, t))
        except (Exception, asyncio.CancelledError) as exc:
            leaves = _leaves(exc)
            duration = clock.monotonic_ns() - started
            failed = next((e for e in leaves if isinstance(e, _TaskFailed)), None)
            if failed is not None or not all(isinstance(e, Cancelled | asyncio.CancelledError) for e in leaves):
                task_name = failed.task if failed else None
                err = failed.error if failed else _error(next(e for e in leaves if not isinstance(e, Cancelled)))
                ctx.emit(Kind.PHASE_FAILED, {**base, "duration_ns": duration, "task": task_name, **_error_fields(err)})
                raise _PhaseFailed(phase.name, task_name, err) from exc
            ctx.emit(Kind.PHASE_STOPPED, {**base, "duration_ns": duration, "outcome": Outcome.CANCELLED})
            raise
        ctx.emit(Kind.PHASE_STOPPED, {**base, "duration_ns": clock.monotonic_ns() - started, "outcome": Outcome.OK})

    async def _task(self, ctx: Context, base: Mapping[str, object], task: Task) -> None:
        payload = {**base, "task": task.name}
        clock = self.ports.clock
        ctx.emit(Kind.TASK_STARTED, payload)
        started = clock.monotonic_ns()
        try:
            async with asyncio.timeout(task.timeout):
                await task.run(ctx)
        except (Cancelled, asyncio.CancelledError):
            ctx.emit(Kind.TASK_STOPPED, {**payload, "duration_ns": clock.monotonic_ns() - started,
                                         "outcome": Outcome.CANCELLED})
            raise
        except TimeoutError:
            err: GravenError = TaskTimeout(f"task {task.name!r} did not finish within {task.timeout} s",
                                           task=task.name, timeout=task.timeout)
        except Exception as exc:
            err = _error(exc)
        else:
            ctx.emit(Kind.TASK_STOPPED, {**payload, "duration_ns": clock.monotonic_ns() - started,
                                         "outcome": Outcome.OK})
            return
        fatal = task.on_error is OnError.FATAL
        ctx.emit(Kind.TASK_FAILED, {**payload, "duration_ns": clock.monotonic_ns() - started, "fatal": fatal,
                                    **_error_fields(err)})
        if fatal:
            raise _TaskFailed(task.name, err)


def _seal_future(log: EventLog, reason: str) -> Future[Event]:
    fut: Future[Event] = Future()
    fut.set_result(log.seal(reason))
    return fut
