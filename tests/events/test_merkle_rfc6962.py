"""RFC 6962 Merkle hashing and proofs: published test vectors, exhaustive sweeps, tampering, and an independent
implementation (``pymerkle``) as a cross-check.

Vectors: the eight Certificate Transparency leaves and their roots, with the inclusion and consistency proofs
of transparency-dev/merkle ``proof/verify_test.go`` (the ``(leaf, size)`` pairs there are 1-based).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    CompactRange,
    MerkleLevels,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from events._merkle import EMPTY_ROOT, node_hash

CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
)]
# ROOTS[n] is the root of the tree of the first n leaves.
CT_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
CT_HASHES = [leaf_hash(d) for d in CT_LEAVES]

# (0-based index, tree size, proof)
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
# (old size, new size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

MAX = 300
LEAVES = [leaf_hash(i.to_bytes(2, "big") + b"graven") for i in range(MAX)]


def _hexes(proof: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in proof]


def _flip(proof: Sequence[bytes], i: int, bit: int = 3) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


def _bad_inclusions(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes):
    """The corruptions of transparency-dev's ``corruptInclusionProof``: none may verify."""
    yield "index - 1", leaf, index - 1, size, proof, root
    yield "index + 1", leaf, index + 1, size, proof, root
    yield "index ^ 2", leaf, index ^ 2, size, proof, root
    yield "size * 2", leaf, index, size * 2, proof, root
    yield "size // 2", leaf, index, size // 2, proof, root
    yield "wrong leaf", b"WrongLeaf", index, size, proof, root
    yield "empty root", leaf, index, size, proof, EMPTY_ROOT
    yield "random root", leaf, index, size, proof, SOME_HASH
    yield "trailing garbage", leaf, index, size, [*proof, b""], root
    yield "trailing root", leaf, index, size, [*proof, root], root
    yield "preceding garbage", leaf, index, size, [b"", *proof], root
    yield "preceding root", leaf, index, size, [root, *proof], root
    for i in range(len(proof)):
        yield f"flipped proof[{i}]", leaf, index, size, _flip(proof, i), root
    if proof:
        yield "removed component", leaf, index, size, proof[:-1], root
    if len(proof) > 1:
        yield "inserted component", leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root


def _bad_consistencies(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]):
    """transparency-dev's ``corruptConsistencyProof`` (for non-trivial proofs)."""
    yield "m - 1", m - 1, n, r1, r2, proof
    yield "m + 1", m + 1, n, r1, r2, proof
    yield "m ^ 2", m ^ 2, n, r1, r2, proof
    yield "n * 2", m, n * 2, r1, r2, proof
    yield "n // 2", m, n // 2, r1, r2, proof
    yield "wrong root1", m, n, b"WrongRoot", r2, proof
    yield "wrong root2", m, n, r1, b"WrongRoot", proof
    yield "swapped roots", m, n, r2, r1, proof
    yield "empty proof", m, n, r1, r2, []
    yield "trailing garbage", m, n, r1, r2, [*proof, b""]
    yield "trailing root1", m, n, r1, r2, [*proof, r1]
    yield "trailing root2", m, n, r1, r2, [*proof, r2]
    yield "preceding garbage", m, n, r1, r2, [b"", *proof]
    yield "preceding root1", m, n, r1, r2, [r1, *proof]
    yield "preceding root2", m, n, r1, r2, [r2, *proof]
    yield "preceding proof[0]", m, n, r1, r2, [proof[0], *proof]
    yield "truncated", m, n, r1, r2, proof[:-1]
    for i in range(len(proof)):
        yield f"flipped proof[{i}]", m, n, r1, r2, _flip(proof, i, 4)


def _assert_inclusion_strict(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
    assert verify_inclusion(leaf, index, size, proof, root), (index, size)
    accepted = [d for d, *args in _bad_inclusions(leaf, index, size, proof, root) if verify_inclusion(*args)]
    assert not accepted, f"({index}, {size}): tampered proofs verified: {accepted}"


def _assert_consistency_strict(m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes) -> None:
    assert verify_consistency(m, n, r1, r2, proof), (m, n)
    if not proof:
        return
    accepted = [d for d, mm, nn, a, b, p in _bad_consistencies(m, n, r1, r2, proof)
                if verify_consistency(mm, nn, a, b, p)]
    assert not accepted, f"({m}, {n}): tampered proofs verified: {accepted}"


# -- published vectors ------------------------------------------------------------------------------------------
def test_hash_primitives() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == CT_ROOTS[0]
    assert leaf_hash(b"") == CT_ROOTS[1] == hashlib.sha256(b"\x00").digest()
    assert node_hash(CT_HASHES[0], CT_HASHES[1]) == CT_ROOTS[2]
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("n", range(len(CT_ROOTS)))
def test_rfc6962_roots(n: int) -> None:
    assert merkle_root(CT_HASHES[:n]) == CT_ROOTS[n]
    assert MerkleLevels(CT_HASHES[:n]).root() == CT_ROOTS[n]
    cr = CompactRange()
    for h in CT_HASHES[:n]:
        cr.append(h)
    assert cr.root() == CT_ROOTS[n] and cr.size == n


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_rfc6962_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    want = _hexes(proof)
    assert inclusion_proof(CT_HASHES, index, size) == want
    assert MerkleLevels(CT_HASHES[:size]).inclusion_proof(index) == want
    _assert_inclusion_strict(CT_HASHES[index], index, size, want, CT_ROOTS[size])


@pytest.mark.parametrize(("m", "n", "proof"), CT_CONSISTENCY)
def test_rfc6962_consistency_vectors(m: int, n: int, proof: list[str]) -> None:
    want = _hexes(proof)
    assert consistency_proof(CT_HASHES, m, n) == want
    _assert_consistency_strict(m, n, want, CT_ROOTS[m], CT_ROOTS[n])


def test_trivial_and_invalid_inclusion() -> None:
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 4)):
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
        assert not verify_inclusion(b"", index, size, [], SOME_HASH)
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)  # a one-leaf tree: the leaf is the root
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], h)
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES[:4], 4)
    with pytest.raises(ValueError):
        MerkleLevels(LEAVES[:4]).inclusion_proof(4)


def test_trivial_and_invalid_consistency() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, r2, [])  # the empty tree is a prefix of every tree
    assert verify_consistency(1, 1, r2, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])  # same size, different roots: a fork
    assert not verify_consistency(1, 0, r1, r2, [])  # time travel
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])  # a real step with no proof
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert consistency_proof(LEAVES, 0, 10) == [] and consistency_proof(LEAVES, 10, 10) == []
    with pytest.raises(ValueError):
        consistency_proof(LEAVES[:4], 5)


# -- exhaustive and sampled sweeps -----------------------------------------------------------------------------
def test_roots_agree_for_every_size() -> None:
    cr = CompactRange()
    for n in range(MAX + 1):
        root = merkle_root(LEAVES[:n])
        assert cr.root() == root == MerkleLevels(LEAVES[:n]).root(), n
        assert CompactRange(n, cr.nodes).root() == root  # the frontier alone rebuilds the root
        if n < MAX:
            cr.append(LEAVES[n])


def test_inclusion_every_size_and_index_up_to_300() -> None:
    for size in range(1, MAX + 1):
        levels = MerkleLevels(LEAVES[:size])
        root = levels.root()
        for index in range(size):
            proof = levels.inclusion_proof(index)
            assert verify_inclusion(LEAVES[index], index, size, proof, root), (index, size)
            # a proof for one leaf never proves a neighbour
            other = (index + 1) % size
            if other != index:
                assert not verify_inclusion(LEAVES[other], index, size, proof, root)


def test_recursive_and_level_proofs_agree_exhaustively_to_64() -> None:
    for size in range(1, 65):
        levels = MerkleLevels(LEAVES[:size])
        for index in range(size):
            assert inclusion_proof(LEAVES, index, size) == levels.inclusion_proof(index), (index, size)


def test_consistency_every_pair_up_to_64() -> None:
    roots = [merkle_root(LEAVES[:n]) for n in range(65)]
    for n in range(65):
        for m in range(n + 1):
            proof = consistency_proof(LEAVES, m, n)
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            if 0 < m < n:
                assert not verify_consistency(m, n, roots[m], SOME_HASH, proof)
                assert not verify_consistency(m, n, SOME_HASH, roots[n], proof)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_inclusion_sampled_with_tampering(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, MAX), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(LEAVES, index, size)
    assert proof == MerkleLevels(LEAVES[:size]).inclusion_proof(index)
    _assert_inclusion_strict(LEAVES[index], index, size, proof, merkle_root(LEAVES[:size]))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_consistency_sampled_with_tampering(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX), label="new size")
    m = data.draw(st.integers(1, n), label="old size")
    proof = consistency_proof(LEAVES, m, n)
    _assert_consistency_strict(m, n, proof, merkle_root(LEAVES[:m]), merkle_root(LEAVES[:n]))
    if m < n:
        # a rewritten history (one old leaf changed) is not consistent with the new tree
        forged = list(LEAVES[:m])
        forged[data.draw(st.integers(0, m - 1), label="forged leaf")] = SOME_HASH
        assert not verify_consistency(m, n, merkle_root(forged), merkle_root(LEAVES[:n]), proof)


# -- an independent implementation ----------------------------------------------------------------------------
_HAVE_PYMERKLE = importlib.util.find_spec("pymerkle") is not None


@pytest.mark.skipif(not _HAVE_PYMERKLE, reason="pymerkle is not installed (it is an optional cross-check, "
                    "not a dependency): pip install pymerkle")
def test_cross_check_with_pymerkle() -> None:
    from pymerkle import InmemoryTree

    entries = [i.to_bytes(4, "big") * (i % 5) for i in range(MAX)]
    ours = [leaf_hash(e) for e in entries]
    tree = InmemoryTree(algorithm="sha256")  # RFC 6962 prefixes (0x00 / 0x01) are pymerkle's default
    for e in entries:
        tree.append_entry(e)
    assert tree.get_root(0) == EMPTY_ROOT
    for n in range(1, MAX + 1):
        assert tree.get_root(n) == merkle_root(ours[:n]), n
    for size in (1, 2, 3, 7, 8, 9, 64, 100, 255, 256, 257, MAX):
        for index in {0, size // 3, size // 2, size - 1}:
            path = tree.prove_inclusion(index + 1, size).serialize()["path"]  # 1-based, leaf first
            assert bytes.fromhex(path[0]) == ours[index]
            assert [bytes.fromhex(h) for h in path[1:]] == inclusion_proof(ours, index, size), (index, size)
