"""Event records and their canonical bytes.

An event's hash covers every field but ``sig``, prefixed with ``EVENT_DOMAIN``; ``sig`` is Ed25519 over
that hash. Canonical encoding is msgpack with sorted map keys (``specs/event-log.md``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .errors import InvalidEvent

__all__ = [
    "EVENT_DOMAIN",
    "GENESIS_PREV",
    "NODE",
    "Actor",
    "Event",
    "UnsignedEvent",
    "decode_event",
    "encode_canonical",
    "encode_event",
    "event_hash",
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


class UnsignedEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    time_ns: int
    mono_ns: int
    boot_id: str
    kind: str
    actor: Actor
    payload: dict[str, Any]
    prev: bytes
    key_id: str


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    time_ns: int
    mono_ns: int
    boot_id: str
    kind: str
    actor: Actor
    payload: dict[str, Any]
    prev: bytes
    key_id: str
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

    def to_json(self) -> dict[str, Any]:
        """A readable rendering (bytes as hex); not canonical, never hashed."""
        return _jsonable(msgspec.to_builtins(self, builtin_types=(bytes,)))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


_encoder = msgspec.msgpack.Encoder(order="sorted")
_event_decoder = msgspec.msgpack.Decoder(Event)


def encode_canonical(obj: Any) -> bytes:
    """msgpack with every map's keys sorted: the same value always gives the same bytes."""
    return _encoder.encode(obj)


def event_hash(event: Event | UnsignedEvent) -> bytes:
    """SHA-256 over the domain prefix and the canonical bytes of every field but ``sig``."""
    body = event.unsigned() if isinstance(event, Event) else event
    return hashlib.sha256(EVENT_DOMAIN + _encoder.encode(body)).digest()


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes, *, seq: int | None = None) -> Event:
    """Decode stored bytes, refusing any encoding that is not the canonical one."""
    try:
        event = _event_decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # invalid UTF-8 is a UnicodeDecodeError
        raise InvalidEvent(f"event bytes do not decode: {exc}", seq=seq) from exc
    if _encoder.encode(event) != data:
        raise InvalidEvent("event bytes are not in canonical encoding", seq=seq)
    return event
