"""The writing side of the chain: turn (kind, actor, payload) into signed events with seq and prev.

Pure: time comes from a ``Clock`` port and signatures from a ``Signer`` port. The storage adapter
owns ordering (one writer) and durability; this class owns the chain and the Merkle frontier.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from errors import InvalidEvent
from pki import Signer

from ._checkpoint import Checkpoint, sign_note
from ._kinds import Kind
from ._merkle import CompactRange, leaf_hash
from ._record import GENESIS_PREV, NODE, Actor, Event, UnsignedEvent, signed_bytes, unsigned_bytes

__all__ = ["LOG_KINDS", "ChainWriter", "Clock", "Prepared", "Signed", "SystemClock"]

Signed = tuple[Event, bytes]
# an event given its seq and prev, not signed yet: (body, its canonical bytes, its hash = what to sign)
Prepared = tuple[UnsignedEvent, bytes, bytes]

# Kinds only the writer makes: appending one from outside would forge the log's structure.
LOG_KINDS = frozenset({Kind.GENESIS, Kind.CHECKPOINT, Kind.KEY_ROTATED})


class Clock(Protocol):
    def time_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ChainWriter:
    """Builds the next events of one log. Not thread-safe: the log's single writer calls it."""

    def __init__(
        self,
        signer: Signer,
        *,
        origin: str,
        boot_id: str,
        clock: Clock | None = None,
        checkpoint_every: int = 1024,
        next_seq: int = 0,
        prev: bytes = GENESIS_PREV,
        tree: CompactRange | None = None,
        since_checkpoint: int = 0,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.signer = signer
        self.origin = origin
        self.boot_id = boot_id
        self.clock: Clock = clock or SystemClock()
        self.checkpoint_every = checkpoint_every
        self.next_seq = next_seq
        self.prev = prev
        self.tree = tree or CompactRange()
        self.since_checkpoint = since_checkpoint
        self._prepared = next_seq
        self._prepared_prev = prev
        if self.tree.size != next_seq:
            raise ValueError(f"tree size {self.tree.size} does not match next seq {next_seq}")

    def prepare(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> Prepared:
        """Give the next event its seq and prev; the signature (of ``prepared[2]``) may then be made anywhere (even
        in parallel), but ``complete`` must be called in seq order before anything else is prepared past a
        checkpoint.

        The log's own kinds (genesis, checkpoint, key rotation) are refused: only this writer makes them."""
        _check_appendable(kind, actor)
        return self._prepare(kind, payload, actor)

    def _prepare(self, kind: str, payload: Mapping[str, object], actor: Actor) -> Prepared:
        clock = self.clock
        try:
            body = UnsignedEvent(self._prepared, clock.time_ns(), clock.monotonic_ns(), self.boot_id, kind, actor,
                                 dict(payload), self._prepared_prev, self.signer.key_id)
            enc, digest = unsigned_bytes(body)
        except Exception as exc:  # msgspec refuses it: an unsupported type, a non-str key, an int out of range
            raise InvalidEvent(f"cannot append {kind}: payload has no canonical encoding ({exc})") from exc
        self._prepared += 1
        self._prepared_prev = digest
        return body, enc, digest

    def checkpoint_due(self) -> bool:
        """Whether the events prepared so far call for a checkpoint after them."""
        return self.since_checkpoint + (self._prepared - self.next_seq) >= self.checkpoint_every

    def complete(self, prepared: Prepared, sig: bytes) -> Signed:
        """The signed event and its stored bytes: the prepared bytes with the signature put in, not encoded again."""
        b, enc, digest = prepared
        if b.seq != self.next_seq:
            raise ValueError(f"complete() out of order: seq {b.seq}, expected {self.next_seq}")
        event = Event(b.seq, b.time_ns, b.mono_ns, b.boot_id, b.kind, b.actor, b.payload, b.prev, b.key_id, sig)
        raw = signed_bytes(enc, event)
        self.next_seq += 1
        self.prev = digest
        self.tree.append(leaf_hash(raw))
        self.since_checkpoint += 1
        return event, raw

    def _sign(self, kind: str, payload: Mapping[str, object], actor: Actor) -> Signed:
        if self._prepared != self.next_seq:
            raise ValueError("events are prepared but not completed")
        prepared = self._prepare(kind, payload, actor)
        return self.complete(prepared, self.signer.sign(prepared[2]))

    def genesis(self, cert_der: bytes, actor: Actor = NODE) -> Signed:
        if self.next_seq != 0:
            raise ValueError("genesis must be the first event")
        return self._sign(Kind.GENESIS, {"origin": self.origin, "cert": cert_der}, actor)

    def append(self, kind: str, payload: Mapping[str, object], actor: Actor = NODE) -> list[Signed]:
        """The event, followed by a checkpoint when one is due."""
        _check_appendable(kind, actor)
        out = [self._sign(kind, payload, actor)]
        if self.since_checkpoint >= self.checkpoint_every:
            out.append(self.checkpoint())
        return out

    def checkpoint(self, *, sealed: bool = False, reason: str = "") -> Signed:
        cp = Checkpoint(self.origin, self.tree.size, self.tree.root())
        payload = {
            "size": cp.size,
            "root": cp.root,
            "frontier": self.tree.nodes,
            "note": sign_note(cp, self.signer),
            "sealed": sealed,
            "reason": reason,
        }
        signed = self._sign(Kind.CHECKPOINT, payload, NODE)
        self.since_checkpoint = 0
        return signed

    def rotate(self, new_signer: Signer, cert_der: bytes, actor: Actor = NODE) -> Signed:
        """``key.rotated`` carrying the next key's certificate, signed by the current key."""
        signed = self._sign(Kind.KEY_ROTATED, {"cert": cert_der, "key_id": new_signer.key_id}, actor)
        self.signer = new_signer
        return signed


def _check_appendable(kind: str, actor: Actor) -> None:
    if not isinstance(kind, str) or not kind or not isinstance(actor, Actor):
        raise InvalidEvent(f"cannot append {kind!r} by {actor!r}: kind must be a non-empty str, actor an Actor")
    if kind in LOG_KINDS:
        raise InvalidEvent(f"cannot append {kind}: the log writes it itself (seal, rotate)", kind=kind)
