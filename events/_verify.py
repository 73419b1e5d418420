"""Offline verification of a log (or a contiguous part of one) with nothing but the CA certificate.

Checks, in order of position: canonical encoding, contiguous seq, ``prev`` = hash of the event before,
the signing key is the one currently certified in this log, the Ed25519 signature, certificates
(genesis, rotations) issued by the CA, and every checkpoint's size, Merkle root and signed note.
Signatures are checked on a thread pool (Ed25519 releases the GIL); the first bad seq wins.

These are the log's only checks: opening a log verifies its tail with the same verifier (``events._tail``),
without a CA (the log's own certificates are taken as they are; the CA check is the auditor's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypedDict

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from errors import InvalidEvent, TamperedLog, UntrustedKey, VerificationError
from pki import cert_public_raw, cert_subject, key_id_for, load_certificate, verify_log_certificate

from ._checkpoint import Checkpoint, verify_note
from ._kinds import Kind
from ._merkle import CompactRange, leaf_hash
from ._record import GENESIS_PREV, Event, decode_event, trusted_event_hash
from .payloads import Checkpointed, Genesis, certificate_of, payload_of

__all__ = ["ChainVerifier", "KeyInfo", "VerifyReport", "verify_items"]

_BATCH = 2048
_Sig = tuple[int, bytes, bytes, bytes]  # seq, public key, signature, event hash


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: str
    subject: str
    since_seq: int
    not_before: str
    not_after: str


class CheckpointInfo(TypedDict):
    """One verified checkpoint of the log, as a report lists it."""

    seq: int
    size: int
    root: str  # hex
    sealed: bool
    reason: object  # as the checkpoint event recorded it
    note: str


class VerifyReport(msgspec.Struct):
    origin: str
    first_seq: int
    last_seq: int
    events: int
    checkpoints: list[CheckpointInfo]
    keys: list[KeyInfo]
    first_time_ns: int
    last_time_ns: int
    boots: int
    sealed: bool
    uncovered_tail: int  # events after the last checkpoint: signed, but not yet committed to by one
    head: bytes
    kinds: dict[str, int]


@dataclass
class _Pending:
    seq: int
    reason: str
    message: str


@dataclass
class ChainVerifier:
    """Feed ``(position, raw)`` in order; ``finish()`` returns the report or raises ``TamperedLog``.

    For a part of a log that does not start at 0, pass ``start_seq``, the certified ``keys`` in force and,
    when known, the ``prev`` hash; the Merkle checks then rest on the inclusion proofs of the bundle, or on
    ``frontier``, the Merkle frontier of the events before ``start_seq`` (a checkpoint's) when it is known.
    ``ca`` None takes the log's certificates as they are (an agent opening its own log: ``events._tail``).
    """

    ca: x509.Certificate | None
    start_seq: int = 0
    prev: bytes | None = None
    keys: dict[str, bytes] = field(default_factory=dict)
    current_key: str | None = None
    origin: str | None = None
    threads: int = max(1, min(2, os.cpu_count() or 1))
    anchors: list[Checkpoint] = field(default_factory=list)  # a bundle's anchor, once verified
    consistency: dict[int, bytes] = field(default_factory=dict)  # {size: root} proven a prefix of the anchor
    frontier: CompactRange | None = None

    def __post_init__(self) -> None:
        self._expected = self.start_seq
        self._tree: CompactRange | None = CompactRange() if self.start_seq == 0 else self.frontier
        if self.start_seq == 0 and self.prev is None:
            self.prev = GENESIS_PREV
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._jobs: list[tuple[int, Future[int | None] | int | None]] = []
        self._batch: list[_Sig] = []
        self._fail: _Pending | None = None
        self._key_infos: list[KeyInfo] = []
        self._checkpoints: list[CheckpointInfo] = []
        self._kinds: dict[str, int] = {}
        self._boots: set[str] = set()
        self._first_time = 0
        self._last: Event | None = None
        self._since_cp = 0
        self._lookahead: tuple[int, bytes] | None = None
        self.leaf_hashes: list[bytes] = []
        self.roots_at: dict[int, bytes] = {}

    @property
    def tree(self) -> CompactRange | None:
        """The Merkle frontier of every event fed so far (None when the start's is not known)."""
        return self._tree

    # -- feeding ---------------------------------------------------------------------------------
    def feed_all(self, items: Iterable[tuple[int, bytes]]) -> VerifyReport:
        it = iter(items)
        pool = self._pool is not None
        for n, (pos, raw) in enumerate(it):
            if self._fail is not None:
                break
            self._feed(pos, raw, it)
            if pool and not n & 63:
                # a signature thread wants the GIL back after each signature; this loop would keep it for the
                # whole 5 ms switch interval, leaving that core idle: give it up every 64 events (~0.4 ms)
                time.sleep(0)
        return self.finish()

    def _bad(self, seq: int, reason: str, message: str) -> None:
        if self._fail is None or seq < self._fail.seq:
            self._fail = _Pending(seq, reason, message)

    def _feed(self, pos: int, raw: bytes, rest: Iterator[tuple[int, bytes]]) -> None:
        seq = self._expected
        try:
            event = decode_event(raw, seq=pos)
        except InvalidEvent as exc:
            return self._bad(pos, "undecodable", f"seq {pos}: {exc.message}")
        if event.seq != seq or pos != seq:
            return self._misplaced(seq, pos, event, rest)
        digest = trusted_event_hash(raw, event)  # decode_event checked raw is canonical
        if self.prev is not None and event.prev != self.prev:
            reason = "foreign" if event.key_id != self.current_key and self.current_key else "chain"
            return self._bad(seq, reason, f"seq {seq}: prev hash does not match the event before it"
                             + (" (event from another log)" if reason == "foreign" else ""))
        if not self._key_for(event, seq):
            return
        self._queue_sig(seq, self.keys[event.key_id], event.sig, digest)
        if not self._kind_checks(event, raw):
            return
        leaf = leaf_hash(raw)
        if self._tree is not None:
            self._tree.append(leaf)
        self.leaf_hashes.append(leaf)
        self.prev = digest
        self._expected += 1
        self._kinds[event.kind] = self._kinds.get(event.kind, 0) + 1
        self._boots.add(event.boot_id)
        if self._last is None:
            self._first_time = event.time_ns
        self._last = event
        return None

    def _misplaced(self, seq: int, pos: int, event: Event, rest: Iterator[tuple[int, bytes]]) -> None:
        if pos != event.seq:
            return self._bad(min(pos, seq), "reordered",
                             f"seq {min(pos, seq)}: the event stored at position {pos} carries seq {event.seq}")
        nxt = next(rest, None)
        if nxt is not None and nxt[0] < pos:
            return self._bad(seq, "reordered", f"seq {seq}: events are out of order")
        return self._bad(seq, "gap", f"seq {seq}: missing (the log jumps from {seq - 1} to {event.seq})")

    def _key_for(self, event: Event, seq: int) -> bool:
        if event.kind == Kind.GENESIS and seq == 0:
            pub = self._certify(event, seq)
            if pub is None:
                return False
            if key_id_for(pub) != event.key_id:
                self._bad(seq, "untrusted-key", "seq 0: genesis is not signed by the key it certifies")
                return False
            self.current_key = event.key_id
            self.origin = payload_of(event, Genesis).origin  # read once already: its certificate verified
        if event.key_id not in self.keys or event.key_id != self.current_key:
            self._bad(seq, "untrusted-key",
                      f"seq {seq}: signed by key {event.key_id}, which is not the log key the CA certified"
                      + (f" (expected {self.current_key})" if self.current_key else ""))
            return False
        return True

    def _certify(self, event: Event, seq: int) -> bytes | None:
        try:
            cert = load_certificate(certificate_of(event))
            pub = verify_log_certificate(cert, self.ca) if self.ca is not None else cert_public_raw(cert)
            kid = key_id_for(pub)
            info = KeyInfo(kid, cert_subject(cert)[0], seq, cert.not_valid_before_utc.isoformat(),
                           cert.not_valid_after_utc.isoformat())
        except (InvalidEvent, KeyError, TypeError, ValueError, UntrustedKey) as exc:
            msg = exc.message if isinstance(exc, UntrustedKey) else f"no valid certificate in payload ({exc})"
            self._bad(seq, "untrusted-key", f"seq {seq}: {msg}")
            return None
        self.keys[kid] = pub
        self._key_infos.append(info)
        return pub

    def _kind_checks(self, event: Event, raw: bytes) -> bool:
        seq = event.seq
        if event.kind == Kind.KEY_ROTATED:
            pub = self._certify(event, seq)
            if pub is None:
                return False
            self.current_key = key_id_for(pub)
        elif event.kind == Kind.CHECKPOINT:
            return self._check_checkpoint(event)
        self._since_cp += 1
        return True

    def _check_checkpoint(self, event: Event) -> bool:
        seq = event.seq
        try:
            p = payload_of(event, Checkpointed)
            size, root, note = p.size, p.root, p.note
            cp = verify_note(note, self.keys[event.key_id])
        except (KeyError, TypeError, ValueError, VerificationError, InvalidEvent) as exc:
            self._bad(seq, "checkpoint", f"seq {seq}: checkpoint is malformed or its note does not verify ({exc})")
            return False
        if size != seq or cp.size != size or cp.root != root or (self.origin and cp.origin != self.origin):
            self._bad(seq, "checkpoint", f"seq {seq}: checkpoint note does not match its event")
            return False
        if self._tree is not None and self._tree.root() != root:
            self._bad(seq, "checkpoint", f"seq {seq}: checkpoint root does not match the events before it")
            return False
        self.roots_at[size] = root
        self._checkpoints.append({"seq": seq, "size": size, "root": root.hex(),
                                  "sealed": p.sealed, "reason": p.reason, "note": note})
        self._since_cp = 0
        return True

    # -- signatures --------------------------------------------------------------------------------
    def _queue_sig(self, seq: int, pub: bytes, sig: bytes, digest: bytes) -> None:
        self._batch.append((seq, pub, sig, digest))
        if len(self._batch) >= _BATCH:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._pool is None:
            self._jobs.append((batch[0][0], _check_batch(batch)))
        else:
            self._jobs.append((batch[0][0], self._pool.submit(_check_batch, batch)))

    def finish(self) -> VerifyReport:
        self._flush_batch()
        for _, job in self._jobs:
            bad = job.result() if isinstance(job, Future) else job
            if bad is not None:
                self._bad(bad, "signature", f"seq {bad}: signature does not verify (event or signature altered)")
                break
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._fail is not None:
            f = self._fail
            raise TamperedLog(f.message, seq=f.seq, reason=f.reason)
        return self.report()

    def report(self) -> VerifyReport:
        last = self._last
        sealed = last is not None and last.kind == Kind.CHECKPOINT and _sealed(last)
        return VerifyReport(
            origin=self.origin or "",
            first_seq=self.start_seq,
            last_seq=self._expected - 1,
            events=self._expected - self.start_seq,
            checkpoints=self._checkpoints,
            keys=self._key_infos,
            first_time_ns=self._first_time,
            last_time_ns=last.time_ns if last else 0,
            boots=len(self._boots),
            sealed=sealed,
            uncovered_tail=self._since_cp,
            head=self.prev or b"",
            kinds=dict(sorted(self._kinds.items())),
        )


def _check_batch(batch: list[_Sig]) -> int | None:
    """The first seq whose signature does not verify (a key object is made once per key, not per event)."""
    keys: dict[bytes, Ed25519PublicKey] = {}
    for seq, pub, sig, digest in batch:
        key = keys.get(pub)
        try:
            if key is None:
                key = keys[pub] = Ed25519PublicKey.from_public_bytes(pub)
            key.verify(sig, digest)
        except (InvalidSignature, ValueError):
            return seq
    return None


def verify_items(
    items: Iterable[tuple[int, bytes]], ca: x509.Certificate, *, threads: int | None = None
) -> VerifyReport:
    """Verify a whole log from seq 0."""
    v = ChainVerifier(ca) if threads is None else ChainVerifier(ca, threads=threads)
    return v.feed_all(items)


def _sealed(checkpoint: Event) -> bool:
    """Whether a checkpoint event seals the log (False for a payload that does not read as a checkpoint's)."""
    try:
        return payload_of(checkpoint, Checkpointed).sealed
    except InvalidEvent:
        return False
