"""The service's sequence commands in memory: what each records, the pre-checks in their order, and refusals
recorded with the code of the exception that refused them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servicekit import Node

from boot import BootEnv, Slot, SlotBoot
from errors import BadImage, Code, GravenError, InvalidRequest, NotFound, QuorumAtRisk, TransitionRejected
from events import Actor, Kind
from fsm import Stage
from sequencer import RebootRequest, ResetRequest, SequenceName, UpgradeRequest
from sequencer.memory import MemoryBootEnv
from service import Accepted, Reboot, Reset, Rollback, Shutdown, Upgrade

T = TypeVar("T")
ADMIN = Actor("alice", ("os:admin",))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def events(node: Node, kind: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in node.log.read() if e.kind == kind]


async def _accept(node: Node, cmd: Any) -> tuple[Accepted, object | None]:
    accepted = await node.service.request(cmd, ADMIN)
    run_ = node.seq.running
    return accepted, run_.request if run_ is not None else None


def _refused(node: Node, cmd: Any, exc: type[GravenError]) -> dict[str, Any]:
    async def go() -> None:
        await node.service.request(cmd, ADMIN)

    with pytest.raises(exc):
        run(go())
    refused = events(node, Kind.API_REFUSED)
    assert len(refused) == 1, refused
    return refused[0]


def test_an_upgrade_is_recorded_verified_checked_and_started_with_its_typed_request(make_node: Any,
                                                                                    make_config: Any) -> None:
    node = make_node(cfg=make_config())
    accepted, request = run(_accept(node, Upgrade(source="v2.img")))
    assert accepted.sequence is SequenceName.UPGRADE
    assert request == UpgradeRequest(image="v2.img")
    [req] = events(node, Kind.API_REQUEST)
    assert req == {"method": "upgrade", "args": {"source": "v2.img", "stage": False, "force": False}}
    assert accepted.seq == next(e.seq for e in node.log.read() if e.kind == Kind.API_REQUEST)
    assert node.ports.images.verified[0] == "v2.img"  # before acceptance (the sequence verifies it again)
    assert node.cluster.calls == [("quorum:upgrade", accepted.seq), ("lock", accepted.seq)]


def test_a_bad_image_is_refused_before_the_cluster_is_asked(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config())
    refused = _refused(node, Upgrade(source="nowhere.img"), BadImage)
    assert refused["method"] == "upgrade" and refused["code"] == Code.BAD_IMAGE.name
    assert refused["request_seq"] == next(e.seq for e in node.log.read() if e.kind == Kind.API_REQUEST)
    assert node.cluster.calls == [], "a bad image takes no cluster lock"


def test_stage_upgrade_takes_no_upgrade_lock_and_force_skips_the_cluster(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config())
    accepted, _ = run(_accept(node, Upgrade(source="v2.img", stage=True)))
    assert accepted.sequence is SequenceName.STAGE_UPGRADE
    assert node.cluster.calls == [("quorum:stage-upgrade", accepted.seq)]
    forced = make_node(cfg=make_config())
    run(_accept(forced, Upgrade(source="v2.img", force=True)))
    assert forced.cluster.calls == []


def test_a_quorum_refusal_stops_the_request(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config())
    node.cluster.refuse.add("reboot")

    async def go() -> None:
        await node.service.request(Reboot(), ADMIN)

    with pytest.raises(QuorumAtRisk):
        run(go())
    assert node.seq.running is None


def test_reset_refused_when_it_would_destroy_unshipped_events(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config())
    refused = _refused(node, Reset(), InvalidRequest)
    assert refused["method"] == "reset" and refused["code"] == Code.INVALID_REQUEST.name
    assert "never shipped" in refused["reason"]
    [req] = events(node, Kind.API_REQUEST)
    assert req["args"] == {"wipe": ["STATE", "EPHEMERAL"], "graceful": False, "reboot": False, "force": False}


@pytest.mark.parametrize("cmd", [Reset(force=True), Reset(wipe=("STATE",))], ids=["forced", "keeps-ephemeral"])
def test_reset_accepted_when_forced_or_when_the_log_survives(make_node: Any, make_config: Any, cmd: Reset) -> None:
    node = make_node(cfg=make_config())
    accepted, request = run(_accept(node, cmd))
    assert accepted.sequence is SequenceName.RESET
    assert request == ResetRequest(graceful=False, reboot=False, wipe=cmd.wipe)
    assert node.service.reset == cmd


def test_a_graceful_reset_with_sinks_ships_first_and_is_accepted(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config(sinks=["/audit"]))
    _, request = run(_accept(node, Reset(graceful=True)))
    assert isinstance(request, ResetRequest) and request.graceful
    assert events(node, Kind.API_REFUSED) == []


def _env(other_good: bool) -> MemoryBootEnv:
    return MemoryBootEnv(BootEnv(default=Slot.A, fallback=Slot.B, a=SlotBoot(good=True), b=SlotBoot(good=other_good)))


def test_rollback_needs_a_good_other_slot(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config(), boot_env=_env(other_good=False))
    refused = _refused(node, Rollback(), NotFound)
    assert refused["code"] == Code.NOT_FOUND.name and "slot B holds no image that booted good" in refused["reason"]
    ok = make_node(cfg=make_config(), boot_env=_env(other_good=True))
    accepted, request = run(_accept(ok, Rollback()))
    assert accepted.sequence is SequenceName.ROLLBACK and request is None
    assert events(ok, Kind.API_REQUEST) == [{"method": "rollback", "args": {}}]


def test_rollback_of_a_boot_outside_the_slots_is_refused(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config(), slot=None, boot_env=_env(other_good=True))
    refused = _refused(node, Rollback(), NotFound)
    assert "runs no slot of the disk" in refused["reason"]


def test_a_refusal_by_the_sequencer_is_recorded_with_its_code(make_node: Any, make_config: Any) -> None:
    node = make_node(stage=Stage.MAINTENANCE, cfg=make_config())
    refused = _refused(node, Upgrade(source="v2.img"), TransitionRejected)
    assert refused["code"] == Code.TRANSITION_REJECTED.name and refused["method"] == "upgrade"


@pytest.mark.parametrize(("cmd", "args"), [(Reboot(), {}), (Reboot(force=True), {"force": True}),
                                           (Shutdown(), {}), (Shutdown(force=True), {"force": True})])
def test_reboot_and_shutdown_record_force_only_when_given(make_node: Any, make_config: Any, cmd: Any,
                                                          args: dict[str, Any]) -> None:
    node = make_node(cfg=make_config())
    accepted, request = run(_accept(node, cmd))
    assert accepted.sequence is cmd.sequence
    assert events(node, Kind.API_REQUEST) == [{"method": cmd.sequence.value, "args": args}]
    if isinstance(cmd, Reboot):
        assert request == RebootRequest()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wipe=st.lists(st.sampled_from(["STATE", "EPHEMERAL"]), unique=True, max_size=2), graceful=st.booleans(),
       force=st.booleans(), sinks=st.booleans())
def test_reset_is_refused_exactly_when_it_would_lose_unshipped_events(make_node: Any, make_config: Any,
                                                                      wipe: list[str], graceful: bool, force: bool,
                                                                      sinks: bool) -> None:
    node = make_node(cfg=make_config(sinks=["/audit"] if sinks else []))
    cmd = Reset(wipe=tuple(wipe) or ("STATE", "EPHEMERAL"), graceful=graceful, force=force)
    loses_log = "EPHEMERAL" in cmd.wipe and not force and not (graceful and sinks)

    async def go() -> None:
        await node.service.request(cmd, ADMIN)

    if loses_log:
        with pytest.raises(InvalidRequest):
            run(go())
        assert [e["code"] for e in events(node, Kind.API_REFUSED)] == [Code.INVALID_REQUEST.name]
    else:
        run(go())
        assert events(node, Kind.API_REFUSED) == []
    [req] = events(node, Kind.API_REQUEST)
    assert req["args"] == {"wipe": list(cmd.wipe), "graceful": graceful, "reboot": False, "force": force}
