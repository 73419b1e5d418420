"""Audit export bundles: one tar file that an auditor verifies with the CA certificate alone.

Layout (``specs/event-log.md``)::

    manifest.json       format, origin, range, counts, head hash, anchor checkpoint
    events.bin          the events of the range: [u32 big-endian length][canonical bytes] ...
    events.jsonl        the same events rendered as JSON, one per line (for people; never verified)
    keys.bin            events carrying certificates (genesis, key.rotated) outside the range, up to the anchor
    anchor.bin          the checkpoint event that covers the range (partial exports), same framing
    proofs.json         inclusion proofs of every event of the range in the anchor (partial exports)
    consistency.json    a consistency proof from every earlier checkpoint of the log to the anchor
    certs/<seq>.pem     the log certificates, for people
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from errors import InvalidEvent, InvalidRequest, TamperedLog, UntrustedKey, VerificationError
from pki import key_id_for, load_certificate, verify_log_certificate, verify_signature

from ._checkpoint import Checkpoint, verify_note
from ._consistency import bundle_consistency, genesis_origin, verify_bundle_consistency
from ._kinds import Kind
from ._merkle import MerkleLevels, leaf_hash, verify_inclusion
from ._record import Event, decode_event, event_hash
from ._verify import ChainVerifier, VerifyReport
from .payloads import Checkpointed, Genesis, certificate_of, payload_of

if TYPE_CHECKING:
    import tarfile

__all__ = ["BUNDLE_FORMAT", "Bundle", "Manifest", "iter_events", "read_bundle", "verify_bundle", "write_bundle"]

BUNDLE_FORMAT = "graven-audit-bundle/1"
_LEN = struct.Struct(">I")


def _frame(raws: Iterable[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(r)) + r for r in raws)


def _unframe(data: bytes, name: str) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise TamperedLog(f"{name}: truncated length prefix at byte {pos}", seq=None, reason="truncated")
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            raise TamperedLog(f"{name}: truncated record at byte {pos}", seq=None, reason="truncated")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


class Manifest(msgspec.Struct, kw_only=True):
    """``manifest.json``: which range of which log the bundle holds (``specs/event-log.md``)."""

    format: str = BUNDLE_FORMAT
    origin: str = ""
    from_seq: int
    to_seq: int
    count: int = 0
    log_size: int | None = None  # events in the log it was exported from
    head: str = ""  # hex of the last event's hash
    anchor: dict[str, object] | None = None  # a partial export's anchor checkpoint: {seq, size, root}
    exported_at_ns: int = 0


@dataclass
class Bundle:
    manifest: dict[str, object]  # manifest.json as it is (``info`` is its typed reading)
    events: list[bytes]
    key_events: list[bytes] = field(default_factory=list)
    anchor: bytes | None = None
    proofs: dict[int, list[bytes]] = field(default_factory=dict)
    consistency: object = None  # consistency.json as it is (checked by verify_bundle)
    info: Manifest = field(default_factory=lambda: Manifest(from_seq=0, to_seq=-1))


def write_bundle(
    out: IO[bytes], raw_items: Sequence[tuple[int, bytes]], *, start: int = 0, end: int | None = None,
    exported_at_ns: int | None = None,
) -> Manifest:
    """Write the bundle for events [start, end] (inclusive; None = to the last) of a whole log ``raw_items``."""
    if not raw_items:
        raise InvalidRequest("the log is empty: nothing to export")
    last = raw_items[-1][0]
    end = last if end is None else min(end, last)
    if not 0 <= start <= end:
        raise InvalidRequest(f"export range {start}..{end} is empty or out of the log's range 0..{last}")
    events = [(s, r) for s, r in raw_items if start <= s <= end]
    decoded = {s: decode_event(r, seq=s) for s, r in raw_items if s <= end or s == start}
    anchor_raw, proofs = None, {}
    anchor_info: dict[str, object] | None = None
    consistency_to = None
    if start > 0:
        anchor = _find_anchor(raw_items, end)
        if anchor is not None:
            a_seq, anchor_raw = anchor
            levels = MerkleLevels([leaf_hash(r) for _, r in raw_items[:a_seq]])
            proofs = {s: levels.inclusion_proof(s) for s, _ in events if s < a_seq}
            anchor_info = {"seq": a_seq, "size": a_seq, "root": levels.root().hex()}
            consistency_to = a_seq
    else:
        consistency_to = next((s for s, r in reversed(events) if decoded[s].kind == Kind.CHECKPOINT), None)
    # the keys outside the range: those before it, and rotations between its end and an anchor after it
    key_end = max(end, consistency_to or 0)
    key_events = [r for s, r in raw_items if (s < start or end < s < key_end)
                  and _decoded(decoded, s, r).kind in (Kind.GENESIS, Kind.KEY_ROTATED)]
    head = event_hash(decoded[end]).hex() if end in decoded else ""
    genesis = decode_event(raw_items[0][1], seq=0)
    manifest = Manifest(origin=genesis_origin(genesis), from_seq=start, to_seq=end, count=len(events),
                        log_size=last + 1, head=head, anchor=anchor_info,
                        exported_at_ns=exported_at_ns if exported_at_ns is not None else time.time_ns())
    import tarfile  # imported where used: tarfile (with bz2, lzma, shutil) is ~1 MiB the agent at rest does not need

    with tarfile.open(fileobj=out, mode="w") as tar:
        _add(tar, "manifest.json", json.dumps(msgspec.to_builtins(manifest), indent=2, sort_keys=True).encode())
        _add(tar, "events.bin", _frame(r for _, r in events))
        _add(tar, "events.jsonl", b"".join(
            json.dumps(decode_event(r, seq=s).to_json(), sort_keys=True).encode() + b"\n" for s, r in events))
        _add(tar, "keys.bin", _frame(key_events))
        if anchor_raw is not None:
            _add(tar, "anchor.bin", _frame([anchor_raw]))
            _add(tar, "proofs.json", json.dumps({str(s): [h.hex() for h in p] for s, p in proofs.items()}).encode())
        if consistency_to is not None:
            _add(tar, "consistency.json", json.dumps(bundle_consistency(raw_items, consistency_to)).encode())
        for s, r in [*((s, r) for s, r in raw_items if s < start), *events]:
            ev = decoded.get(s) or decode_event(r, seq=s)
            if ev.kind in (Kind.GENESIS, Kind.KEY_ROTATED):
                pem = load_certificate(certificate_of(ev)).public_bytes(serialization.Encoding.PEM)
                _add(tar, f"certs/{s:08d}.pem", pem)
    return manifest


def _decoded(decoded: dict[int, Event], seq: int, raw: bytes) -> Event:
    if seq not in decoded:
        decoded[seq] = decode_event(raw, seq=seq)
    return decoded[seq]


def _find_anchor(raw_items: Sequence[tuple[int, bytes]], end: int) -> tuple[int, bytes] | None:
    """The first checkpoint covering event ``end``; else the last checkpoint of the log."""
    last_cp = None
    for s, r in raw_items:
        ev = decode_event(r, seq=s)
        if ev.kind == Kind.CHECKPOINT:
            last_cp = (s, r)
            if s > end:
                return last_cp
    return last_cp


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def read_bundle(fileobj: IO[bytes]) -> Bundle:
    import tarfile

    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            files = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
            data = {n: f.read() for n, f in files.items() if f is not None}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise TamperedLog(f"not a readable audit bundle: {exc}", seq=None, reason="truncated") from exc
    if "manifest.json" not in data or "events.bin" not in data:
        raise TamperedLog("audit bundle lacks manifest.json or events.bin", seq=None, reason="truncated")
    try:
        manifest = json.loads(data["manifest.json"])
    except ValueError as exc:
        raise TamperedLog(f"manifest.json is not JSON: {exc}", seq=None, reason="manifest") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise InvalidRequest(f"unknown bundle format {found!r} (expected {BUNDLE_FORMAT})")
    try:
        info = msgspec.convert(manifest, Manifest, strict=False)
    except msgspec.ValidationError as exc:
        raise TamperedLog(f"manifest.json is malformed: {exc}", seq=None, reason="manifest") from exc
    anchor = _unframe(data["anchor.bin"], "anchor.bin") if "anchor.bin" in data else []
    proofs = {int(k): [bytes.fromhex(h) for h in v] for k, v in json.loads(data.get("proofs.json", b"{}")).items()}
    try:
        consistency = json.loads(data["consistency.json"]) if "consistency.json" in data else None
    except ValueError as exc:
        raise TamperedLog(f"consistency.json is not JSON: {exc}", seq=None, reason="consistency") from exc
    return Bundle(manifest, _unframe(data["events.bin"], "events.bin"),
                  _unframe(data.get("keys.bin", b""), "keys.bin"), anchor[0] if anchor else None, proofs, consistency,
                  info)


def _key_chain(key_events: list[bytes], ca: x509.Certificate, keys: dict[str, bytes] | None = None,
               current: str | None = None) -> tuple[dict[str, bytes], str | None, str]:
    """Verify the certificate-carrying events outside a partial range: each certified by the CA and signed
    by the key in force before it. Returns the keys, the key in force after them, and the origin."""
    keys = {} if keys is None else keys
    origin = ""
    for raw in key_events:
        ev = decode_event(raw)
        try:
            pub = verify_log_certificate(load_certificate(certificate_of(ev)), ca)
        except (InvalidEvent, UntrustedKey) as exc:
            raise TamperedLog(f"seq {ev.seq}: key certificate not issued by the CA", seq=ev.seq,
                              reason="untrusted-key") from exc
        signer = pub if ev.kind == Kind.GENESIS else keys.get(current or "")
        if signer is None or not verify_signature(signer, ev.sig, event_hash(ev)):
            raise TamperedLog(f"seq {ev.seq}: key event is not signed by the key in force", seq=ev.seq,
                              reason="signature")
        if ev.kind == Kind.GENESIS:
            origin = payload_of(ev, Genesis).origin
        keys[key_id_for(pub)] = pub
        current = key_id_for(pub)
    return keys, current, origin


def verify_bundle(bundle: Bundle, ca: x509.Certificate) -> tuple[VerifyReport, ChainVerifier]:
    m = bundle.info
    start, end = m.from_seq, m.to_seq
    before: list[bytes] = []
    after: list[bytes] = []
    for raw in bundle.key_events:
        (before if decode_event(raw).seq < start else after).append(raw)
    if start == 0:
        verifier = ChainVerifier(ca)
    else:
        keys, current, origin = _key_chain(before, ca)
        verifier = ChainVerifier(ca, start_seq=start, keys=keys, current_key=current, origin=origin)
    report = verifier.feed_all(enumerate(bundle.events, start))
    if report.last_seq < end:
        seq = report.last_seq + 1
        raise TamperedLog(f"seq {seq}: the bundle ends at seq {report.last_seq} but its manifest says {end}",
                          seq=seq, reason="truncated")
    if report.last_seq > end:
        raise TamperedLog(f"seq {end + 1}: events past the manifest's range", seq=end + 1, reason="manifest")
    if m.head and report.head.hex() != m.head:
        raise TamperedLog(f"seq {end}: head hash differs from the manifest", seq=end, reason="manifest")
    if after:  # rotations between the range and its anchor: chained from the key in force at the range's end
        if any(decode_event(raw).seq <= end for raw in after):
            raise TamperedLog("keys.bin holds an event inside the range", seq=None, reason="manifest")
        _, verifier.current_key, _ = _key_chain(after, ca, verifier.keys, verifier.current_key)
    anchor = _check_anchor(bundle, verifier, start) if start > 0 and bundle.anchor is not None else None
    if anchor is not None:
        verifier.anchors.append(anchor)
    if bundle.consistency is not None:
        verifier.consistency = verify_bundle_consistency(bundle.consistency, start, end, verifier, anchor)
    return report, verifier


def _check_anchor(bundle: Bundle, verifier: ChainVerifier, start: int) -> Checkpoint:
    anchor = decode_event(bundle.anchor or b"")
    pub = verifier.keys.get(anchor.key_id)
    if pub is None or not verify_signature(pub, anchor.sig, event_hash(anchor)):
        raise TamperedLog(f"seq {anchor.seq}: anchor checkpoint is not signed by a certified log key",
                          seq=anchor.seq, reason="checkpoint")
    try:
        cp = verify_note(payload_of(anchor, Checkpointed).note, pub)
    except (InvalidEvent, VerificationError) as exc:
        raise TamperedLog(f"seq {anchor.seq}: anchor checkpoint note does not verify", seq=anchor.seq,
                          reason="checkpoint") from exc
    for offset, raw in enumerate(bundle.events):
        seq = start + offset
        if seq >= cp.size:
            break
        proof = bundle.proofs.get(seq)
        if proof is None or not verify_inclusion(leaf_hash(raw), seq, cp.size, proof, cp.root):
            raise TamperedLog(f"seq {seq}: not included in the checkpoint of size {cp.size}", seq=seq,
                              reason="inclusion")
    return cp


def iter_events(raws: Iterable[bytes], start: int = 0) -> Iterator[Event]:
    for i, raw in enumerate(raws, start):
        try:
            yield decode_event(raw, seq=i)
        except InvalidEvent as exc:
            raise TamperedLog(f"seq {i}: {exc.message}", seq=i, reason="undecodable") from exc

