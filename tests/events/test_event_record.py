"""Event records and their canonical bytes (property tests).

A small reference msgpack writer below encodes the spec's canonical form (shortest encodings, map keys sorted)
independently of msgspec; it also makes the non-canonical variants that ``decode_event`` must refuse.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import InvalidEvent
from events import Actor, ChainWriter, Event, Kind, decode_event, encode_canonical, encode_event, event_hash
from events._chain import LOG_KINDS
from events._record import (
    EVENT_DOMAIN,
    UnsignedEvent,
    signed_bytes,
    stored_event_hash,
    trusted_event_hash,
    unsigned_bytes,
)
from pki import Ed25519Signer

# -- strategies -------------------------------------------------------------------------------------------------
KINDS = sorted(v for k, v in vars(Kind).items() if k.isupper())
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(max_size=16), values, max_size=6)
kinds = st.sampled_from(KINDS) | st.from_regex(r"[a-z]{1,8}(\.[a-z_]{1,10}){1,2}", fullmatch=True)
actors = st.builds(Actor, st.text(max_size=20), st.lists(st.text(max_size=10), max_size=3).map(tuple))
u64 = st.integers(0, 2**64 - 1)
events = st.builds(
    Event,
    seq=st.integers(0, 2**63 - 1),
    time_ns=u64,
    mono_ns=u64,
    boot_id=st.text(max_size=36),
    kind=kinds,
    actor=actors,
    payload=payloads,
    prev=st.binary(min_size=32, max_size=32),
    key_id=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    sig=st.binary(min_size=64, max_size=64),
)


# -- a reference msgpack writer -----------------------------------------------------------------------------
def _uint(n: int, wide: bool) -> bytes:
    if wide:
        return b"\xcf" + struct.pack(">Q", n)
    if n < 0x80:
        return bytes([n])
    for tag, fmt, top in ((0xCC, ">B", 0xFF), (0xCD, ">H", 0xFFFF), (0xCE, ">I", 0xFFFFFFFF)):
        if n <= top:
            return bytes([tag]) + struct.pack(fmt, n)
    return b"\xcf" + struct.pack(">Q", n)


def _int(n: int, wide: bool) -> bytes:
    if n >= 0:
        return _uint(n, wide)
    if wide:
        return b"\xd3" + struct.pack(">q", n)
    if n >= -32:
        return struct.pack(">b", n)
    for tag, fmt, low in ((0xD0, ">b", -(2**7)), (0xD1, ">h", -(2**15)), (0xD2, ">i", -(2**31))):
        if n >= low:
            return bytes([tag]) + struct.pack(fmt, n)
    return b"\xd3" + struct.pack(">q", n)


def _len(n: int, fix: int | None, fixmax: int, tags: tuple[int, ...], wide: bool) -> bytes:
    if fix is not None and n <= fixmax and not wide:
        return bytes([fix | n])
    sizes = ((tags[0], ">B", 0xFF), (tags[1], ">H", 0xFFFF), (tags[2], ">I", 0xFFFFFFFF))
    if fix is not None:  # str has str8; arrays and maps start at 16 bits
        sizes = sizes if tags[0] else sizes[1:]
    for tag, fmt, top in sizes:
        if tag and n <= top and not (wide and tag != sizes[-1][0]):
            return bytes([tag]) + struct.pack(fmt, n)
    raise ValueError(n)


def ref_pack(obj: Any, *, wide: str = "", unsorted: bool = False) -> bytes:
    """msgpack, canonical unless ``wide`` names a type to write in its widest form or ``unsorted`` is set."""
    if isinstance(obj, Event | Actor):
        obj = {f: getattr(obj, f) for f in obj.__struct_fields__}
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        return _int(obj, wide == "int")
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        data = obj.encode()
        return _len(len(data), 0xA0, 31, (0xD9, 0xDA, 0xDB), wide == "str") + data
    if isinstance(obj, bytes):
        return _len(len(obj), None, 0, (0xC4, 0xC5, 0xC6), wide == "bin") + obj
    if isinstance(obj, list | tuple):
        return _len(len(obj), 0x90, 15, (0, 0xDC, 0xDD), wide == "array") + b"".join(
            ref_pack(v, wide=wide, unsorted=unsorted) for v in obj)
    if isinstance(obj, dict):
        keys = list(obj) if unsorted else sorted(obj)
        return _len(len(obj), 0x80, 15, (0, 0xDE, 0xDF), wide == "map") + b"".join(
            ref_pack(k, wide=wide, unsorted=unsorted) + ref_pack(obj[k], wide=wide, unsorted=unsorted)
            for k in keys)
    raise TypeError(type(obj))


# -- properties -------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(events)
def test_any_event_round_trips_and_is_canonical(event: Event) -> None:
    raw = encode_event(event)
    assert raw == ref_pack(event), "msgspec's bytes differ from the spec's canonical form"
    decoded = decode_event(raw)
    assert decoded == event
    assert encode_event(decoded) == raw  # stable
    assert event_hash(decoded) == event_hash(event)
    body = {f: getattr(event, f) for f in event.__struct_fields__ if f != "sig"}
    import hashlib

    assert event_hash(event) == hashlib.sha256(EVENT_DOMAIN + ref_pack(body)).digest()
    # the shortcuts that hash stored bytes without encoding again give the same digest
    assert stored_event_hash(raw, event) == event_hash(event) == trusted_event_hash(raw, event)


app_kinds = kinds.filter(lambda k: k not in LOG_KINDS)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(app_kinds, actors, payloads), min_size=1, max_size=25), st.integers(1, 8))
def test_any_list_of_events_round_trips_through_the_chain(items, every: int) -> None:
    signer = _SIGNER
    w = ChainWriter(signer, origin="graven/prop", boot_id="b", checkpoint_every=every)
    signed = [w.genesis(b"cert")]
    for kind, actor, payload in items:
        signed.extend(w.append(kind, payload, actor))
    prev = signed[0][0].prev
    for i, (event, raw) in enumerate(signed):
        assert event.seq == i and event.prev == prev
        again = decode_event(raw, seq=i)
        assert again == event and encode_event(again) == raw
        prev = event_hash(event)
    appended = [e for e, _ in signed if e.kind != Kind.CHECKPOINT][1:]
    assert [(e.kind, e.actor, e.payload) for e in appended] == [(k, a, p) for k, a, p in items]


@pytest.mark.parametrize("kind", sorted(LOG_KINDS))
def test_chain_refuses_the_logs_own_kinds(kind: str) -> None:
    w = ChainWriter(_SIGNER, origin="graven/prop", boot_id="b")
    w.genesis(b"cert")
    with pytest.raises(InvalidEvent):
        w.append(kind, {})
    with pytest.raises(InvalidEvent):
        w.prepare(kind, {})
    assert w.append(Kind.TASK_STARTED, {})[0][0].seq == 1  # nothing was consumed


@pytest.mark.parametrize(("kind", "actor", "payload"), [
    (None, Actor("node"), {}), ("", Actor("node"), {}), ("x.y", "node", {}), ("x.y", Actor("node"), {1: 2}),
    ("x.y", Actor("node"), [1, 2]), ("x.y", Actor("node"), {"f": lambda: 0}),
])
def test_chain_refuses_what_would_not_decode(kind, actor, payload) -> None:
    w = ChainWriter(_SIGNER, origin="graven/prop", boot_id="b")
    w.genesis(b"cert")
    with pytest.raises(InvalidEvent):
        w.append(kind, payload, actor)
    assert w.append(Kind.TASK_STARTED, {})[0][0].seq == 1


_SIGNER = Ed25519Signer.generate()


@settings(max_examples=100, deadline=None)
@given(events, st.sampled_from(["int", "str", "bin", "array", "map", "unsorted"]))
def test_decode_refuses_non_canonical_bytes(event: Event, variant: str) -> None:
    raw = encode_event(event)
    other = ref_pack(event, unsorted=True) if variant == "unsorted" else ref_pack(event, wide=variant)
    if other == raw:  # nothing of that type in this event is short enough to have a longer form
        return
    with pytest.raises(InvalidEvent):
        decode_event(other)


@pytest.mark.parametrize("time_ns", [0, 127, 128, 2**16, 2**32 - 1, 2**32, 2**64 - 1])
@pytest.mark.parametrize("sig_len", [0, 63, 64, 65, 300])
def test_stored_hash_shortcuts_at_encoding_boundaries(time_ns: int, sig_len: int) -> None:
    event = Event(seq=5, time_ns=time_ns, mono_ns=1, boot_id="b", kind="x.y", actor=Actor("node"),
                  payload={"k": [1, {"z": b"\xa3sig"}]}, prev=b"\x01" * 32, key_id="k", sig=b"\xc4" * sig_len)
    raw = encode_event(event)
    assert stored_event_hash(raw, event) == event_hash(event) == trusted_event_hash(raw, event)
    # bytes that are not this event's are never cut blindly by the checked shortcut
    other = msgspec.structs.replace(event, sig=b"\x00" * sig_len)
    assert stored_event_hash(raw, other) == event_hash(other)


@pytest.mark.parametrize("time_ns", [0, 127, 128, 2**16, 2**32 - 1, 2**32, 2**64 - 1])
@pytest.mark.parametrize("sig_len", [0, 63, 64, 65, 300])
def test_signed_bytes_put_the_signature_into_the_unsigned_bytes_at_encoding_boundaries(time_ns: int,
                                                                                       sig_len: int) -> None:
    event = Event(seq=5, time_ns=time_ns, mono_ns=1, boot_id="b", kind="x.y", actor=Actor("node"),
                  payload={"time_ns": b"\xa7time_ns\xcf", "zz": [1]}, prev=b"\x01" * 32, key_id="k",
                  sig=b"\xc4" * sig_len)
    enc, digest = unsigned_bytes(event.unsigned())
    assert signed_bytes(enc, event) == encode_event(event) == ref_pack(event)
    assert digest == event_hash(event)


@settings(max_examples=200, deadline=None)
@given(events)
def test_signed_bytes_equal_the_full_encoding_of_any_event(event: Event) -> None:
    enc, digest = unsigned_bytes(event.unsigned())
    assert signed_bytes(enc, event) == encode_event(event)
    assert digest == event_hash(event)


def test_non_canonical_examples() -> None:
    event = Event(seq=1, time_ns=2, mono_ns=3, boot_id="b", kind="x.y", actor=Actor("node"),
                  payload={"b": 1, "a": [1.5]}, prev=b"\x00" * 32, key_id="k", sig=b"s" * 64)
    raw = encode_event(event)
    for bad in (ref_pack(event, unsorted=True), ref_pack(event, wide="int"), ref_pack(event, wide="str"),
                raw + b"\xc0", raw[:-1]):
        with pytest.raises(InvalidEvent):
            decode_event(bad, seq=1)
    # a float32 where the canonical form has a float64
    f32 = raw.replace(b"\xcb" + struct.pack(">d", 1.5), b"\xca" + struct.pack(">f", 1.5))
    assert f32 != raw
    with pytest.raises(InvalidEvent):
        decode_event(f32)
    # unknown and missing fields
    for extra in ({**{f: getattr(event, f) for f in event.__struct_fields__}, "zzz": 1},
                  {f: getattr(event, f) for f in event.__struct_fields__ if f != "sig"}):
        with pytest.raises(InvalidEvent):
            decode_event(ref_pack(extra))
    # a nested payload map with an integer key decodes, but is no canonical event (found by test_tail's fuzzing)
    nested = encode_event(msgspec.structs.replace(event, payload={"b": 1, "a": {"c": 2}}))
    int_key = nested.replace(b"\x81\xa1c\x02", b"\x81\x07\x02")
    assert int_key != nested
    with pytest.raises(InvalidEvent, match="canonical"):
        decode_event(int_key)
    with pytest.raises(InvalidEvent) as info:
        decode_event(b"\xff\x00", seq=9)
    assert info.value.details["seq"] == 9


def test_encode_canonical_sorts_keys() -> None:
    assert encode_canonical({"b": 1, "a": {"d": 2, "c": 3}}) == ref_pack({"a": {"c": 3, "d": 2}, "b": 1})
    assert encode_canonical({"b": 1, "a": 2}) == encode_canonical({"a": 2, "b": 1})


def test_hash_excludes_sig_and_uses_domain() -> None:
    event = Event(seq=0, time_ns=0, mono_ns=0, boot_id="", kind="k", actor=Actor("node"), payload={},
                  prev=b"\x00" * 32, key_id="", sig=b"a" * 64)
    other = msgspec.structs.replace(event, sig=b"b" * 64)
    assert event_hash(event) == event_hash(other)
    assert event_hash(event) == event_hash(event.unsigned())
    assert event_hash(msgspec.structs.replace(event, seq=1)) != event_hash(event)


def test_an_event_is_its_unsigned_body_and_sig_and_neither_kind_is_the_other() -> None:
    assert Event.__struct_fields__ == (*UnsignedEvent.__struct_fields__, "sig")
    assert not issubclass(Event, UnsignedEvent) and not issubclass(UnsignedEvent, Event)
    event = Event(seq=3, time_ns=5, mono_ns=7, boot_id="b", kind="k", actor=Actor("node"), payload={"a": 1},
                  prev=b"\x01" * 32, key_id="id", sig=b"s" * 64)
    body = event.unsigned()
    assert type(body) is UnsignedEvent
    assert msgspec.structs.asdict(body) == {k: v for k, v in msgspec.structs.asdict(event).items() if k != "sig"}
    assert encode_canonical(body) == ref_pack({f: getattr(event, f) for f in UnsignedEvent.__struct_fields__})


def test_to_json_renders_bytes_as_hex() -> None:
    event = Event(seq=0, time_ns=0, mono_ns=0, boot_id="", kind="k", actor=Actor("a", ("r",)),
                  payload={"cert": b"\x01\x02", "n": [b"\xff"]}, prev=b"\x00" * 32, key_id="", sig=b"\x0a")
    js = event.to_json()
    assert js["payload"] == {"cert": "0102", "n": ["ff"]}
    assert js["prev"] == "00" * 32 and js["sig"] == "0a" and js["actor"] == {"id": "a", "roles": ["r"]}
