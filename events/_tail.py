"""Opening a log: verify its tail since the last checkpoint and rebuild what the writer continues from (the chain
head, the Merkle frontier, the key in force).

Pure: the storage adapter hands in two readers of the stored bytes, newest first (to find the last checkpoint, and
the certificate of the key that signed it when the caller does not know that key) and oldest first (from that
checkpoint to the end). The checks are the offline verifier's
(``ChainVerifier``) without a CA: an agent trusts the certificates of its own log (the CA check is the
auditor's). Everything before the last checkpoint is left to the auditor, so that opening stays fast.
Raises ``TamperedLog`` naming the first bad seq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from errors import InvalidEvent, TamperedLog, UntrustedKey, VerificationError
from pki import cert_public_raw, key_id_for, load_certificate

from ._checkpoint import parse_note
from ._kinds import Kind
from ._merkle import CompactRange
from ._record import GENESIS_PREV, decode_event
from ._verify import ChainVerifier
from .payloads import Checkpointed, certificate_of, payload_of

__all__ = ["LogTail", "NewestFirst", "OldestFirst", "verify_tail"]

NewestFirst = Callable[[int | None], Iterable[tuple[int, bytes]]]
"""(seq, stored bytes) newest first, from the one before the seq given (None: from the last) down to seq 0."""
OldestFirst = Callable[[int], Iterable[tuple[int, bytes]]]
"""(seq, stored bytes) in order, from the seq given to the last."""

_CERTIFYING = (Kind.GENESIS.encode(), Kind.KEY_ROTATED.encode())


@dataclass
class LogTail:
    """What opening a log learns from its tail: enough to continue the chain."""

    next_seq: int
    prev: bytes
    tree: CompactRange
    since_checkpoint: int
    origin: str
    key_id: str | None  # the log key in force at the end (None: an empty log)


@dataclass
class _Start:
    """The last checkpoint: where the tail starts, with the chain head and Merkle frontier before it."""

    seq: int
    prev: bytes
    tree: CompactRange
    origin: str
    key_id: str  # who signed it: the log key in force there


def _tail_start(newest_first: Iterable[tuple[int, bytes]]) -> _Start | None:
    """The last checkpoint among the events (newest first); None when there is none (the tail is the whole log).
    Its frontier must be one: the root check against it is ``verify_tail``'s, the verifier's own."""
    for seq, raw in newest_first:
        try:
            event = decode_event(raw, seq=seq)
        except InvalidEvent as exc:
            raise TamperedLog(f"seq {seq}: {exc.message}", seq=seq, reason="undecodable") from exc
        if event.kind != Kind.CHECKPOINT:
            continue
        try:
            cp = payload_of(event, Checkpointed)
            tree = CompactRange(cp.size, cp.frontier)
            origin = parse_note(cp.note)[0].origin
        except (InvalidEvent, ValueError, VerificationError) as exc:
            raise TamperedLog(f"seq {seq}: malformed checkpoint", seq=seq, reason="checkpoint") from exc
        return _Start(seq, event.prev, tree, origin, event.key_id)
    return None


def _certified_key(newest_first: Iterable[tuple[int, bytes]], key_id: str) -> bytes | None:
    """The public key of ``key_id`` from the genesis or rotation event (newest first) that certified it."""
    for seq, raw in newest_first:
        if not any(kind in raw for kind in _CERTIFYING):  # cheap filter before decoding
            continue
        try:
            event = decode_event(raw, seq=seq)
            if event.kind in (Kind.GENESIS, Kind.KEY_ROTATED):
                pub = cert_public_raw(load_certificate(certificate_of(event)))
                if key_id_for(pub) == key_id:
                    return pub
        except (InvalidEvent, KeyError, TypeError, ValueError, UntrustedKey):
            continue
    return None


def verify_tail(newest_first: NewestFirst, oldest_first: OldestFirst, known_keys: Mapping[str, bytes]) -> LogTail:
    """Verify the events from the last checkpoint (none: from seq 0) to the end with the log keys known
    (``known_keys``: key id -> raw public key, the writer's own) and those the log certifies; return the tail
    to continue from."""
    start = _tail_start(newest_first(None))
    keys = dict(known_keys)
    if start is None:
        verifier = ChainVerifier(None, keys=keys, threads=1)
    else:
        if start.key_id not in keys:  # the tail starts under an older key: its certificate is further back
            found = _certified_key(newest_first(start.seq), start.key_id)
            if found is not None:
                keys[start.key_id] = found
        verifier = ChainVerifier(None, start_seq=start.seq, prev=start.prev, keys=keys, threads=1,
                                 current_key=start.key_id, origin=start.origin, frontier=start.tree)
    report = verifier.feed_all(oldest_first(start.seq if start is not None else 0))
    if report.events == 0:
        return LogTail(0, GENESIS_PREV, CompactRange(), 0, "", None)
    assert verifier.tree is not None  # from seq 0, or from the checkpoint's frontier
    return LogTail(report.last_seq + 1, report.head, verifier.tree, report.uncovered_tail, report.origin,
                   verifier.current_key)
