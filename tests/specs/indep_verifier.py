"""An independent verifier of Graven event logs and audit bundles, written from ``specs/event-log.md`` alone.

It imports nothing from the project: its own msgpack codec (§2), event hash (§3), Merkle tree and proofs (§6,
RFC 6962 / RFC 9162), signed-note parser (§7), bundle reader (§8) and algorithm (§9, §10). Only ``cryptography``
(Ed25519, X.509) and the standard library. Failures raise ``Bad(seq, reason)`` with the spec's reasons.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID


class Bad(Exception):
    def __init__(self, seq: int | None, reason: str, why: str = "") -> None:
        super().__init__(f"seq {seq}: {reason}: {why}")
        self.seq, self.reason = seq, reason


# -- §2 msgpack ---------------------------------------------------------------------------------------------
def unpack(data: bytes) -> Any:
    value, pos = _read(data, 0)
    if pos != len(data):
        raise ValueError("trailing bytes")
    return value


def _read(d: bytes, p: int) -> tuple[Any, int]:
    b = d[p]
    p += 1
    if b <= 0x7F:
        return b, p
    if b >= 0xE0:
        return b - 0x100, p
    if 0x80 <= b <= 0x8F:
        return _map(d, p, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _array(d, p, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        return _take(d, p, b & 0x1F, text=True)
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if b in simple:
        return simple[b], p
    fixed = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
             0xCA: ">f", 0xCB: ">d"}
    if b in fixed:
        fmt = fixed[b]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, d, p)[0], p + size
    lengths = {0xC4: (">B", False), 0xC5: (">H", False), 0xC6: (">I", False),
               0xD9: (">B", True), 0xDA: (">H", True), 0xDB: (">I", True)}
    if b in lengths:
        fmt, text = lengths[b]
        n = struct.unpack_from(fmt, d, p)[0]
        return _take(d, p + struct.calcsize(fmt), n, text=text)
    counts = {0xDC: (">H", _array), 0xDD: (">I", _array), 0xDE: (">H", _map), 0xDF: (">I", _map)}
    if b in counts:
        fmt, fn = counts[b]
        return fn(d, p + struct.calcsize(fmt), struct.unpack_from(fmt, d, p)[0])
    raise ValueError(f"msgpack type 0x{b:02x} is not used by the log")


def _take(d: bytes, p: int, n: int, *, text: bool) -> tuple[Any, int]:
    if p + n > len(d):
        raise ValueError("truncated")
    raw = d[p:p + n]
    return (raw.decode("utf-8") if text else bytes(raw)), p + n


def _array(d: bytes, p: int, n: int) -> tuple[list[Any], int]:
    out = []
    for _ in range(n):
        v, p = _read(d, p)
        out.append(v)
    return out, p


def _map(d: bytes, p: int, n: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    for _ in range(n):
        k, p = _read(d, p)
        if not isinstance(k, str):
            raise ValueError("map key is not a str")
        out[k], p = _read(d, p)
    return out, p


def pack(v: Any) -> bytes:
    """The one canonical encoding of §2."""
    if v is None:
        return b"\xc0"
    if v is True or v is False:
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        return _pack_int(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        raw = v.encode("utf-8")
        return _header(len(raw), 0xA0, 31, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(v, bytes):
        return _header(len(v), None, -1, (0xC4, 0xC5, 0xC6)) + v
    if isinstance(v, list):
        return _header(len(v), 0x90, 15, (None, 0xDC, 0xDD)) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-8"))
        return _header(len(v), 0x80, 15, (None, 0xDE, 0xDF)) + b"".join(pack(k) + pack(x) for k, x in items)
    raise TypeError(type(v))


def _pack_int(v: int) -> bytes:
    if 0 <= v <= 0x7F:
        return bytes([v])
    if -32 <= v < 0:
        return bytes([v + 0x100])
    if v > 0:
        for code, fmt, top in ((0xCC, ">B", 0xFF), (0xCD, ">H", 0xFFFF), (0xCE, ">I", 2**32 - 1),
                               (0xCF, ">Q", 2**64 - 1)):
            if v <= top:
                return bytes([code]) + struct.pack(fmt, v)
    for code, fmt, low in ((0xD0, ">b", -128), (0xD1, ">h", -32768), (0xD2, ">i", -(2**31)), (0xD3, ">q", -(2**63))):
        if v >= low:
            return bytes([code]) + struct.pack(fmt, v)
    raise ValueError("integer out of range")


def _header(n: int, fix: int | None, fix_max: int, codes: tuple[int | None, int, int]) -> bytes:
    if fix is not None and n <= fix_max:
        return bytes([fix | n])
    for code, fmt, top in ((codes[0], ">B", 0xFF), (codes[1], ">H", 0xFFFF), (codes[2], ">I", 2**32 - 1)):
        if code is not None and n <= top:
            return bytes([code]) + struct.pack(fmt, n)
    raise ValueError("too long")


# -- §3 the event and its hash ------------------------------------------------------------------------------------
EVENT_KEYS = {"seq", "time_ns", "mono_ns", "boot_id", "kind", "actor", "payload", "prev", "key_id", "sig"}


def decode(raw: bytes, seq: int | None) -> dict[str, Any]:
    try:
        ev = unpack(raw)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise Bad(seq, "undecodable", str(exc)) from exc
    if not isinstance(ev, dict) or set(ev) != EVENT_KEYS or pack(ev) != raw:
        raise Bad(seq, "undecodable", "not a canonical event")
    actor = ev["actor"]
    if not (isinstance(actor, dict) and set(actor) == {"id", "roles"} and isinstance(ev["payload"], dict)
            and isinstance(ev["prev"], bytes) and len(ev["prev"]) == 32 and isinstance(ev["sig"], bytes)
            and isinstance(ev["seq"], int) and isinstance(ev["key_id"], str) and isinstance(ev["kind"], str)):
        raise Bad(seq, "undecodable", "a field has the wrong type")
    return ev


def event_hash(ev: dict[str, Any]) -> bytes:
    body = {k: v for k, v in ev.items() if k != "sig"}
    return hashlib.sha256(b"graven/event/v1\x00" + pack(body)).digest()


# -- §6 Merkle ----------------------------------------------------------------------------------------------------
def leaf(raw: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + raw).digest()


def node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(mth(leaves[:k]), mth(leaves[k:]))


def consistency(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.2 PROOF(m, D[n]), straight from the definition."""
    def sub(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [mth(d)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return [*sub(m, d[:k], b), mth(d[k:])]
        return [*sub(m - k, d[k:], False), mth(d[:k])]
    return [] if m in (0, len(leaves)) else sub(m, leaves, True)


def verify_inclusion(index: int, size: int, leaf_h: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_h
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2 (m = 0 and m = n: an empty proof, §10)."""
    if m == n:
        return not proof and r1 == r2
    if m == 0:
        return not proof
    if m > n or not proof:
        return False
    path = [r1, *proof] if m & (m - 1) == 0 else list(proof)
    fn, sn = m - 1, n - 1
    while fn % 2 == 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == r1 and sr == r2 and sn == 0


# -- §7 notes, §5 certificates -----------------------------------------------------------------------------------
def verify_note(note: str, origin: str, pub: bytes) -> tuple[int, bytes]:
    body, sep, sigs = note.partition("\n\n")
    lines = body.split("\n")
    if not sep or len(lines) != 3 or lines[0] != origin or not lines[1].isdigit():
        raise ValueError("malformed note")
    size, root = int(lines[1]), base64.b64decode(lines[2], validate=True)
    key_hash = hashlib.sha256(origin.encode() + b"\n\x01" + pub).digest()[:4]
    signed = (body + "\n").encode()
    for line in sigs.split("\n"):
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "\u2014" and parts[1] == origin:
            blob = base64.b64decode(parts[2])
            if blob[:4] == key_hash and _ed25519_ok(pub, blob[4:], signed):
                return size, root
    raise ValueError("no valid signature by the log key")


def _ed25519_ok(pub: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except Exception:
        return False
    return True


def certified_key(der: Any, ca: x509.Certificate, seq: int) -> bytes:
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(ca)
        units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
        pub = cert.public_key()
        if "graven-log" not in units or not isinstance(pub, Ed25519PublicKey):
            raise ValueError("not a log certificate")
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    except Exception as exc:
        raise Bad(seq, "untrusted-key", str(exc)) from exc


def key_id(pub: bytes) -> str:
    return hashlib.sha256(pub).digest()[:8].hex()


# -- §9 the algorithm --------------------------------------------------------------------------------------------
@dataclass
class State:
    ca: x509.Certificate
    keys: dict[str, bytes] = field(default_factory=dict)
    current: str | None = None
    origin: str = ""
    hashes: dict[int, bytes] = field(default_factory=dict)
    leaves: dict[int, bytes] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)  # size -> root of the checkpoints verified
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    def key_event(self, ev: dict[str, Any], seq: int) -> None:
        """§9.1: a genesis or rotation outside the range."""
        pub = certified_key(ev["payload"].get("cert"), self.ca, seq)
        signer = pub if ev["kind"] == "log.genesis" else self.keys.get(self.current or "")
        if signer is None or not _ed25519_ok(signer, ev["sig"], event_hash(ev)):
            raise Bad(seq, "signature", "key event not signed by the key in force")
        if ev["kind"] == "log.genesis":
            self.origin = ev["payload"]["origin"]
        self.keys[key_id(pub)] = pub
        self.current = key_id(pub)


def verify_events(raws: list[bytes], state: State, start: int = 0) -> State:
    prev = b"\x00" * 32 if start == 0 else None
    for seq, raw in enumerate(raws, start):
        ev = decode(raw, seq)
        if ev["seq"] != seq:
            raise Bad(seq, "gap" if ev["seq"] > seq else "reordered")
        if prev is not None and ev["prev"] != prev:
            raise Bad(seq, "chain")
        if ev["kind"] == "log.genesis" and seq == 0:
            pub = certified_key(ev["payload"].get("cert"), state.ca, seq)
            state.keys[key_id(pub)] = pub
            state.current, state.origin = key_id(pub), ev["payload"]["origin"]
        if ev["key_id"] != state.current or state.current not in state.keys:
            raise Bad(seq, "untrusted-key")
        digest = event_hash(ev)
        if not _ed25519_ok(state.keys[state.current], ev["sig"], digest):
            raise Bad(seq, "signature")
        if ev["kind"] == "key.rotated":
            pub = certified_key(ev["payload"].get("cert"), state.ca, seq)
            state.keys[key_id(pub)] = pub
            state.current = key_id(pub)
        state.leaves[seq] = leaf(raw)
        if ev["kind"] == "log.checkpoint":
            _checkpoint(ev, seq, state, start)
        state.hashes[seq] = prev = digest
    return state


def _checkpoint(ev: dict[str, Any], seq: int, state: State, start: int) -> None:
    p = ev["payload"]
    try:
        size, root = verify_note(p["note"], state.origin, state.keys[ev["key_id"]])
    except (KeyError, ValueError) as exc:
        raise Bad(seq, "checkpoint", str(exc)) from exc
    if not (p["size"] == seq == size and p["root"] == root):
        raise Bad(seq, "checkpoint", "size or root differs from the note")
    if start == 0 and mth([state.leaves[i] for i in range(seq)]) != root:
        raise Bad(seq, "checkpoint", "root is not the tree of the events before it")
    state.roots[size] = root
    state.checkpoints.append({"seq": seq, "size": size, "root": root.hex(), "sealed": p["sealed"],
                              "reason": p["reason"]})


def unframe(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + n > len(data):
            raise Bad(None, "truncated", "framing")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def verify_bundle(blob: bytes, ca: x509.Certificate) -> State:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        files = {m.name: tar.extractfile(m) for m in tar.getmembers()}
        data = {k: f.read() for k, f in files.items() if f is not None}
    m = json.loads(data["manifest.json"])
    if m["format"] != "graven-audit-bundle/1":
        raise Bad(None, "manifest", "format")
    start, end = m["from_seq"], m["to_seq"]
    state = State(ca)
    keys = [decode(r, None) for r in unframe(data["keys.bin"])]
    for ev in keys:
        if ev["seq"] < start:
            state.key_event(ev, ev["seq"])
    verify_events(unframe(data["events.bin"]), state, start)
    if max(state.hashes, default=-1) != end:
        raise Bad(end, "truncated")
    if state.hashes[end].hex() != m["head"]:
        raise Bad(end, "manifest", "head")
    for ev in keys:
        if ev["seq"] > end:
            state.key_event(ev, ev["seq"])
    anchor = None
    if "anchor.bin" in data:
        (raw,) = unframe(data["anchor.bin"])
        a = decode(raw, None)
        try:
            size, root = verify_note(a["payload"]["note"], state.origin, state.keys[a["key_id"]])
        except (KeyError, ValueError) as exc:
            raise Bad(a["seq"], "checkpoint", str(exc)) from exc
        if not _ed25519_ok(state.keys[a["key_id"]], a["sig"], event_hash(a)) or size != a["seq"]:
            raise Bad(a["seq"], "checkpoint")
        if m["anchor"] != {"seq": a["seq"], "size": size, "root": root.hex()}:
            raise Bad(a["seq"], "manifest", "anchor")
        anchor = (size, root)
        proofs = json.loads(data["proofs.json"])
        want = {str(s) for s in range(start, min(end + 1, size))}
        if set(proofs) != want:
            raise Bad(start, "inclusion", "proofs.json does not cover exactly the events before the anchor")
        for s in sorted(want, key=int):
            if not verify_inclusion(int(s), size, state.leaves[int(s)], [bytes.fromhex(h) for h in proofs[s]], root):
                raise Bad(int(s), "inclusion")
    if "consistency.json" in data:
        _consistency(json.loads(data["consistency.json"]), state, start, end, anchor)
    return state


def _consistency(doc: dict[str, Any], state: State, start: int, end: int, anchor: tuple[int, bytes] | None) -> None:
    to_size, to_root = doc["to"]["size"], bytes.fromhex(doc["to"]["root"])
    if anchor is not None and (to_size, to_root) != anchor:
        raise Bad(to_size, "consistency", "target is not the anchor")
    if anchor is None and (not start <= doc["to"]["seq"] <= end or state.roots.get(to_size) != to_root):
        raise Bad(to_size, "consistency", "target is not a checkpoint of the range")
    seen = set()
    for e in doc["from"]:
        size, root = e["size"], bytes.fromhex(e["root"])
        if e["seq"] != size or size >= to_size:
            raise Bad(size, "consistency", "entry past the target")
        if start <= size <= end:
            ok = state.roots.get(size) == root
        else:
            ok = any(_note_gives(e["note"], state.origin, pub, size, root) for pub in state.keys.values())
        if not ok or not verify_consistency(size, to_size, root, to_root, [bytes.fromhex(h) for h in e["proof"]]):
            raise Bad(size, "consistency")
        seen.add(size)
    if any(s < to_size and s not in seen for s in state.roots):
        raise Bad(None, "consistency", "a checkpoint of the range has no proof")


def _note_gives(note: str, origin: str, pub: bytes, size: int, root: bytes) -> bool:
    try:
        return verify_note(note, origin, pub) == (size, root)
    except ValueError:
        return False
