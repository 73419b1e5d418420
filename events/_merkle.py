"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Leaves are hashed ``SHA-256(0x00 || data)``, interior nodes ``SHA-256(0x01 || left || right)``.
``CompactRange`` keeps only the roots of the perfect subtrees of a growing tree (its "frontier"), so the
log can extend its tree from the last checkpoint without rereading older events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "MerkleLevels",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with the 0x00 prefix)."""
    cr = CompactRange()
    for h in leaves:
        cr.append(h)
    return cr.root()


class CompactRange:
    """Roots of the perfect subtrees covering leaves [0, size), largest first."""

    __slots__ = ("_nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} has {bin(size).count('1')} nodes, not {len(nodes)}")
        self.size = size
        self._nodes = list(nodes)

    @property
    def nodes(self) -> list[bytes]:
        return list(self._nodes)

    def append(self, leaf: bytes) -> None:
        h = leaf
        size = self.size
        while size & 1:
            h = node_hash(self._nodes.pop(), h)
            size >>= 1
        self._nodes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        h = self._nodes[-1]
        for left in reversed(self._nodes[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self._nodes)


def _path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, leaves[:k]), merkle_root(leaves[k:])]
    return [*_path(m - k, leaves[k:]), merkle_root(leaves[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree of the first ``size`` leaves (RFC 6962 2.1.1)."""
    n = len(leaves) if size is None else size
    if not 0 <= index < n <= len(leaves):
        raise ValueError(f"no leaf {index} in a tree of size {n}")
    return _path(index, leaves[:n])


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [merkle_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), merkle_root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), merkle_root(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int | None = None) -> list[bytes]:
    """Proof that the tree of ``old_size`` leaves is a prefix of the one of ``new_size`` (RFC 6962 2.1.2)."""
    n = len(leaves) if new_size is None else new_size
    if not 0 <= old_size <= n <= len(leaves):
        raise ValueError(f"no consistency proof from size {old_size} to {n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, leaves[:n], True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2, with the trivial cases (empty old tree, equal sizes) made explicit."""
    if old_size < 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class MerkleLevels:
    """Every level of the tree over a fixed list of leaf hashes, for O(log n) inclusion proofs.

    An unpaired last node is carried up unchanged, which gives exactly the RFC 6962 tree.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        sha = hashlib.sha256  # node_hash inlined: this loop is most of a proof's time
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            above = [sha(b"\x01" + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)]
            if len(below) & 1:
                above.append(below[-1])
            self.levels.append(above)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self) -> bytes:
        return self.levels[-1][0] if self.levels[0] else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[bytes]:
        if not 0 <= index < self.size:
            raise ValueError(f"no leaf {index} in a tree of size {self.size}")
        proof = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index >>= 1
        return proof

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append leaf hashes, recomputing only the nodes they change (O(k + log n) for k new leaves)."""
        start = len(self.levels[0])
        self.levels[0].extend(leaves)
        sha = hashlib.sha256
        height = 0
        while len(self.levels[height]) > 1:
            below = self.levels[height]
            if height + 1 == len(self.levels):
                self.levels.append([])
            above = self.levels[height + 1]
            first = start // 2  # the first node above that a new leaf changes (a carried-up odd node included)
            del above[first:]
            above.extend(sha(b"\x01" + below[i] + below[i + 1]).digest() for i in range(first * 2, len(below) - 1, 2))
            if len(below) & 1:
                above.append(below[-1])
            start, height = first, height + 1

    @classmethod
    def of_data(cls, data: Sequence[bytes]) -> MerkleLevels:
        """The tree over stored values (their leaf hashes made here, in one pass)."""
        sha = hashlib.sha256
        return cls([sha(b"\x00" + d).digest() for d in data])

    def prefix_root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves, from the perfect subtrees that make it up (O(log n))."""
        if not 0 <= size <= self.size:
            raise ValueError(f"no prefix of size {size} in a tree of size {self.size}")
        if size == self.size:
            return self.root()
        nodes, lo = [], 0
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                nodes.append(self.levels[height][lo >> height])
                lo += 1 << height
        if not nodes:
            return EMPTY_ROOT
        h = nodes[-1]
        for left in reversed(nodes[:-1]):
            h = node_hash(left, h)
        return h

    def subtree_root(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi): a node of this tree when the range is one of its subtrees (RFC 6962 splits)."""
        height = (hi - lo - 1).bit_length()
        aligned = lo >> height << height == lo and (hi == self.size or hi - lo == 1 << height)
        if not (0 <= lo < hi <= self.size and aligned):
            raise ValueError(f"leaves [{lo}, {hi}) are not a subtree of a tree of size {self.size}")
        return self.levels[height][lo >> height]

    def range_root(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) for a range RFC 6962's recursion splits off: its perfect subtrees, largest
        first, each aligned, folded right to left (a node of this tree when the range is one)."""
        if not 0 <= lo < hi <= self.size:
            raise ValueError(f"no leaves [{lo}, {hi}) in a tree of size {self.size}")
        nodes, pos, n = [], lo, hi - lo
        for height in range(n.bit_length() - 1, -1, -1):
            if n >> height & 1:
                if pos & ((1 << height) - 1):
                    raise ValueError(f"leaves [{lo}, {hi}) are not a range of an RFC 6962 tree")
                nodes.append(self.levels[height][pos >> height])
                pos += 1 << height
        h = nodes[-1]
        for left in reversed(nodes[:-1]):
            h = node_hash(left, h)
        return h

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 2.1.2 from ``old_size`` to ``new_size`` (default: this tree's size), in O(log n) lookups."""
        n = self.size if new_size is None else new_size
        if not 0 <= n <= self.size:
            raise ValueError(f"no tree of size {n} in a tree of size {self.size}")
        if not 0 <= old_size <= n:
            raise ValueError(f"no consistency proof from size {old_size} to {n}")
        if old_size in (0, n):
            return []
        out: list[bytes] = []
        lo, hi, m, complete = 0, n, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                out.append(self.range_root(lo + k, hi))
                hi = lo + k
            else:
                out.append(self.range_root(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            out.append(self.range_root(lo, hi))
        out.reverse()
        return out
