"""Consistency proofs: properties of the O(log n) prover (any m <= n verifies, any tampering fails, it agrees
with the recursive RFC 6962 definition), and the bundle's ``consistency.json``: present in full and partial
exports, verified (from the checkpoints of the range and from signed notes outside it), with the anchor after
the range and a key rotation between the range and the anchor; every tampering with it is refused."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import InvalidRequest, TamperedLog
from events import Kind, MemoryEventLog, MerkleLevels, consistency_proof, leaf_hash, verify_consistency
from events._bundle import read_bundle, verify_bundle, write_bundle
from events._consistency import check_proof, prove

LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(600)]


@st.composite
def sizes(draw: Any) -> tuple[int, int]:
    n = draw(st.integers(1, 600))
    return draw(st.integers(0, n)), n


@settings(max_examples=300, deadline=None)
@given(sizes())
def test_any_prefix_proves_consistent_and_agrees_with_the_rfc_recursion(mn: tuple[int, int]) -> None:
    m, n = mn
    levels = MerkleLevels(LEAVES[:n])
    proof = levels.consistency_proof(m)
    assert proof == consistency_proof(LEAVES, m, n)
    assert levels.prefix_root(m) == MerkleLevels(LEAVES[:m]).root()
    assert verify_consistency(m, n, levels.prefix_root(m), levels.root(), proof)


@settings(max_examples=300, deadline=None)
@given(sizes(), st.data())
def test_any_tampering_fails(mn: tuple[int, int], data: Any) -> None:
    m, n = mn
    levels = MerkleLevels(LEAVES[:n])
    old, new, proof = MerkleLevels(LEAVES[:m]).root(), levels.root(), levels.consistency_proof(m)
    # (sizes are not tampered with here: a proof does not bind them, the signed checkpoint notes do)
    what = data.draw(st.sampled_from(["old-root", "new-root", "hash", "drop", "extra"]))
    if what == "old-root":
        assert not verify_consistency(m, n, leaf_hash(b"x" + old), new, proof)
    elif what == "new-root" and m > 0:  # the empty tree is a prefix of every tree
        assert not verify_consistency(m, n, old, leaf_hash(b"x" + new), proof)
    elif what == "hash" and proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = bytearray(proof[i])
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not verify_consistency(m, n, old, new, [*proof[:i], bytes(bad), *proof[i + 1:]])
    elif what == "drop" and proof:
        assert not verify_consistency(m, n, old, new, proof[:-1])
    elif what == "extra":
        assert not verify_consistency(m, n, old, new, [*proof, LEAVES[0]])


def _log(pki: Any, n: int = 90, every: int = 10, rotate_at: int | None = None) -> list[tuple[int, bytes]]:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/node1", checkpoint_every=every)
    for i in range(n):
        if i == rotate_at:
            signer, cert = pki.new_signer()
            log.rotate(signer, cert)
        log.append(Kind.TASK_STARTED, {"i": i})
    return list(log.read_raw())


def _bundle(raw: list[tuple[int, bytes]], start: int, end: int | None = None) -> bytes:
    out = io.BytesIO()
    write_bundle(out, raw, start=start, end=end, exported_at_ns=0)
    return out.getvalue()


def _members(blob: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            if f is not None:
                out[m.name] = f.read()
    return out


def _repack(blob: bytes, name: str, data: bytes) -> bytes:
    members = _members(blob)
    members[name] = data
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for k, v in members.items():
            info = tarfile.TarInfo(k)
            info.size = len(v)
            tar.addfile(info, io.BytesIO(v))
    return out.getvalue()


def _verify(blob: bytes, pki: Any) -> None:
    verify_bundle(read_bundle(io.BytesIO(blob)), pki.ca_cert)


def test_full_export_proves_every_checkpoint_to_its_last(pki: Any) -> None:
    raw = _log(pki)
    doc = json.loads(_members(_bundle(raw, 0))["consistency.json"])
    sizes_ = [e["size"] for e in doc["from"]]
    assert doc["to"]["size"] == max(s for s, _ in raw if b"log.checkpoint" in _)
    assert sizes_ == sorted(sizes_) and len(sizes_) >= 7 and all(s < doc["to"]["size"] for s in sizes_)
    _verify(_bundle(raw, 0), pki)


@pytest.mark.parametrize(("start", "end"), [(25, 40), (40, 44), (95, 97), (3, 3)])
def test_partial_export_anchor_after_the_range_with_a_rotation_between(pki: Any, start: int, end: int) -> None:
    raw = _log(pki, rotate_at=40)  # the rotation sits after seqs 40..44 (depending on checkpoints)
    rotation = next(s for s, r in raw if b"key.rotated" in r)
    blob = _bundle(raw, start, end)
    b = read_bundle(io.BytesIO(blob))
    anchor = b.manifest["anchor"]
    assert anchor is not None and anchor["seq"] > end
    assert (end < rotation < anchor["seq"]) is (end == 44)
    if end == 44:
        assert any(b"key.rotated" in k for k in b.key_events), "the rotation before the anchor is shipped"
    _verify(blob, pki)
    doc = b.consistency
    assert doc is not None and doc["to"]["size"] == anchor["size"]
    for e in doc["from"]:
        assert check_proof({"from_size": e["size"], "from_root": e["root"], "to_size": anchor["size"],
                            "to_root": anchor["root"], "proof": e["proof"]})


def test_partial_export_whose_anchor_is_before_the_range(pki: Any) -> None:
    raw = _log(pki, n=40)  # the last checkpoint is before the log's last events
    last_cp = max(s for s, r in raw if b"log.checkpoint" in r)
    blob = _bundle(raw, last_cp + 1)
    b = read_bundle(io.BytesIO(blob))
    assert b.manifest["anchor"]["seq"] == last_cp and b.consistency is not None
    _verify(blob, pki)


def _tamper(doc: dict[str, Any], how: str) -> None:
    entry = doc["from"][1]
    if how == "proof":
        entry["proof"][0] = "00" * 32
    elif how == "root":
        entry["root"] = "11" * 32
    elif how == "drop-proof":
        entry["proof"] = entry["proof"][1:]
    elif how == "missing":
        del doc["from"][1]
    elif how == "target":
        doc["to"]["root"] = "22" * 32
    elif how == "note":
        entry["note"] = entry["note"].replace(entry["note"].split("\n")[2], "AAAA")


@pytest.mark.parametrize(("how", "start"), [(how, start) for start in (0, 35) for how in
                                            ("proof", "root", "drop-proof", "missing", "target", "note")
                                            if (how, start) != ("missing", 35)])  # (35: proves its range's only)
def test_tampered_consistency_is_refused(pki: Any, how: str, start: int) -> None:
    raw = _log(pki)
    blob = _bundle(raw, start, 45 if start else None)
    doc = json.loads(_members(blob)["consistency.json"])
    _tamper(doc, how)
    if how == "note" and not start:
        doc["from"][1]["root"] = "11" * 32  # the range's root wins over any note in a full export
    with pytest.raises(TamperedLog) as err:
        _verify(_repack(blob, "consistency.json", json.dumps(doc).encode()), pki)
    assert err.value.reason == "consistency"


def test_prove_sizes_and_errors(pki: Any) -> None:
    raw = _log(pki, n=50)
    first_cp = min(s for s, r in raw if b"log.checkpoint" in r)
    doc = prove(raw, first_cp)
    assert doc["from_note"] is not None and doc["to_note"] is not None and check_proof(doc)
    assert check_proof(prove(raw, 0, len(raw))) and check_proof(prove(raw, 7, 7))
    assert not check_proof({**doc, "from_root": doc["to_root"]})
    with pytest.raises(InvalidRequest, match="--from-size"):
        prove(raw, 20, 10)
    with pytest.raises(InvalidRequest, match="has 5"):
        prove(raw, 0, len(raw) + 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 70), min_size=1, max_size=8), st.data())
def test_extended_levels_equal_levels_built_at_once_and_prove_from_any_prefix(chunks: list[int], data: Any) -> None:
    grown = MerkleLevels([])
    n = 0
    for k in chunks:
        grown.extend(LEAVES[n:n + k])
        n += k
        assert grown.levels == MerkleLevels(LEAVES[:n]).levels
    new = data.draw(st.integers(0, n))
    old = data.draw(st.integers(0, new))
    proof = grown.consistency_proof(old, new)
    assert proof == consistency_proof(LEAVES, old, new)
    assert verify_consistency(old, new, MerkleLevels(LEAVES[:old]).root(), MerkleLevels(LEAVES[:new]).root(), proof)
