"""``audit verify --since-export OLD``: the log (or export) must extend the latest checkpoint an earlier export saw.

The earlier export's latest checkpoint (size S, root R: the last one of its range, or its anchor) is compared
with what the newer source proves about its first S events:

- a log or export from seq 0: the root of its first S events, recomputed (``truncated`` when it has fewer);
- a partial export: the checkpoints its ``consistency.json`` proves to be prefixes of its anchor (and those of
  its range). A checkpoint of size S with another root, or none at seq S while the anchor is past it, is a fork.

Reasons: ``truncated`` (the log ends before S) and ``forked`` (rolled back and rewritten: another history).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from errors import InvalidRequest, TamperedLog

from ._merkle import merkle_root
from ._verify import ChainVerifier, VerifyReport

__all__ = ["Seen", "check_extends", "latest_checkpoint", "verify_since"]


@dataclass(frozen=True)
class Seen:
    """What a verified source proves: its report, Merkle leaves by seq, and {size: root} of proven checkpoints."""

    report: VerifyReport
    leaves: Mapping[int, bytes]
    roots: Mapping[int, bytes]
    log_size: int  # events in the log it came from (a partial export's manifest says; else its last seq + 1)
    every_checkpoint: bool  # roots lists every checkpoint before the latest (a consistency.json was verified)

    @classmethod
    def of(cls, report: VerifyReport, verifier: ChainVerifier, log_size: int | None = None) -> Seen:
        roots = {int(cp["size"]): bytes.fromhex(cp["root"]) for cp in report.checkpoints}
        roots.update(verifier.consistency)
        for a in verifier.anchors:
            roots[a.size] = a.root
        leaves = dict(enumerate(verifier.leaf_hashes, report.first_seq))
        return cls(report, leaves, roots, log_size if log_size is not None else report.last_seq + 1,
                   bool(verifier.consistency) or report.first_seq == 0)


def latest_checkpoint(seen: Seen) -> tuple[int, bytes] | None:
    """(size, root) of the latest checkpoint a source proves, or None when it has none."""
    if not seen.roots:
        return None
    size = max(seen.roots)
    return size, seen.roots[size]


def _first_difference(old: Mapping[int, bytes], new: Mapping[int, bytes], below: int) -> int | None:
    return next((s for s in sorted(old) if s < below and s in new and old[s] != new[s]), None)


def verify_since(old: Seen, new: Seen) -> int | None:
    """Raise ``TamperedLog`` (``truncated`` or ``forked``) unless ``new`` extends ``old``'s latest checkpoint;
    return that checkpoint's size (None: the earlier export saw no checkpoint, there is nothing to compare)."""
    latest = latest_checkpoint(old)
    if latest is None:
        return None
    size, root = latest
    check_extends(new, size, root, f"an earlier export saw a checkpoint of size {size} (seq {size})", old.leaves)
    return size


def check_extends(new: Seen, size: int, root: bytes, saw: str, old_leaves: Mapping[int, bytes] | None = None, *,
                  must_cover: bool = False) -> None:
    """Raise ``TamperedLog`` (``truncated`` or ``forked``, the message starting with the seq and ending with
    ``saw``) unless ``new`` shows that its first ``size`` events have the Merkle root ``root``. With
    ``must_cover`` (a witness saw that checkpoint), a source that ends before it is truncated whatever its
    manifest claims; without, a partial export that proves nothing past ``size`` cannot be compared
    (``InvalidRequest``)."""
    old = old_leaves or {}
    if new.report.first_seq == 0 and new.report.last_seq + 1 >= size:
        leaves = [new.leaves[s] for s in range(size)]
        if merkle_root(leaves) == root:
            return
        _forked(size, saw, _first_difference(old, new.leaves, size))
    if size in new.roots:
        if new.roots[size] == root:
            return
        _forked(size, saw, _first_difference(old, new.leaves, size))
    proven = max(new.roots, default=0)
    if proven > size and new.every_checkpoint:  # its later checkpoint extends all its earlier ones: none is at S
        _forked(size, saw + f"; this log has no such checkpoint before its checkpoint of size {proven}",
                _first_difference(old, new.leaves, size))
    ends = new.report.last_seq + 1 if must_cover else new.log_size
    if ends < size:
        raise TamperedLog(f"seq {ends}: truncated: {saw}, but the log now ends at seq {ends - 1}", seq=ends,
                          reason="truncated", size=size)
    raise InvalidRequest(f"cannot compare: {saw}, but this export proves nothing past size {proven}; export a range "
                         f"whose anchor comes after seq {size} (audit export --from SEQ with SEQ >= {size})")


def _forked(size: int, saw: str, first: int | None) -> NoReturn:
    where = first if first is not None else size - 1
    detail = (f"the first differing event is seq {first}" if first is not None else
              f"some event before seq {size} differs")
    raise TamperedLog(f"seq {where}: rolled back or forked: the log no longer extends the checkpoint of size {size}: "
                      f"{saw}; {detail}", seq=where, reason="forked")
