"""Event records and their canonical bytes.

An event's hash covers every field but ``sig``, prefixed with ``EVENT_DOMAIN``; ``sig`` is Ed25519 over
that hash. Canonical encoding is msgpack with sorted map keys (``specs/event-log.md``).
"""

from __future__ import annotations

import hashlib

import msgspec

from errors import InvalidEvent

__all__ = [
    "EVENT_DOMAIN",
    "GENESIS_PREV",
    "HASH_CUT",
    "NODE",
    "Actor",
    "Event",
    "UnsignedEvent",
    "decode_event",
    "encode_canonical",
    "encode_event",
    "event_hash",
    "signed_bytes",
    "stored_event_hash",
    "unsigned_bytes",
]

EVENT_DOMAIN = b"graven/event/v1\x00"
GENESIS_PREV = b"\x00" * 32


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who caused an event: ``node``, ``bootloader``, or an API client's subject and roles."""

    id: str
    roles: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.id}[{','.join(self.roles)}]" if self.roles else self.id


NODE = Actor("node")


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # the fields an event's hash covers; neither kind of event is the other (an Event hashed as a body would
    # hash its signature too)
    seq: int
    time_ns: int
    mono_ns: int
    boot_id: str
    kind: str
    actor: Actor
    payload: dict[str, object]
    prev: bytes
    key_id: str


class UnsignedEvent(_Body, frozen=True, forbid_unknown_fields=True):
    """An event before it is signed: what its hash covers and its signature signs."""


class Event(_Body, frozen=True, forbid_unknown_fields=True):
    sig: bytes

    def unsigned(self) -> UnsignedEvent:
        return UnsignedEvent(
            seq=self.seq,
            time_ns=self.time_ns,
            mono_ns=self.mono_ns,
            boot_id=self.boot_id,
            kind=self.kind,
            actor=self.actor,
            payload=self.payload,
            prev=self.prev,
            key_id=self.key_id,
        )

    def to_json(self) -> dict[str, object]:
        """A readable rendering (bytes as hex); not canonical, never hashed."""
        return jsonable_map(msgspec.to_builtins(self, builtin_types=(bytes,)))


def jsonable_map(value: dict[str, object]) -> dict[str, object]:
    """``value`` with every bytes inside it as hex (what ``to_json`` renderings print)."""
    return {k: _jsonable(v) for k, v in value.items()}


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


_encoder = msgspec.msgpack.Encoder(order="sorted")
_event_decoder = msgspec.msgpack.Decoder(Event)


def encode_canonical(obj: object) -> bytes:
    """msgpack with every map's keys sorted: the same value always gives the same bytes."""
    return _encoder.encode(obj)


def event_hash(event: Event | UnsignedEvent) -> bytes:
    """SHA-256 over the domain prefix and the canonical bytes of every field but ``sig``."""
    body = event.unsigned() if isinstance(event, Event) else event
    return hashlib.sha256(EVENT_DOMAIN + _encoder.encode(body)).digest()


_SIG_KEY = b"\xa3sig"
_TIME_KEY = b"\xa7time_ns"


def stored_event_hash(raw: bytes, event: Event) -> bytes:
    """``event_hash(event)`` from ``raw`` = ``encode_event(event)`` (as ``decode_event`` checked it), without
    encoding the event again: in sorted key order ``sig`` and ``time_ns`` are the last two entries of the map,
    so the hashed body is ``raw`` with the ``sig`` entry cut out and a map header one entry shorter."""
    tail = _TIME_KEY + _encoder.encode(event.time_ns)
    suffix = _SIG_KEY + _encoder.encode(event.sig) + tail
    if raw[:1] != b"\x8a" or not raw.endswith(suffix):  # not the canonical bytes of this event
        return event_hash(event)
    return hashlib.sha256(_UNSIGNED_PREFIX + raw[1 : len(raw) - len(suffix)] + tail).digest()


_SIG64 = _SIG_KEY + b"\xc4\x40"  # a 64-byte bin
_TIME64 = _TIME_KEY + b"\xcf"  # a uint64
_UNSIGNED_PREFIX = EVENT_DOMAIN + b"\x89"  # the domain, then a map of the 9 fields but sig
# What the fast cut hashes, for a process that hashes stored events without this package (storage._hash_child):
# SHA-256 of PREFIX + raw[1 : n - 87] + raw[n - 17 :] when raw[0] is 0x8a, raw[n - 87 : n - 81] is SIG64 and
# raw[n - 17 : n - 8] is TIME64 (the decoded event must also have a 64-byte sig and a time of 2**32 or more).
HASH_CUT = (_UNSIGNED_PREFIX, _SIG64, _TIME64)


def trusted_event_hash(raw: bytes, event: Event) -> bytes:
    """``stored_event_hash`` for bytes already trusted to be canonical (a verified log, replay): the layout every
    event this code writes has (64-byte signature, 64-bit time) is cut without encoding anything; other layouts
    take the checked path. Given non-canonical bytes the result is a hash the next event's ``prev`` won't match."""
    n = len(raw)
    if (len(event.sig) == 64 and event.time_ns >= 1 << 32 and raw[:1] == b"\x8a"
            and raw[n - 87 : n - 81] == _SIG64 and raw[n - 17 : n - 8] == _TIME64):
        return hashlib.sha256(_UNSIGNED_PREFIX + raw[1 : n - 87] + raw[n - 17 :]).digest()
    return stored_event_hash(raw, event)



def unsigned_bytes(body: UnsignedEvent) -> tuple[bytes, bytes]:
    """(canonical bytes of ``body``, its event hash): what ``signed_bytes`` needs, and what the signature signs."""
    enc = _encoder.encode(body)
    return enc, hashlib.sha256(EVENT_DOMAIN + enc).digest()


def signed_bytes(unsigned: bytes, event: Event) -> bytes:
    """``encode_event(event)`` given ``unsigned`` = the canonical bytes of ``event.unsigned()``, without encoding
    the event again: in sorted key order ``sig`` goes right before ``time_ns``, the last entry, and the map header
    counts one entry more. Every other layout than a 64-byte signature and a 64-bit time is encoded in full."""
    n = len(unsigned)
    if (len(event.sig) == 64 and event.time_ns >= 1 << 32 and unsigned[:1] == b"\x89"
            and unsigned[n - 17 : n - 8] == _TIME64):
        return b"".join((b"\x8a", unsigned[1 : n - 17], _SIG64, event.sig, unsigned[n - 17 :]))
    return _encoder.encode(event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes, *, seq: int | None = None) -> Event:
    """Decode stored bytes, refusing any encoding that is not the canonical one."""
    try:
        event = _event_decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # invalid UTF-8 is a UnicodeDecodeError
        raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq) from exc
    try:
        again = _encoder.encode(event)
    except TypeError as exc:  # a map key that is not a string (in a payload's nested map): never canonical
        raise InvalidEvent(f"event bytes are not in canonical encoding: {exc}", seq=seq) from exc
    if again != data:
        raise InvalidEvent("event bytes are not in canonical encoding", seq=seq)
    return event
