"""Write the event-log test vectors of ``specs/event-log.md`` §11 into this directory.

    .venv/bin/python specs/vectors/make_vectors.py      (the project installed: ``events`` importable)

The log keys are fixed (derived from constant seeds) and the clock is a counter, so the events, hashes and
signatures come out the same on every run; the CA certificate is new each time (X.509 validity and serial),
which changes the genesis and rotation events and everything after. The committed files are one run.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import Actor, Kind, MemoryEventLog, MerkleLevels, decode_event, event_hash, leaf_hash
from events._bundle import write_bundle
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca

HERE = Path(__file__).resolve().parent

ORIGIN = "graven/vector-node"
EXPORTED_AT_NS = 1_767_225_600_000_000_000


class CounterClock:
    def __init__(self) -> None:
        self.t = 1_767_225_600_000_000_000

    def time_ns(self) -> int:
        self.t += 1_000_003
        return self.t

    def monotonic_ns(self) -> int:
        return self.t - 1_767_225_000_000_000_000


def _signer(seed: str) -> Ed25519Signer:
    return Ed25519Signer(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest()))


PAYLOADS: list[dict[str, Any]] = [
    {"float": 1.5, "one": 1.0, "tiny": 5e-324, "negative_zero": -0.0},
    {"neg1": -1, "neg32": -32, "neg33": -33, "neg128": -128, "neg129": -129, "neg32768": -32768,
     "neg32769": -32769, "neg2p31": -(2**31), "neg2p31m1": -(2**31) - 1, "min64": -(2**63)},
    {"u127": 127, "u128": 128, "u255": 255, "u256": 256, "u65535": 65535, "u65536": 65536, "u2p32": 2**32,
     "max64": 2**64 - 1},
    {"é": "accent", "\uffff": "last of the BMP", "\U0001f600": "astral", "Z": "upper", "a": "lower", "aa": "two"},
    {"nested": {"b": [1, {"z": None, "a": True, "m": False}], "a": b"\x00\x01\xff", "": "empty key"}},
    {"long_text": "x" * 40, "long_bytes": b"\x07" * 300, "list16": list(range(16)),
     "map16": {f"k{i:02d}": i for i in range(16)}},
]


def build() -> tuple[list[tuple[int, bytes]], bytes]:
    ca_key, ca = make_ca("graven-vectors-ca")
    first, second = _signer("graven vector log key 1"), _signer("graven vector log key 2")

    def cert(s: Ed25519Signer) -> bytes:
        c = issue_certificate(ca_key, ca, s.private_key.public_key(), cn="vector-node", unit=LOG_KEY_UNIT)
        return c.public_bytes(serialization.Encoding.DER)

    log = MemoryEventLog(first, cert(first), origin=ORIGIN, boot_id="boot-vector-1", clock=CounterClock(),
                         checkpoint_every=8)
    alice = Actor("alice", ("os:admin",))
    for i in range(12):  # seqs 1..7, the checkpoint at 8, then 9..13
        log.append(Kind.TASK_STARTED if i % 3 else Kind.CONFIG_APPLIED, {"i": i, **PAYLOADS[i % len(PAYLOADS)]},
                   alice if i % 4 == 0 else Actor("node"))
    log.rotate(second, cert(second))  # seq 14: the checkpoint after the partial export's range is signed by key 2
    for i in range(12, 34):
        log.append(Kind.TASK_STOPPED, {"i": i, **PAYLOADS[i % len(PAYLOADS)]})
    log.seal("shutdown")
    return list(log.read_raw()), ca.public_bytes(serialization.Encoding.PEM)


def _members(blob: bytes) -> dict[str, str]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            if f is not None:
                out[m.name] = hashlib.sha256(f.read()).hexdigest()
    return out


def main() -> None:
    raw, ca_pem = build()
    events = [decode_event(r, seq=s) for s, r in raw]
    leaves = [leaf_hash(r) for _, r in raw]
    checkpoints = [e for e in events if e.kind == Kind.CHECKPOINT]
    last = checkpoints[-1].seq
    levels = MerkleLevels(leaves[:last])
    bundles: dict[str, bytes] = {}
    for name, start, end in (("full.tar", 0, None), ("partial.tar", 10, 13)):
        out = io.BytesIO()
        write_bundle(out, raw, start=start, end=end, exported_at_ns=EXPORTED_AT_NS)
        bundles[name] = out.getvalue()
    expected = {
        "origin": ORIGIN,
        "size": len(raw),
        "head": event_hash(events[-1]).hex(),
        "events": [{"seq": e.seq, "kind": e.kind, "key_id": e.key_id, "hash": event_hash(e).hex(),
                    "leaf": leaf.hex()} for e, leaf in zip(events, leaves, strict=True)],
        "checkpoints": [{"seq": c.seq, "size": c.payload["size"], "root": c.payload["root"].hex(),
                         "sealed": c.payload["sealed"], "reason": c.payload["reason"]} for c in checkpoints],
        "consistency": [{"from_size": c.seq, "to_size": last,
                         "proof": [h.hex() for h in levels.consistency_proof(c.seq)]} for c in checkpoints],
        "bundles": {name: {"sha256": hashlib.sha256(blob).hexdigest(), "members": _members(blob)}
                    for name, blob in bundles.items()},
    }
    (HERE / "ca.pem").write_bytes(ca_pem)
    (HERE / "log.bin").write_bytes(b"".join(struct.pack(">I", len(r)) + r for _, r in raw))
    for name, blob in bundles.items():
        (HERE / name).write_bytes(blob)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(raw)} events, {len(checkpoints)} checkpoints, 2 bundles to {HERE}")


if __name__ == "__main__":
    main()
