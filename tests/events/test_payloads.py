"""Typed event payloads: a Struct per kind, schema versions and upcasters, and the log written before they
existed (``fixtures/main-lifecycle.*``: six boots running all nine sequences, written by the main branch of
2026-12-06 before this change) still verifies, replays to the same state and reads typed."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import InvalidEvent, Locked, QuorumAtRisk
from events import (
    SCHEMAS,
    Actor,
    Event,
    Kind,
    MemoryEventLog,
    Payload,
    decode_event,
    encode_event,
    payload_of,
    replay,
    to_payload,
    verify_items,
)
from events.payloads import (
    VERSION_KEY,
    ApiDenied,
    ApiRefused,
    BootStarted,
    ConfigApplied,
    Step,
    api_denied,
    api_refused,
)
from pki import Ed25519Signer, issue_certificate, load_certificate, make_ca

FIXTURES = Path(__file__).parent / "fixtures"
KINDS = sorted(v for k, v in vars(Kind).items() if k.isupper())


def _fixture() -> tuple[list[bytes], list[Event]]:
    raws: list[bytes] = msgspec.msgpack.decode((FIXTURES / "main-lifecycle.log").read_bytes())
    return raws, [decode_event(raw, seq=i) for i, raw in enumerate(raws)]


def test_every_kind_has_a_payload_struct() -> None:
    missing = [k for k in KINDS if k not in SCHEMAS.types]
    assert not missing, f"add a Struct for these kinds to events/payloads.py: {missing}"
    assert all(kind == cls.KIND and cls.VERSION >= 1 for kind, cls in SCHEMAS.types.items())


def test_the_log_written_before_typed_payloads_verifies_replays_and_reads_typed() -> None:
    raws, evs = _fixture()
    assert len(evs) == 421 and {e.kind for e in evs} >= {Kind.BOOT_STARTED, Kind.CONFIG_APPLIED, Kind.BOOT_REVERTED}
    report = verify_items(enumerate(raws), load_certificate((FIXTURES / "main-lifecycle-ca.pem").read_bytes()))
    assert report.events == len(raws) and report.sealed, report  # verify_items raises on any fault
    state = json.loads(json.dumps(replay(evs).to_json(), sort_keys=True))
    assert state == json.loads((FIXTURES / "main-lifecycle-state.json").read_text())
    for e in evs:
        typed = SCHEMAS.read(e.kind, e.payload, seq=e.seq)
        assert isinstance(typed, SCHEMAS.types[e.kind])
        assert VERSION_KEY not in e.payload  # everything written so far is version 1
    first = payload_of(evs[next(i for i, e in enumerate(evs) if e.kind == Kind.BOOT_STARTED)], BootStarted)
    assert first.boot_id == "boot-0" and first.boot_number == 0


def test_a_payload_of_the_wrong_shape_is_an_invalid_event_naming_its_field() -> None:
    with pytest.raises(InvalidEvent, match=r"fsm.transition payload.*\$\.dst"):
        SCHEMAS.read(Kind.FSM_TRANSITION, {"trigger": "x", "src": "a", "dst": 3}, seq=7)
    with pytest.raises(InvalidEvent, match=r"version 9: this reader knows 1\.\.1"):
        SCHEMAS.read(Kind.BOOT_COMMITTED, {"slot": "A", VERSION_KEY: 9})
    assert SCHEMAS.read("boot.armed", {"slot": "B"}) is None  # the bootloader's own records stay maps
    assert SCHEMAS.read(Kind.BOOT_COMMITTED, {"slot": "A", "later": 1}) == SCHEMAS.types[Kind.BOOT_COMMITTED](slot="A")


# -- upcasting: a v1 payload read as v2 ----------------------------------------------------------------------------
class ConfigAppliedV2(Payload, frozen=True, kw_only=True):
    """A made-up next version: ``mode`` renamed ``apply_mode``, and the number of changes carried."""

    KIND = Kind.CONFIG_APPLIED
    VERSION = 2
    digest: str
    apply_mode: str | None = None
    action: str | None = None
    changed: int = 0


def _v2() -> Any:
    schemas = SCHEMAS.copy()
    schemas.register(ConfigAppliedV2)

    @schemas.upcaster(Kind.CONFIG_APPLIED, 1)
    def _v1_to_v2(p: dict[str, Any]) -> dict[str, Any]:
        return {"digest": p["digest"], "apply_mode": p.get("mode"), "action": p.get("action"),
                "changed": len(p.get("changes", []))}

    return schemas


def test_a_v1_payload_of_todays_log_upcasts_to_v2() -> None:
    schemas = _v2()
    _, evs = _fixture()
    applied = next(e for e in evs if e.kind == Kind.CONFIG_APPLIED)
    v1 = payload_of(applied, ConfigApplied)
    v2 = payload_of(applied, ConfigAppliedV2, schemas)
    assert (v2.digest, v2.apply_mode, v2.action, v2.changed) == (v1.digest, v1.mode, v1.action, len(v1.changes))
    assert SCHEMAS.read(Kind.CONFIG_APPLIED, applied.payload) == v1  # the default schemas are untouched


def test_a_log_with_v1_and_v2_payloads_verifies_and_reads_as_v2() -> None:
    schemas = _v2()
    ca_key, ca = make_ca("test-ca")
    signer = Ed25519Signer.generate()
    cert = issue_certificate(ca_key, ca, signer.private_key.public_key(), cn="n", unit="graven-log")
    log = MemoryEventLog(signer, cert.public_bytes(Encoding.DER), origin="graven/n", boot_id="b")
    log.append(Kind.CONFIG_APPLIED, {"digest": "d1", "mode": "auto", "changes": [{"path": "x"}]}, Actor("op"))
    new = to_payload(ConfigAppliedV2(digest="d2", apply_mode="try", changed=2))
    assert new[VERSION_KEY] == 2
    log.append(Kind.CONFIG_APPLIED, new, Actor("op"))
    raws = list(log.read_raw())
    assert verify_items(raws, ca).events == 3
    got = [payload_of(decode_event(raw), ConfigAppliedV2, schemas) for _, raw in raws[1:]]
    assert got == [ConfigAppliedV2(digest="d1", apply_mode="auto", changed=1),
                   ConfigAppliedV2(digest="d2", apply_mode="try", changed=2)]
    with pytest.raises(InvalidEvent, match=r"version 2: this reader knows 1\.\.1"):
        SCHEMAS.read(Kind.CONFIG_APPLIED, new)  # an older reader refuses what it cannot read
    without = SCHEMAS.copy()
    without.register(ConfigAppliedV2)
    with pytest.raises(InvalidEvent, match="version 1: no upcaster to 2"):
        without.read(Kind.CONFIG_APPLIED, {"digest": "d"})


# -- round trips, per kind -----------------------------------------------------------------------------------------
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62), st.text(max_size=8))
_free = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=6)


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    if tp is object:
        return _free
    if tp is type(None):
        return st.none()
    if tp in (str, int, bool, bytes, float):
        return {str: st.text(max_size=12), int: st.integers(-(2**62), 2**62), bool: st.booleans(),
                bytes: st.binary(max_size=40), float: st.floats(allow_nan=False)}[tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy(t) for t in typing.get_args(tp)))
    if origin is list:
        return st.lists(_strategy(typing.get_args(tp)[0]), max_size=3)
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(_strategy(key), _strategy(value), max_size=3)
    raise AssertionError(f"no strategy for {tp!r}")


def _struct(cls: type[Payload]) -> st.SearchStrategy[Payload]:
    fields = msgspec.structs.fields(cls)
    return st.builds(cls, **{f.name: _strategy(f.type) for f in fields})


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_kind_round_trips_through_the_canonical_bytes(kind: str, data: st.DataObject) -> None:
    cls = SCHEMAS.types[kind]
    value = data.draw(_struct(cls))
    event = Event(seq=1, time_ns=1 << 40, mono_ns=5, boot_id="b", kind=kind, actor=Actor("node"),
                  payload=to_payload(value), prev=b"\x00" * 32, key_id="k", sig=b"\x01" * 64)
    back = decode_event(encode_event(event))
    assert payload_of(back, cls) == value


def test_a_step_is_every_sequence_phase_and_task_kind_and_nothing_else() -> None:
    steps = typing.get_args(Step)
    kinds = {v for k, v in vars(Kind).items() if k.isupper()}
    assert {t.KIND for t in steps} == {k for k in kinds if k.split(".")[0] in ("sequence", "phase", "task")}
    assert len(steps) == len({t.KIND for t in steps})
    assert isinstance(SCHEMAS.read(Kind.PHASE_SKIPPED, {"phase": "p"}), Step)
    assert not isinstance(SCHEMAS.read(Kind.BOOT_STARTED, {}), Step)


def test_the_api_refused_and_denied_payloads_read_back_as_their_structs() -> None:
    locked = Locked("cp2 holds the upgrade lock", holder="cp2")
    refused = api_refused("upgrade", 41, locked, holder="cp2")
    assert refused == {"method": "upgrade", "request_seq": 41, "reason": "cp2 holds the upgrade lock",
                       "code": "LOCKED", "holder": "cp2"}
    assert SCHEMAS.read(Kind.API_REFUSED, refused) == ApiRefused(method="upgrade", request_seq=41,
                                                                 reason=locked.message, code="LOCKED", holder="cp2")
    quorum = QuorumAtRisk("reboot refused: 1 of 3 left", down=["cp1"], reason="the check's own words")
    with_details = api_refused("reboot", 7, quorum, **quorum.details)
    assert (with_details["reason"], with_details["down"], with_details["code"]) == (
        "the check's own words", ["cp1"], "QUORUM_AT_RISK")  # the details win, as they always did
    assert api_refused("etcd.leave", None, locked, method="other")["method"] == "other"
    denied = api_denied("etcd.publish-checkpoint", Actor("w1", ("os:reader",)), "its own checkpoints only")
    assert SCHEMAS.read(Kind.API_DENIED, denied) == ApiDenied(method="etcd.publish-checkpoint", subject="w1",
                                                              roles=["os:reader"], reason="its own checkpoints only")
