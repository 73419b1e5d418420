"""The spec's test vectors (``specs/vectors/``) and a verifier written from ``specs/event-log.md`` alone
(``indep_verifier.py``: no import from the project) agree on every byte:

- it accepts the vector log and both bundles, and computes the hashes, leaves, roots and consistency proofs of
  ``expected.json``; the project's code computes the same from the same files;
- both refuse a copy of the log with any one byte changed (a sample of positions, every event touched);
- on fresh logs the project writes with arbitrary payloads (floats, every integer width, any Unicode keys,
  nesting), the independent codec re-encodes every event to the same bytes and the verifier accepts them,
  exports included.

``events`` is imported here only to produce logs and to compare the project's own results.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from indep_verifier import Bad, State, consistency, mth, unframe, verify_bundle, verify_events

from errors import TamperedLog
from events import Kind, MemoryEventLog, decode_event, event_hash, leaf_hash, verify_items
from events._bundle import read_bundle, write_bundle
from events._bundle import verify_bundle as project_verify_bundle

VECTORS = Path(__file__).resolve().parents[2] / "specs" / "vectors"


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text())
    return result


@pytest.fixture(scope="module")
def ca() -> x509.Certificate:
    return x509.load_pem_x509_certificate((VECTORS / "ca.pem").read_bytes())


@pytest.fixture(scope="module")
def raws() -> list[bytes]:
    return unframe((VECTORS / "log.bin").read_bytes())


def test_the_independent_verifier_computes_the_expected_values(expected: dict[str, Any], ca: x509.Certificate,
                                                                 raws: list[bytes]) -> None:
    state = verify_events(raws, State(ca))
    assert state.origin == expected["origin"] and len(raws) == expected["size"]
    want = [(e["seq"], e["hash"]) for e in expected["events"]]
    assert [(s, h.hex()) for s, h in sorted(state.hashes.items())] == want
    assert [state.leaves[s].hex() for s in range(len(raws))] == [e["leaf"] for e in expected["events"]]
    assert state.checkpoints == expected["checkpoints"]
    assert state.hashes[len(raws) - 1].hex() == expected["head"]
    leaves = [state.leaves[s] for s in range(len(raws))]
    for c in expected["consistency"]:
        assert [h.hex() for h in consistency(c["from_size"], leaves[:c["to_size"]])] == c["proof"]
    reasons = {c["reason"] for c in expected["checkpoints"] if c["sealed"]}
    assert reasons == {"shutdown"} and {e["kind"] for e in expected["events"]} >= {"key.rotated", "log.genesis"}


@pytest.mark.parametrize("name", ["full.tar", "partial.tar"])
def test_the_independent_verifier_accepts_both_bundles(expected: dict[str, Any], ca: x509.Certificate,
                                                       name: str) -> None:
    blob = (VECTORS / name).read_bytes()
    want = expected["bundles"][name]
    assert hashlib.sha256(blob).hexdigest() == want["sha256"]
    members = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            members[m.name] = hashlib.sha256(f.read()).hexdigest()
    assert members == want["members"]
    state = verify_bundle(blob, ca)
    by_seq = {e["seq"]: e["hash"] for e in expected["events"]}
    assert all(by_seq[s] == h.hex() for s, h in state.hashes.items())
    if name == "partial.tar":  # the anchor after the range is signed by the key rotated in between
        assert "anchor.bin" in members and len(state.keys) == 2 and "certs/00000014.pem" not in members


def test_the_project_computes_the_same(expected: dict[str, Any], ca: x509.Certificate, raws: list[bytes]) -> None:
    events = [decode_event(r, seq=i) for i, r in enumerate(raws)]
    assert [event_hash(e).hex() for e in events] == [e["hash"] for e in expected["events"]]
    assert [leaf_hash(r).hex() for r in raws] == [e["leaf"] for e in expected["events"]]
    report = verify_items(enumerate(raws), ca)
    assert [{k: c[k] for k in ("seq", "size", "root", "sealed", "reason")} for c in report.checkpoints] == \
        expected["checkpoints"]
    assert report.head.hex() == expected["head"]
    for name in ("full.tar", "partial.tar"):
        project_verify_bundle(read_bundle(io.BytesIO((VECTORS / name).read_bytes())), ca)


def test_any_changed_byte_is_refused_by_both(ca: x509.Certificate, raws: list[bytes]) -> None:
    rng = random.Random(1)
    for seq, raw in enumerate(raws):
        for pos in rng.sample(range(len(raw)), min(6, len(raw))):
            bad = bytearray(raw)
            bad[pos] ^= 1 << rng.randrange(8)
            tampered = [*raws[:seq], bytes(bad), *raws[seq + 1:]]
            with pytest.raises(Bad) as mine:
                verify_events(tampered, State(ca))
            with pytest.raises(TamperedLog) as theirs:
                verify_items(enumerate(tampered), ca, threads=1)
            assert mine.value.seq == theirs.value.seq == seq, (seq, pos, mine.value, theirs.value)


KEYS = st.text(min_size=0, max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=40), st.binary(max_size=300))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=18),
                                                       st.dictionaries(KEYS, inner, max_size=18)), max_leaves=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(KEYS, VALUES, max_size=6), min_size=1, max_size=12), st.integers(1, 5))
def test_fresh_logs_with_any_payload_verify_independently(pki: Any, payloads: list[dict[str, Any]], every: int) -> None:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/\u00e9-node", checkpoint_every=every)
    for i, p in enumerate(payloads):
        log.append(Kind.TASK_STARTED, p)
        if i == len(payloads) // 2:
            log.rotate(*pki.new_signer())
    log.seal("recovered: the previous boot ended unsealed")
    raw = list(log.read_raw())
    state = verify_events([r for _, r in raw], State(pki.ca_cert))
    assert [state.hashes[s] for s, _ in raw] == [event_hash(decode_event(r)) for _, r in raw]
    last = max(state.roots)
    assert state.roots[last] == mth([state.leaves[s] for s in range(last)])
    for start in (0, max(1, len(raw) // 3)):
        out = io.BytesIO()
        write_bundle(out, raw, start=start, end=min(len(raw) - 1, start + 3), exported_at_ns=0)
        verify_bundle(out.getvalue(), pki.ca_cert)


def test_every_export_range_verifies_with_both(pki: Any) -> None:
    """Every (from, to) of a small log with checkpoints, a rotation and a seal: anchors before, inside and after
    the range, rotations before, inside and after it."""
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/ranges", checkpoint_every=4)
    for i in range(16):
        log.append(Kind.TASK_STARTED, {"i": i})
        if i in (5, 11):
            log.rotate(*pki.new_signer())
    log.seal("shutdown")
    raw = list(log.read_raw())
    for start in range(len(raw)):
        for end in range(start, len(raw)):
            out = io.BytesIO()
            write_bundle(out, raw, start=start, end=end, exported_at_ns=0)
            blob = out.getvalue()
            project_verify_bundle(read_bundle(io.BytesIO(blob)), pki.ca_cert)
            verify_bundle(blob, pki.ca_cert)
