"""State as a pure fold over events: ``replay(events)`` and ``state_at(events, seq)``.

Each kind has one apply function registered with ``@applies(kind)``; kinds without one change nothing
but the position. The fold checks seq and prev as it goes, so a fold over a broken chain fails.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable

import msgspec
from msgspec.structs import replace

from errors import InvalidEvent, TamperedLog

from ._kinds import Kind
from ._record import (
    _SIG64,
    _TIME64,
    _UNSIGNED_PREFIX,
    GENESIS_PREV,
    Actor,
    Event,
    _event_decoder,
    event_hash,
    jsonable_map,
    trusted_event_hash,
)
from .payloads import (
    BootCommitted,
    BootFallback,
    BootStarted,
    Checkpointed,
    ConfigApplied,
    ConfigReverted,
    ConfigStaged,
    FsmTransition,
    Genesis,
    ImageInstalled,
    KeyRotated,
    SequenceFailed,
    SequenceStarted,
    SequenceStopped,
    payload_of,
)

__all__ = [
    "BootOutcome",
    "BootRecord",
    "NodeState",
    "RunningSequence",
    "SlotState",
    "applies",
    "fold",
    "replay",
    "replay_raw",
    "state_at",
]


class SlotState(msgspec.Struct, frozen=True):
    version: str | None = None
    digest: str | None = None
    good: bool = False


class BootOutcome(enum.StrEnum):
    RUNNING = "running"
    COMMITTED = "committed"
    FAILED = "failed"
    REBOOTED = "rebooted"
    SHUTDOWN = "shutdown"


class BootRecord(msgspec.Struct, frozen=True):
    boot_id: str
    number: int
    started_seq: int
    started_ns: int
    slot: str | None = None
    version: str | None = None
    outcome: BootOutcome = BootOutcome.RUNNING
    last_seq: int | None = None  # None while the boot is the log's latest; set when the next boot begins
    fallback: dict[str, object] | None = None


class RunningSequence(msgspec.Struct, frozen=True):
    name: str
    actor: str
    started_seq: int


class NodeState(msgspec.Struct, frozen=True):
    seq: int = -1
    head: bytes = GENESIS_PREV
    origin: str = ""
    key_id: str = ""
    stage: str = "booting"
    config_digest: str | None = None
    config_generation: int = 0
    staged_config_digest: str | None = None
    try_config: dict[str, object] | None = None
    slots: dict[str, SlotState] = {}
    active_slot: str | None = None
    boots: tuple[BootRecord, ...] = ()
    sequence: RunningSequence | None = None
    last_sequence: dict[str, object] | None = None
    last_fallback: dict[str, object] | None = None
    checkpoints: int = 0
    sealed: bool = False
    denied: int = 0

    def to_json(self) -> dict[str, object]:
        return jsonable_map(msgspec.to_builtins(self, builtin_types=(bytes,), enc_hook=str))


Apply = Callable[[NodeState, Event], NodeState]
_APPLY: dict[str, Apply] = {}


def applies(kind: str) -> Callable[[Apply], Apply]:
    def register(fn: Apply) -> Apply:
        _APPLY[kind] = fn
        return fn

    return register


def fold(state: NodeState, event: Event, digest: bytes | None = None) -> NodeState:
    """The state after ``event``. ``digest`` may pass ``event_hash(event)`` when the caller has it already."""
    if event.seq != state.seq + 1:
        raise TamperedLog(f"replay expected seq {state.seq + 1}, got {event.seq}", seq=state.seq + 1, reason="gap")
    if event.prev != state.head:
        raise TamperedLog(f"seq {event.seq}: prev does not match the event before it", seq=event.seq, reason="chain")
    state = _close_boot(state, event.boot_id, state.seq)
    fn = _APPLY.get(event.kind)
    if fn is not None:
        state = fn(state, event)
    head = event_hash(event) if digest is None else digest
    return replace(state, seq=event.seq, head=head)


def _close_boot(state: NodeState, boot_id: str, last_seq: int) -> NodeState:
    """The first event of another boot closes the latest boot record (a copy of the tuple once per boot, not per
    event: a long-lived node has many boots)."""
    boots = state.boots
    if boots and boots[-1].last_seq is None and boots[-1].boot_id != boot_id:
        return replace(state, boots=(*boots[:-1], replace(boots[-1], last_seq=last_seq)))
    return state


def replay(events: Iterable[Event], state: NodeState | None = None) -> NodeState:
    state = state or NodeState()
    for event in events:
        state = fold(state, event)
    return state


class _Head(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An event as ``replay_raw`` reads it when its kind changes nothing but the position: every field typed and
    checked but the payload, which is walked as msgpack and not built (most of an event's decoding)."""

    seq: int
    time_ns: int
    mono_ns: int
    boot_id: str
    kind: str
    actor: Actor
    payload: msgspec.Raw
    prev: bytes
    key_id: str
    sig: bytes


_head_decoder = msgspec.msgpack.Decoder(_Head)
_payload_decoder = msgspec.msgpack.Decoder(dict[str, object])


def replay_raw(raws: Iterable[bytes], state: NodeState | None = None) -> NodeState:
    """``replay`` straight from stored bytes, the fast way: no signature and no encoding checks (that is
    ``verify_items``' job), but seq and the hash chain are checked as in ``fold``. Bytes that do not decode raise
    ``InvalidEvent`` naming the seq; an altered event breaks the chain at the event after it. The payload of a kind
    without an apply function is not decoded (only walked): it changes no state, and the chain covers its bytes.

    The result equals folding event by event. Only the final state is returned, so seq and head are kept in locals
    and written into the state before an apply function (or the closing of a boot) needs it, and at the end."""
    state = state or NodeState()
    decode_head, apply = _head_decoder.decode, _APPLY.get
    seq, head = state.seq, state.head
    prefix = _UNSIGNED_PREFIX
    for raw in raws:  # fold() and trusted_event_hash() inlined: this loop is the replay benchmark
        try:
            h = decode_head(raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq + 1) from exc
        n = len(raw)
        if (raw[n - 87 : n - 81] == _SIG64 and raw[n - 17 : n - 8] == _TIME64 and raw[0] == 0x8A
                and len(h.sig) == 64 and h.time_ns >= 1 << 32):
            digest = hashlib.sha256(prefix + raw[1 : n - 87] + raw[n - 17 :]).digest()
        else:
            digest = trusted_event_hash(raw, _decode_full(raw, seq))
        if h.seq != seq + 1 or h.prev != head:
            return fold(_catch_up(state, seq, head), _decode_full(raw, seq), digest)  # raises fold's own error
        boots = state.boots
        if boots and boots[-1].last_seq is None and boots[-1].boot_id != h.boot_id:
            state = _close_boot(_catch_up(state, seq, head), h.boot_id, seq)
        fn = apply(h.kind)
        if fn is not None:
            state = fn(_catch_up(state, seq, head), _event_of(h, seq))
        seq, head = h.seq, digest
    return _catch_up(state, seq, head)


def _event_of(h: _Head, seq: int) -> Event:
    """The Event ``h`` was read from: only its payload is left to decode."""
    try:
        payload = _payload_decoder.decode(h.payload)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq + 1) from exc
    return Event(seq=h.seq, time_ns=h.time_ns, mono_ns=h.mono_ns, boot_id=h.boot_id, kind=h.kind, actor=h.actor,
                 payload=payload, prev=h.prev, key_id=h.key_id, sig=h.sig)


def _decode_full(raw: bytes, seq: int) -> Event:
    try:
        return _event_decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq + 1) from exc


def _catch_up(state: NodeState, seq: int, head: bytes) -> NodeState:
    return state if seq == state.seq else replace(state, seq=seq, head=head)


def state_at(events: Iterable[Event], seq: int) -> NodeState:
    """The state right after event ``seq``."""
    state = NodeState()
    for event in events:
        if event.seq > seq:
            break
        state = fold(state, event)
    if state.seq != seq:
        raise TamperedLog(f"the log ends at seq {state.seq}, before {seq}", seq=state.seq + 1, reason="truncated")
    return state


def _boot(state: NodeState, **changes: object) -> NodeState:
    if not state.boots:
        return state
    return replace(state, boots=(*state.boots[:-1], replace(state.boots[-1], **changes)))


@applies(Kind.GENESIS)
def _genesis(state: NodeState, e: Event) -> NodeState:
    return replace(state, origin=payload_of(e, Genesis).origin, key_id=e.key_id)


@applies(Kind.KEY_ROTATED)
def _rotated(state: NodeState, e: Event) -> NodeState:
    return replace(state, key_id=payload_of(e, KeyRotated).key_id)


@applies(Kind.CHECKPOINT)
def _checkpoint(state: NodeState, e: Event) -> NodeState:
    return replace(state, checkpoints=state.checkpoints + 1, sealed=payload_of(e, Checkpointed).sealed)


@applies(Kind.BOOT_STARTED)
def _boot_started(state: NodeState, e: Event) -> NodeState:
    boots = state.boots
    if boots and boots[-1].outcome is BootOutcome.RUNNING:
        boots = (*boots[:-1], replace(boots[-1], outcome=BootOutcome.FAILED))
    p = payload_of(e, BootStarted)
    rec = BootRecord(boot_id=e.boot_id, number=len(boots), started_seq=e.seq, started_ns=e.time_ns, slot=p.slot,
                     version=p.version)
    active = p.slot if "slot" in e.payload else state.active_slot
    return replace(state, boots=(*boots, rec), sealed=False, sequence=None, stage="booting", active_slot=active)


@applies(Kind.BOOT_FALLBACK)
def _fallback(state: NodeState, e: Event) -> NodeState:
    p = payload_of(e, BootFallback)
    fb = {"from_slot": p.from_slot, "to_slot": p.to_slot, "reason": p.reason, "seq": e.seq}
    return _boot(replace(state, last_fallback=fb), fallback=fb)


@applies(Kind.BOOT_COMMITTED)
def _committed(state: NodeState, e: Event) -> NodeState:
    slot = str(payload_of(e, BootCommitted).slot) if "slot" in e.payload else str(state.active_slot or "")
    slots = dict(state.slots)
    slots[slot] = replace(slots.get(slot, SlotState()), good=True)
    return _boot(replace(state, slots=slots), outcome=BootOutcome.COMMITTED)


_ENDS = {"rebooting": BootOutcome.REBOOTED, "shutting_down": BootOutcome.SHUTDOWN, "stopped": BootOutcome.SHUTDOWN}


@applies(Kind.FSM_TRANSITION)
def _transition(state: NodeState, e: Event) -> NodeState:
    dst = payload_of(e, FsmTransition).dst
    state = replace(state, stage=dst)
    if dst in ("rebooting", "shutting_down", "stopped") and state.boots:
        outcome = _ENDS[dst]
        if state.boots[-1].outcome in (BootOutcome.RUNNING, BootOutcome.COMMITTED, BootOutcome.REBOOTED):
            state = _boot(state, outcome=outcome)
    return state


@applies(Kind.SEQUENCE_STARTED)
def _seq_started(state: NodeState, e: Event) -> NodeState:
    return replace(state, sequence=RunningSequence(payload_of(e, SequenceStarted).sequence, str(e.actor), e.seq))


def _seq_stopped(state: NodeState, e: Event) -> NodeState:
    if e.kind == Kind.SEQUENCE_FAILED:
        failed = payload_of(e, SequenceFailed)
        name, outcome, error = failed.sequence, failed.outcome, failed.error
    else:
        stopped = payload_of(e, SequenceStopped)
        name, outcome, error = stopped.sequence, stopped.outcome, None
    last = {"name": name, "outcome": outcome if "outcome" in e.payload else "ok", "error": error, "seq": e.seq}
    return replace(state, sequence=None, last_sequence=last)


applies(Kind.SEQUENCE_STOPPED)(_seq_stopped)
applies(Kind.SEQUENCE_FAILED)(_seq_stopped)


@applies(Kind.CONFIG_APPLIED)
def _config_applied(state: NodeState, e: Event) -> NodeState:
    p = payload_of(e, ConfigApplied)
    digest = p.digest
    try_cfg = None
    if p.mode == "try":
        try_cfg = {"digest": digest, "revert_to": state.config_digest, "deadline_ns": p.deadline_ns}
    return replace(state, config_digest=digest, config_generation=state.config_generation + 1,
                   try_config=try_cfg, staged_config_digest=None)


@applies(Kind.CONFIG_STAGED)
def _config_staged(state: NodeState, e: Event) -> NodeState:
    return replace(state, staged_config_digest=payload_of(e, ConfigStaged).digest)


@applies(Kind.CONFIG_REVERTED)
def _config_reverted(state: NodeState, e: Event) -> NodeState:
    return replace(state, config_digest=payload_of(e, ConfigReverted).digest, try_config=None,
                   config_generation=state.config_generation + 1)


@applies(Kind.CONFIG_CONFIRMED)
def _config_confirmed(state: NodeState, e: Event) -> NodeState:
    return replace(state, try_config=None)


@applies(Kind.IMAGE_INSTALLED)
def _installed(state: NodeState, e: Event) -> NodeState:
    p = payload_of(e, ImageInstalled)
    slots = dict(state.slots)
    slots[p.slot] = SlotState(p.version, p.digest, False)
    return replace(state, slots=slots)


@applies(Kind.API_DENIED)
def _denied(state: NodeState, e: Event) -> NodeState:
    return replace(state, denied=state.denied + 1)
