"""The payload schemas: the base of every payload Struct, its schema version, and the upcasters that read older
versions (the Structs, one per kind, are in ``events.payloads``).

On the wire a payload stays the msgpack map ``specs/event-log.md`` describes (the bytes of every log written so
far are unchanged); a version 1 payload carries no version key, a later one carries ``"v": n``. Reading goes:
the map, upcast from its version to the kind's current one (one registered step per version, as
eventsourcing's upcasting), then ``msgspec.convert`` into the kind's Struct. Keys a Struct does not name are
ignored on read (a newer writer's additions); a key it names with the wrong type is ``InvalidEvent``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, TypeVar

import msgspec

from errors import InvalidEvent

from ._record import Event

__all__ = [
    "SCHEMAS",
    "VERSION_KEY",
    "Payload",
    "Schemas",
    "payload_of",
    "read_payload",
    "to_payload",
]

VERSION_KEY = "v"

P = TypeVar("P", bound="Payload")
Upcaster = Callable[[dict[str, object]], dict[str, object]]


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """The base of every payload Struct; ``KIND`` names its kind, ``VERSION`` its schema version."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


class Schemas:
    """Kind -> (current version, Struct), and the upcasters from each older version to the next."""

    def __init__(self, types: Mapping[str, type[Payload]] | None = None,
                 upcasters: Mapping[tuple[str, int], Upcaster] | None = None) -> None:
        self.types: dict[str, type[Payload]] = dict(types or {})
        self.upcasters: dict[tuple[str, int], Upcaster] = dict(upcasters or {})

    def register(self, cls: type[P]) -> type[P]:
        self.types[cls.KIND] = cls
        return cls

    def upcaster(self, kind: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the step that turns a ``from_version`` payload of ``kind`` into a ``from_version + 1`` one."""
        def add(fn: Upcaster) -> Upcaster:
            self.upcasters[(kind, from_version)] = fn
            return fn

        return add

    def copy(self) -> Schemas:
        return Schemas(self.types, self.upcasters)

    def read(self, kind: str, payload: Mapping[str, object], *, seq: int | None = None) -> Payload | None:
        """The typed payload of an event of ``kind`` (None for a kind without a Struct: a record of the
        bootloader's own, or a kind of a newer writer)."""
        cls = self.types.get(kind)
        if cls is None:
            return None
        data: Mapping[str, object] = payload
        version: object = 1
        if VERSION_KEY in payload:  # a copy only for the rare versioned payload (replay reads every event)
            rest = dict(payload)
            version = rest.pop(VERSION_KEY)
            data = rest
        if not isinstance(version, int) or not 1 <= version <= cls.VERSION:
            raise InvalidEvent(f"{kind} payload version {version!r}: this reader knows 1..{cls.VERSION}", seq=seq,
                               kind=kind)
        while version < cls.VERSION:
            step = self.upcasters.get((kind, version))
            if step is None:
                raise InvalidEvent(f"{kind} payload version {version}: no upcaster to {version + 1}", seq=seq,
                                   kind=kind)
            data = step(dict(data))
            version += 1
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(f"{kind} payload: {exc}", seq=seq, kind=kind) from exc


def to_payload(p: Payload) -> dict[str, object]:
    """The map to put in an event for ``p`` (with the version key from version 2 on)."""
    out: dict[str, object] = msgspec.to_builtins(p, builtin_types=(bytes,))
    if p.VERSION > 1:
        out[VERSION_KEY] = p.VERSION
    return out


SCHEMAS = Schemas()


def read_payload(event: Event, schemas: Schemas | None = None) -> Payload | None:
    """``event``'s payload as the Struct of its kind (upcast from the version it was written in), or None for a
    kind without one; a reader of several kinds matches on the Struct's type."""
    return (schemas or SCHEMAS).read(event.kind, event.payload, seq=event.seq)


def payload_of(event: Event, cls: type[P], schemas: Schemas | None = None) -> P:
    """``event``'s payload as ``cls`` (the Struct of its kind), upcast from the version it was written in."""
    got = (schemas or SCHEMAS).read(event.kind, event.payload, seq=event.seq)
    if not isinstance(got, cls):
        raise InvalidEvent(f"seq {event.seq}: a {event.kind} payload is not a {cls.__name__}", seq=event.seq)
    return got
