"""Opening a log: verify its tail since the last checkpoint and rebuild the chain head and Merkle frontier."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from errors import InvalidEvent, TamperedLog, UntrustedKey, VerificationError
from events import GENESIS_PREV, CompactRange, Event, Kind, decode_event, leaf_hash, parse_note, trusted_event_hash
from pki import cert_public_raw, key_id_for, load_certificate, verify_signature

from ._lmdb_reader import KEY, LogReader, seq_key

__all__ = ["Tail", "dummy_frontier", "read_tail"]

@dataclass
class Tail:
    """What opening a log learns from its tail: enough to continue the chain."""

    next_seq: int
    prev: bytes
    tree: CompactRange
    since_checkpoint: int
    origin: str
    key_id: str | None


def read_tail(reader: LogReader, known_keys: Mapping[str, bytes]) -> Tail:
    """Verify the events since the last checkpoint and rebuild the chain head and Merkle frontier.

    Raises ``TamperedLog`` naming the first bad seq.
    """
    n = reader.next_seq()
    if n == 0:
        return Tail(0, GENESIS_PREV, CompactRange(), 0, "", None)
    keys = dict(known_keys)
    start, tree, prev, origin = 0, CompactRange(), GENESIS_PREV, ""
    with reader._env.begin(db=reader._db) as txn:
        cur = txn.cursor()
        cur.last()
        for key, value in cur.iterprev():
            seq = KEY.unpack(key)[0]
            try:
                event = decode_event(bytes(value), seq=seq)
            except InvalidEvent as exc:
                raise TamperedLog(f"seq {seq}: {exc.message}", seq=seq, reason="undecodable") from exc
            if event.kind == Kind.CHECKPOINT:
                try:
                    frontier, size = event.payload["frontier"], event.payload["size"]
                    if not (isinstance(size, int) and isinstance(frontier, list)
                            and all(isinstance(h, bytes) for h in frontier)):
                        raise TypeError("size or frontier has the wrong type")
                    tree = CompactRange(size, frontier)
                    origin = parse_note(str(event.payload.get("note", "")))[0].origin
                except (KeyError, TypeError, ValueError, VerificationError) as exc:
                    raise TamperedLog(f"seq {seq}: malformed checkpoint", seq=seq, reason="checkpoint") from exc
                if tree.size != seq or tree.root() != event.payload.get("root"):
                    raise TamperedLog(f"seq {seq}: checkpoint frontier does not match its root", seq=seq,
                                      reason="checkpoint")
                start, prev = seq, event.prev
                break
    current: str | None = None  # the log key in force: only it may sign, until it rotates
    since = 0
    expected = start
    for seq, raw in reader.read_raw(start):
        if seq != expected:
            raise TamperedLog(f"seq {expected}: missing (log jumps to {seq})", seq=expected, reason="gap")
        try:
            event = decode_event(raw, seq=seq)
        except InvalidEvent as exc:
            raise TamperedLog(f"seq {seq}: {exc.message}", seq=seq, reason="undecodable") from exc
        if event.seq != seq:
            raise TamperedLog(f"seq {seq}: stored event carries seq {event.seq}", seq=seq, reason="reordered")
        if event.prev != prev:
            raise TamperedLog(f"seq {seq}: prev hash does not match the event before it", seq=seq, reason="chain")
        certified = _cert_key(event) if event.kind in (Kind.GENESIS, Kind.KEY_ROTATED) else None
        if event.kind == Kind.GENESIS and certified is not None:
            keys[key_id_for(certified)] = certified
            current = key_id_for(certified)
        if current is None:  # the tail starts at a checkpoint: whoever signed it held the key then
            current = event.key_id
            if current not in keys:
                found = _find_certified_key(reader, start, current)
                if found is not None:
                    keys[current] = found
        if event.key_id != current:
            raise TamperedLog(f"seq {seq}: signed by {event.key_id}, not by the log key {current}", seq=seq,
                              reason="untrusted-key")
        pub_key = keys.get(event.key_id)
        digest = trusted_event_hash(raw, event)  # decode_event checked raw is canonical
        if pub_key is None or not verify_signature(pub_key, event.sig, digest):
            raise TamperedLog(f"seq {seq}: signature does not verify", seq=seq, reason="signature")
        if event.kind == Kind.GENESIS:
            origin = str(event.payload.get("origin", ""))
        elif event.kind == Kind.KEY_ROTATED and certified is not None:
            keys[key_id_for(certified)] = certified
            current = key_id_for(certified)
        tree.append(leaf_hash(raw))
        since = 0 if event.kind == Kind.CHECKPOINT else since + 1
        prev = digest
        expected += 1
    return Tail(expected, prev, tree, since, origin, current)


def _cert_key(event: Event) -> bytes:
    """The public key a genesis or rotation event certifies (the CA check is the auditor's: no CA here)."""
    try:
        return cert_public_raw(load_certificate(event.payload["cert"]))
    except (KeyError, TypeError, ValueError, UntrustedKey) as exc:
        raise TamperedLog(f"seq {event.seq}: bad certificate", seq=event.seq, reason="untrusted-key") from exc


def _find_certified_key(reader: LogReader, before: int, key_id: str) -> bytes | None:
    """Walk back from ``before`` to the genesis or rotation event that certified ``key_id``."""
    with reader._env.begin(db=reader._db) as txn:
        cur = txn.cursor()
        if not cur.set_key(seq_key(before)):
            return None
        for key, value in cur.iterprev():
            raw = bytes(value)
            if b"log.genesis" not in raw and b"key.rotated" not in raw:  # cheap filter before decoding
                continue
            try:
                event = decode_event(raw, seq=KEY.unpack(key)[0])
            except InvalidEvent:
                continue
            if event.kind in (Kind.GENESIS, Kind.KEY_ROTATED):
                with contextlib.suppress(TamperedLog):
                    pub = _cert_key(event)
                    if key_id_for(pub) == key_id:
                        return pub
    return None


def dummy_frontier(size: int) -> list[bytes]:
    return [b"\x00" * 32] * bin(size).count("1")
