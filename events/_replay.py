"""State as a pure fold over events: ``replay(events)`` and ``state_at(events, seq)``.

Each kind has one apply function registered with ``@applies(kind)``; kinds without one change nothing
but the position. The fold checks seq and prev as it goes, so a fold over a broken chain fails.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Protocol, TypeVar, cast

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
from ._schema import VERSION_KEY, Payload
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


class Meta(Protocol):
    """What a typed apply function reads of its event besides the payload: an ``Event``, or the head
    ``replay_raw`` decoded (whose payload is still bytes)."""

    @property
    def seq(self) -> int: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def boot_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def actor(self) -> Actor: ...
    @property
    def key_id(self) -> str: ...


P = TypeVar("P", bound=Payload)
_RawApply = Callable[[NodeState, "_Head", int], NodeState]
_RAW_APPLY: dict[str, _RawApply] = {}


def applies(kind: str) -> Callable[[Apply], Apply]:
    def register(fn: Apply) -> Apply:
        _APPLY[kind] = fn
        _RAW_APPLY.pop(kind, None)
        return fn

    return register


def applies_typed(kind: str, cls: type[P]) -> Callable[[Callable[[NodeState, Meta, P], NodeState]],
                                                      Callable[[NodeState, Meta, P], NodeState]]:
    """Register ``fn(state, meta, payload)`` for ``kind``, ``payload`` being the event's payload as ``cls`` (upcast
    as ``payload_of`` does). ``replay_raw`` decodes the payload bytes straight into ``cls`` instead of building a
    dict, an Event, then the Struct. The function must not read ``state.seq`` or ``state.head``: replay_raw writes
    them into the state only at the end (``fold`` and ``replay`` keep them current)."""
    reader = msgspec.msgpack.Decoder(_versioned(cls))

    def register(fn: Callable[[NodeState, Meta, P], NodeState]) -> Callable[[NodeState, Meta, P], NodeState]:
        def from_event(state: NodeState, e: Event) -> NodeState:
            return fn(state, e, payload_of(e, cls))

        def from_head(state: NodeState, h: _Head, seq: int) -> NodeState:
            try:
                p = reader.decode(h.payload)
            except (msgspec.DecodeError, ValueError, RecursionError):
                p = None  # the slow path below names what is wrong
            if p is None or getattr(p, VERSION_KEY) != cls.VERSION:  # not the current version: upcast
                p = payload_of(_event_of(h, seq), cls)
            return fn(state, h, p)

        _APPLY[kind] = from_event
        _RAW_APPLY[kind] = from_head
        return fn

    return register


def applies_meta(kind: str) -> Callable[[Callable[[NodeState, Meta], NodeState]],
                                        Callable[[NodeState, Meta], NodeState]]:
    """Register ``fn(state, meta)`` for a ``kind`` whose payload changes nothing: ``replay_raw`` does not decode
    it (as for a kind without an apply function). Same rule on ``state.seq`` and ``state.head`` as
    ``applies_typed``."""
    def register(fn: Callable[[NodeState, Meta], NodeState]) -> Callable[[NodeState, Meta], NodeState]:
        _APPLY[kind] = fn
        _RAW_APPLY[kind] = lambda state, h, seq: fn(state, h)
        return fn

    return register


def _versioned(cls: type[P]) -> type[P]:
    """``cls`` with the version key as a field, for reading only (version 1 carries no key)."""
    sub = msgspec.defstruct(f"_Read{cls.__name__}", [(VERSION_KEY, int, 1)], bases=(cls,), frozen=True,
                            kw_only=True)
    return cast(type[P], sub)


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


class _Head(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """An event as ``replay_raw`` reads it: every field typed and checked but the payload and the actor, which are
    walked as msgpack and built only when a fold reads them (the payload is most of an event's decoding; the actor,
    a Struct and a tuple, 0.13 us of the 0.78). Not tracked by the collector (``gc=False``: its fields hold no
    cycle), so a replay does not fill the young generation."""

    seq: int
    time_ns: int
    mono_ns: int
    boot_id: str
    kind: str
    actor_raw: msgspec.Raw = msgspec.field(name="actor")
    payload: msgspec.Raw
    prev: bytes
    key_id: str
    sig: bytes


    @property
    def actor(self) -> Actor:
        try:
            return _actor_decoder.decode(self.actor_raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise InvalidEvent(f"event bytes do not decode: {exc} - at `$.actor`", seq=self.seq) from exc


_head_decoder = msgspec.msgpack.Decoder(_Head)
_actor_decoder = msgspec.msgpack.Decoder(Actor)
_payload_decoder = msgspec.msgpack.Decoder(dict[str, object])


def replay_raw(raws: Iterable[bytes], state: NodeState | None = None,
               digests: Iterable[bytes | None] | None = None) -> NodeState:
    """``replay`` straight from stored bytes, the fast way: no signature and no encoding checks (that is
    ``verify_items``' job), but seq and the hash chain are checked as in ``fold``. Bytes that do not decode raise
    ``InvalidEvent`` naming the seq; an altered event breaks the chain at the event after it. The payload of a kind
    without an apply function is not decoded (only walked): it changes no state, and the chain covers its bytes;
    the actor is typed only when a fold reads it (the chain covers its bytes too).

    The result equals folding event by event. Only the final state is returned, so seq and head are kept in locals
    and written into the state before an apply function (or the closing of a boot) needs it, and at the end.

    ``digests``, when given, yields one item per event of ``raws`` (at least as many): the SHA-256 of the event's
    bytes cut as below (what another process hashed from the same stored bytes, ``storage``'s hashing helper), or
    None to hash it here. A digest is used only where this loop would take the same cut itself (the decoded head
    has a 64-byte signature and a 64-bit time; the helper checked the bytes' layout), so the checks, their order,
    the errors and the state are those of hashing every event here."""
    state = state or NodeState()
    decode_head, apply, raw_apply = _head_decoder.decode, _APPLY.get, _RAW_APPLY.get
    seq, head = state.seq, state.head
    prefix = _UNSIGNED_PREFIX
    boot_id = None  # the last event's: after an event of boot B the latest boot record is closed or B's
    pairs = zip(raws, repeat(None) if digests is None else digests, strict=False)
    for raw, digest in pairs:  # fold() and trusted_event_hash() inlined: this loop is the replay benchmark
        try:
            h = decode_head(raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq + 1) from exc
        if digest is None or len(h.sig) != 64 or h.time_ns < 1 << 32:
            n = len(raw)
            if (raw[n - 87 : n - 81] == _SIG64 and raw[n - 17 : n - 8] == _TIME64 and raw[0] == 0x8A
                    and len(h.sig) == 64 and h.time_ns >= 1 << 32):
                digest = hashlib.sha256(prefix + raw[1 : n - 87] + raw[n - 17 :]).digest()
            else:
                digest = trusted_event_hash(raw, _decode_full(raw, seq))
        if h.seq != seq + 1 or h.prev != head:
            return fold(_catch_up(state, seq, head), _decode_full(raw, seq), digest)  # raises fold's own error
        if h.boot_id != boot_id:
            boot_id = h.boot_id
            boots = state.boots
            if boots and boots[-1].last_seq is None and boots[-1].boot_id != boot_id:
                state = _close_boot(_catch_up(state, seq, head), boot_id, seq)
        typed = raw_apply(h.kind)
        if typed is not None:
            state = typed(state, h, seq)
        else:
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


@applies_typed(Kind.GENESIS, Genesis)
def _genesis(state: NodeState, e: Meta, p: Genesis) -> NodeState:
    return replace(state, origin=p.origin, key_id=e.key_id)


@applies_typed(Kind.KEY_ROTATED, KeyRotated)
def _rotated(state: NodeState, e: Meta, p: KeyRotated) -> NodeState:
    return replace(state, key_id=p.key_id)


@applies_typed(Kind.CHECKPOINT, Checkpointed)
def _checkpoint(state: NodeState, e: Meta, p: Checkpointed) -> NodeState:
    return replace(state, checkpoints=state.checkpoints + 1, sealed=p.sealed)


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


@applies_typed(Kind.BOOT_FALLBACK, BootFallback)
def _fallback(state: NodeState, e: Meta, p: BootFallback) -> NodeState:
    fb = {"from_slot": p.from_slot, "to_slot": p.to_slot, "reason": p.reason, "seq": e.seq}
    return _boot(replace(state, last_fallback=fb), fallback=fb)


@applies(Kind.BOOT_COMMITTED)
def _committed(state: NodeState, e: Event) -> NodeState:
    slot = str(payload_of(e, BootCommitted).slot) if "slot" in e.payload else str(state.active_slot or "")
    slots = dict(state.slots)
    slots[slot] = replace(slots.get(slot, SlotState()), good=True)
    return _boot(replace(state, slots=slots), outcome=BootOutcome.COMMITTED)


_ENDS = {"rebooting": BootOutcome.REBOOTED, "shutting_down": BootOutcome.SHUTDOWN, "stopped": BootOutcome.SHUTDOWN}


@applies_typed(Kind.FSM_TRANSITION, FsmTransition)
def _transition(state: NodeState, e: Meta, p: FsmTransition) -> NodeState:
    dst = p.dst
    state = replace(state, stage=dst)
    if dst in ("rebooting", "shutting_down", "stopped") and state.boots:
        outcome = _ENDS[dst]
        if state.boots[-1].outcome in (BootOutcome.RUNNING, BootOutcome.COMMITTED, BootOutcome.REBOOTED):
            state = _boot(state, outcome=outcome)
    return state


@applies_typed(Kind.SEQUENCE_STARTED, SequenceStarted)
def _seq_started(state: NodeState, e: Meta, p: SequenceStarted) -> NodeState:
    return replace(state, sequence=RunningSequence(p.sequence, str(e.actor), e.seq))


@applies_typed(Kind.SEQUENCE_STOPPED, SequenceStopped)
def _seq_stopped(state: NodeState, e: Meta, p: SequenceStopped) -> NodeState:  # an absent outcome: "ok"
    last = {"name": p.sequence, "outcome": p.outcome, "error": None, "seq": e.seq}
    return replace(state, sequence=None, last_sequence=last)


@applies(Kind.SEQUENCE_FAILED)
def _seq_failed(state: NodeState, e: Event) -> NodeState:
    failed = payload_of(e, SequenceFailed)  # an absent outcome reads as "ok" here, unlike the Struct's default
    last = {"name": failed.sequence, "outcome": failed.outcome if "outcome" in e.payload else "ok",
            "error": failed.error, "seq": e.seq}
    return replace(state, sequence=None, last_sequence=last)


@applies_typed(Kind.CONFIG_APPLIED, ConfigApplied)
def _config_applied(state: NodeState, e: Meta, p: ConfigApplied) -> NodeState:
    digest = p.digest
    try_cfg = None
    if p.mode == "try":
        try_cfg = {"digest": digest, "revert_to": state.config_digest, "deadline_ns": p.deadline_ns}
    return replace(state, config_digest=digest, config_generation=state.config_generation + 1,
                   try_config=try_cfg, staged_config_digest=None)


@applies_typed(Kind.CONFIG_STAGED, ConfigStaged)
def _config_staged(state: NodeState, e: Meta, p: ConfigStaged) -> NodeState:
    return replace(state, staged_config_digest=p.digest)


@applies_typed(Kind.CONFIG_REVERTED, ConfigReverted)
def _config_reverted(state: NodeState, e: Meta, p: ConfigReverted) -> NodeState:
    return replace(state, config_digest=p.digest, try_config=None, config_generation=state.config_generation + 1)


@applies_meta(Kind.CONFIG_CONFIRMED)
def _config_confirmed(state: NodeState, e: Meta) -> NodeState:
    return replace(state, try_config=None)


@applies_typed(Kind.IMAGE_INSTALLED, ImageInstalled)
def _installed(state: NodeState, e: Meta, p: ImageInstalled) -> NodeState:
    slots = dict(state.slots)
    slots[p.slot] = SlotState(p.version, p.digest, False)
    return replace(state, slots=slots)


@applies_meta(Kind.API_DENIED)
def _denied(state: NodeState, e: Meta) -> NodeState:
    return replace(state, denied=state.denied + 1)
