"""Consistency proofs between checkpoints (RFC 6962 2.1.2, verified as in RFC 9162 2.1.4.2).

A proof shows that the tree of ``from_size`` events is a prefix of the tree of ``to_size`` events: whoever saw a
checkpoint of size S (an earlier export, a witness) can check that a later checkpoint extends it, so a truncated
or rewritten log is caught without rereading it. The JSON form (``specs/event-log.md`` §10)::

    {"format": "graven-consistency/1", "origin": str, "from_size": int, "from_root": hex, "to_size": int,
     "to_root": hex, "proof": [hex, ...], "from_note": str | null, "to_note": str | null}

Notes are the signed checkpoint notes when a checkpoint of that size exists (their roots are then signed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from errors import InvalidRequest, TamperedLog, VerificationError

from ._checkpoint import Checkpoint, verify_note
from ._kinds import Kind
from ._merkle import MerkleLevels, verify_consistency
from ._record import Event, decode_event
from .payloads import Checkpointed, Genesis, payload_of, read_payload

if TYPE_CHECKING:
    from ._verify import ChainVerifier

__all__ = ["CONSISTENCY_FORMAT", "bundle_consistency", "check_proof", "checkpoints_of", "prove",
           "verify_bundle_consistency"]

CONSISTENCY_FORMAT = "graven-consistency/1"


def checkpoints_of(raw_items: Sequence[tuple[int, bytes]]) -> dict[int, tuple[int, bytes]]:
    """{size: (seq, raw)} of every checkpoint event in the log (a checkpoint's size is its seq)."""
    out: dict[int, tuple[int, bytes]] = {}
    for seq, raw in raw_items:
        if b"log.checkpoint" in raw:  # cheap filter before decoding
            ev = decode_event(raw, seq=seq)
            if ev.kind == Kind.CHECKPOINT:
                out[payload_of(ev, Checkpointed).size] = (seq, raw)
    return out


def _note(checkpoints: Mapping[int, tuple[int, bytes]], size: int) -> str | None:
    found = checkpoints.get(size)
    return payload_of(decode_event(found[1]), Checkpointed).note if found else None


def genesis_origin(genesis: Event) -> str:
    """The origin a log's first event names ("" when it is no genesis)."""
    p = read_payload(genesis)
    return p.origin if isinstance(p, Genesis) else ""


class _Proof(msgspec.Struct):
    """What ``check_proof`` reads of a proof document."""

    from_size: int
    to_size: int
    from_root: str
    to_root: str
    proof: list[str]


class _Target(msgspec.Struct):
    seq: int
    size: int
    root: str


class _FromCheckpoint(msgspec.Struct):
    seq: int
    size: int
    root: str
    proof: list[str]
    note: str | None = None


class _BundleConsistency(msgspec.Struct, rename={"from_": "from"}):
    """``consistency.json`` of a bundle: proofs from earlier checkpoints (``from``) to its target (``to``)."""

    to: _Target
    from_: list[_FromCheckpoint]


def prove(raw_items: Sequence[tuple[int, bytes]], from_size: int, to_size: int | None = None) -> dict[str, object]:
    """The consistency proof between two sizes of a log read whole from seq 0 (``to_size`` defaults to the size
    of the last checkpoint: a root the log key signed)."""
    if not raw_items or raw_items[0][0] != 0:
        raise InvalidRequest("a consistency proof needs the log from seq 0 (a log directory or a full export)")
    size = len(raw_items)
    checkpoints = checkpoints_of(raw_items)
    if to_size is None:
        to_size = max((s for s in checkpoints), default=size)
    if not 0 <= from_size <= to_size <= size:
        raise InvalidRequest(f"no consistency proof from size {from_size} to {to_size}: the log has {size} events "
                             "and sizes must satisfy 0 <= --from-size <= --to-size <= that")
    levels = MerkleLevels.of_data([r for _, r in raw_items[:to_size]])
    old = levels.prefix_root(from_size)
    genesis = decode_event(raw_items[0][1], seq=0)
    return {
        "format": CONSISTENCY_FORMAT,
        "origin": genesis_origin(genesis),
        "from_size": from_size,
        "from_root": old.hex(),
        "to_size": to_size,
        "to_root": levels.root().hex(),
        "proof": [h.hex() for h in levels.consistency_proof(from_size)],
        "from_note": _note(checkpoints, from_size),
        "to_note": _note(checkpoints, to_size),
    }


def check_proof(doc: Mapping[str, object]) -> bool:
    """Whether a proof document (``prove``'s form) verifies: it says nothing of who signed the roots."""
    try:
        p = msgspec.convert(dict(doc), _Proof, strict=False)
        return verify_consistency(p.from_size, p.to_size, bytes.fromhex(p.from_root), bytes.fromhex(p.to_root),
                                  [bytes.fromhex(h) for h in p.proof])
    except (msgspec.ValidationError, ValueError):
        return False


def bundle_consistency(raw_items: Sequence[tuple[int, bytes]], to_seq: int) -> dict[str, object]:
    """``consistency.json`` of a bundle whose anchor is the checkpoint at ``to_seq``: a proof from every earlier
    checkpoint of the log to it (an auditor holding any of them checks the anchor extends it)."""
    checkpoints = checkpoints_of(raw_items[: to_seq + 1])
    anchor_seq = checkpoints[to_seq][0]
    levels = MerkleLevels.of_data([r for _, r in raw_items[:to_seq]])
    entries: list[dict[str, object]] = []
    for size, (seq, raw) in sorted(checkpoints.items()):
        if size >= to_seq:
            continue
        cp = payload_of(decode_event(raw, seq=seq), Checkpointed)
        entries.append({"seq": seq, "size": size, "root": cp.root.hex(), "note": cp.note,
                        "proof": [h.hex() for h in levels.consistency_proof(size)]})
    return {"format": CONSISTENCY_FORMAT, "to": {"seq": anchor_seq, "size": to_seq, "root": levels.root().hex()},
            "from": entries}


def _bad(seq: int | None, message: str) -> TamperedLog:
    return TamperedLog(message if seq is None else f"seq {seq}: {message}", seq=seq, reason="consistency")


def _signed_root(note: object, size: int, keys: Mapping[str, bytes]) -> bytes | None:
    """The root of a checkpoint note of ``size`` signed by one of the log's certified keys, else None."""
    for pub in keys.values():
        try:
            cp = verify_note(str(note), pub)
        except VerificationError:
            continue
        return cp.root if cp.size == size else None
    return None


def verify_bundle_consistency(doc: object, start: int, end: int, verifier: ChainVerifier,
                              anchor: Checkpoint | None) -> dict[int, bytes]:
    """Check ``consistency.json`` after the range verified: the target is the anchor (partial exports) or a
    checkpoint of the range; every checkpoint of the range before it has a proof; every proof verifies against
    a root that is either verified in the range or signed in its note by a certified log key. Returns
    {size: root} of every checkpoint proven a prefix of the target, the target included."""
    try:
        parsed = msgspec.convert(doc, _BundleConsistency, strict=False)
        to_seq, to_size, to_root = parsed.to.seq, parsed.to.size, bytes.fromhex(parsed.to.root)
        entries = [(e.seq, e.size, bytes.fromhex(e.root), e.note, [bytes.fromhex(h) for h in e.proof])
                   for e in parsed.from_]
    except (msgspec.ValidationError, ValueError) as exc:
        raise _bad(None, f"consistency.json is malformed ({exc})") from exc
    if anchor is not None:
        if (to_size, to_root) != (anchor.size, anchor.root):
            raise _bad(to_seq, "consistency.json does not target the bundle's anchor")
    elif not start <= to_seq <= end or verifier.roots_at.get(to_size) != to_root or to_seq != to_size:
        raise _bad(to_seq, "consistency.json targets no verified checkpoint of the bundle")
    proven: dict[int, bytes] = {to_size: to_root}
    for seq, size, root, note, proof in entries:
        if seq != size or size >= to_size:
            raise _bad(seq, f"consistency.json names a checkpoint of size {size} at seq {seq}, not before the "
                            f"anchor of size {to_size}")
        if start <= seq <= end:
            if verifier.roots_at.get(size) != root:
                raise _bad(seq, f"consistency.json gives another root for the checkpoint of size {size}")
        elif _signed_root(note, size, verifier.keys) != root:
            raise _bad(seq, f"the checkpoint of size {size} in consistency.json is not signed by a log key")
        if not verify_consistency(size, to_size, root, to_root, proof):
            raise _bad(seq, f"the checkpoint of size {size} is not a prefix of the one of size {to_size} (its "
                            "consistency proof does not verify)")
        proven[size] = root
    missing = sorted(s for s in verifier.roots_at if s < to_size and s not in proven)
    if missing:
        raise _bad(missing[0], f"no consistency proof from the checkpoint of size {missing[0]} to size {to_size}")
    return proven
