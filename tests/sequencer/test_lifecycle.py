"""The real sequences on the in-memory ports: take-overs mid-task, failures that leave the node where it was,
configs applied durably and staged for the next boot."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from seqkit import run

import config
from boot import BootEnv, Slot, SlotBoot
from errors import BadImage, InvalidConfig, NotFound, StorageError
from events import Actor, Event, Kind, MemoryEventLog, replay, verify_items
from fsm import Stage
from sequencer import (
    InstallRequest,
    RebootRequest,
    SequenceName,
    ShutdownRequest,
    UpgradeRequest,
    apply_config,
    bring_up,
    task,
)
from sequencer.memory import MemoryBootEnv, MemoryDisk, MemoryIdentity, MemoryImage, MemoryServices, MemorySlots
from sequencer.ports import RunningImage

S = SequenceName
ADMIN = Actor("alice", ("os:admin",))


def installed(cfg: Any) -> dict[str, Any]:
    return {"disk": MemoryDisk(partitioned=True, files={("STATE", "config.yaml"): config.dump_yaml(cfg).encode()}),
            "identity": MemoryIdentity("k1")}


def test_reboot_takes_over_a_boot_stuck_in_its_health_checks(make_node: Any, make_config: Any, pki: Any) -> None:
    node = make_node(services=MemoryServices(unhealthy={"api"}), **installed(make_config()))

    async def go() -> Any:
        up = asyncio.create_task(bring_up(node.seq, boot_id="b1"))
        while not any(e.kind == Kind.TASK_STARTED and e.payload["task"] == "wait_healthy" for e in node.log.read()):
            await asyncio.sleep(0.005)
        reboot = await node.seq.run(S.REBOOT, RebootRequest(), actor=ADMIN)
        return await up, reboot

    boot, reboot = run(go())
    assert boot.sequence is S.BOOT and boot.outcome == "cancelled"
    assert reboot.ok and node.ports.power.actions == ["reboot"]
    assert node.ports.services.running == []  # stopped by the reboot, in reverse order
    assert [n for op, n in node.ports.services.log if op == "stop"] == ["health", "api"]
    evs = list(node.log.read())
    waited = next(e for e in evs if e.kind == Kind.TASK_STOPPED and e.payload["task"] == "wait_healthy")
    assert waited.payload["outcome"] == "cancelled"
    stopped = next(e for e in evs if e.kind == Kind.SEQUENCE_STOPPED and e.payload["sequence"] == "boot")
    assert stopped.payload["cancelled_by"] == f"taken over by reboot ({ADMIN})"
    assert node.fsm.stage is Stage.REBOOTING == Stage(replay(evs).stage)
    assert not any(e.kind == Kind.BOOT_COMMITTED for e in evs)
    assert verify_items(node.log.read_raw(), pki.ca).sealed


def test_a_task_that_ignores_its_token_is_cut_off_after_the_takeover_timeout(make_node: Any) -> None:
    from dataclasses import replace

    from sequencer import SEQUENCES, Phase

    @task(timeout=30)
    async def stubborn(ctx: Any) -> None:
        await asyncio.sleep(30)

    node = make_node(stage=Stage.RUNNING, takeover_timeout=0.05)
    table = dict(SEQUENCES)
    table[S.UPGRADE] = replace(SEQUENCES[S.UPGRADE], phases=(Phase("write", (stubborn,)),))
    node.seq.sequences = table

    async def go() -> Any:
        old = node.seq.request(S.UPGRADE, UpgradeRequest("v2.img"))
        await asyncio.sleep(0.01)
        new = node.seq.request(S.SHUTDOWN, ShutdownRequest(force=True))
        return await asyncio.wait_for(asyncio.gather(old.wait(), new.wait()), 5)

    old, new = run(go())
    assert old.outcome == "cancelled" and new.ok
    assert node.fsm.stage is Stage.STOPPED and node.ports.power.actions == ["power_off"]


def test_a_bad_image_fails_the_upgrade_at_verify_and_the_node_keeps_running(make_node: Any, make_config: Any) -> None:
    node = make_node(stage=Stage.RUNNING, cfg=make_config())
    node.ports.images.bad.add("v2.img")
    result = run(node.seq.run(S.UPGRADE, UpgradeRequest("v2.img"), actor=ADMIN))
    assert (result.outcome, result.phase, result.task) == ("failed", "verify", "verify_image")
    assert isinstance(result.error, BadImage)
    assert node.fsm.stage is Stage.RUNNING and node.ports.disk.slots == {} and node.ports.boot_env.state is None
    assert node.ports.power.actions == []
    assert replay(node.log.read()).stage == "running"


def test_a_failed_write_leaves_the_target_out_of_service_and_the_node_running(make_node: Any,
                                                                             make_config: Any) -> None:
    """The upgrade's write goes through the one install protocol: the inactive slot leaves service in META before
    the write, so a write that fails leaves it unbootable (and the agent's view of META says so)."""
    meta = MemoryBootEnv(BootEnv(seq=4, default=Slot.A, a=SlotBoot(0, True), b=SlotBoot(0, True)))
    disk = MemoryDisk(partitioned=True)
    node = make_node(stage=Stage.RUNNING, cfg=make_config(), boot_env=meta, disk=disk,
                     slots=MemorySlots(disk, meta, fail_write=True))
    node.seq.runtime.image = node.ports.images.running()
    result = run(node.seq.run(S.UPGRADE, UpgradeRequest("v2.img"), actor=ADMIN))
    assert (result.outcome, result.phase, result.task) == ("failed", "write", "write_inactive_slot")
    assert isinstance(result.error, StorageError)
    assert meta.state is not None and meta.state.default is Slot.A and meta.state.b == SlotBoot(0, False)
    assert node.seq.runtime.boot_env == meta.state and disk.slots == {}
    assert not [e for e in node.log.read() if e.kind == Kind.IMAGE_INSTALLED]
    assert node.fsm.stage is Stage.RUNNING and node.ports.power.actions == []


def test_an_upgrade_writes_the_slot_that_does_not_run_then_arms_it(make_node: Any, make_config: Any) -> None:
    meta = MemoryBootEnv(BootEnv(seq=4, default=Slot.B, b=SlotBoot(0, True)))
    node = make_node(stage=Stage.RUNNING, cfg=make_config(), boot_env=meta)
    node.seq.runtime.image = node.ports.images.current = RunningImage("B", "v1", MemoryImage.of("v1").digest)
    assert run(node.seq.run(S.STAGE_UPGRADE, UpgradeRequest("v2.img"), actor=ADMIN)).ok
    assert node.ports.disk.slots == {"A": MemoryImage.of("v2")}
    stored = [(e.default, e.a) for e in meta.history]
    assert stored == [(Slot.B, SlotBoot(0, False)), (Slot.A, SlotBoot(3, False))]  # out of service, then armed
    installed_ev = [e.payload for e in node.log.read() if e.kind == Kind.IMAGE_INSTALLED]
    assert installed_ev == [{"slot": "A", "version": "v2", "digest": MemoryImage.of("v2").digest,
                             "key_id": "test-key"}]


def test_rollback_needs_a_good_other_slot(make_node: Any, make_config: Any) -> None:
    node = make_node(stage=Stage.RUNNING, cfg=make_config())
    node.seq.runtime.image = node.ports.images.running()
    node.ports.boot_env.state = BootEnv(default=Slot.A, a=SlotBoot(0, True))
    result = run(node.seq.run(S.ROLLBACK))
    assert result.outcome == "failed" and isinstance(result.error, NotFound) and result.phase == "bootloader"
    assert node.fsm.stage is Stage.RUNNING and node.ports.power.actions == []
    node.ports.boot_env.state = BootEnv(default=Slot.A, a=SlotBoot(0, True), b=SlotBoot(0, True))
    result = run(node.seq.run(S.ROLLBACK))  # good once, but its image is gone: refused
    assert result.outcome == "failed" and isinstance(result.error, NotFound)
    assert "does not verify" in result.error.message
    node.ports.disk.slots["B"] = MemoryImage.of("v0")
    assert run(node.seq.run(S.ROLLBACK)).ok
    assert node.ports.boot_env.state.default == "B" and node.ports.power.actions == ["reboot"]


def test_a_staged_config_takes_effect_at_the_next_boot(make_node: Any, make_config: Any) -> None:
    old, new = make_config(hostname="old"), make_config(hostname="new")
    node = make_node(**installed(old))

    async def stage_it() -> None:
        plan = config.plan_apply(old, old, None, new, "staged")
        node.seq.runtime.config = node.seq.runtime.persisted = old
        event = await apply_config(node.seq, plan, actor=ADMIN)
        assert event is not None and event.kind == Kind.CONFIG_STAGED

    run(stage_it())
    assert ("STATE", "staged.yaml") in node.ports.disk.files
    nxt = make_node(log=node.log, disk=node.ports.disk, identity=node.ports.identity)
    assert run(bring_up(nxt.seq, boot_id="b2")).ok
    assert nxt.seq.runtime.config == new and nxt.ports.network.hostname == "new"
    assert ("STATE", "staged.yaml") not in nxt.ports.disk.files
    assert config.load(nxt.ports.disk.files[("STATE", "config.yaml")]) == new
    applied = [e for e in nxt.log.read() if e.kind == Kind.CONFIG_APPLIED]
    assert applied[-1].payload["mode"] == "staged" and applied[-1].payload["digest"] == config.digest(new)
    assert replay(nxt.log.read()).config_digest == config.digest(new)


def test_a_live_config_change_is_acknowledged_only_once_durable_and_reconfigures_the_network(
        make_node: Any, make_config: Any, pki: Any) -> None:
    class SlowLog(MemoryEventLog):
        held: list[tuple[Future[Event], Event]]

        def submit(self, kind: str, payload: Any, actor: Any = None) -> Future[Event]:
            event = super().submit(kind, payload, actor or Actor("node")).result()
            fut: Future[Event] = Future()
            if kind == Kind.CONFIG_APPLIED:
                threading.Timer(0.05, fut.set_result, (event,)).start()
            else:
                fut.set_result(event)
            return fut

    old, new = make_config(hostname="old"), make_config(hostname="new")
    node = make_node(stage=Stage.RUNNING, cfg=old, log=SlowLog(pki.signer, pki.cert_der))

    async def go() -> None:
        plan = config.plan_apply(old, old, None, new, "no-reboot")
        task = asyncio.create_task(apply_config(node.seq, plan, actor=ADMIN))
        await asyncio.sleep(0.02)
        assert not task.done(), "acknowledged before the event was durable"
        assert node.seq.runtime.config == old
        event = await task
        assert event is not None and event.actor == ADMIN

    run(go())
    assert node.seq.runtime.config == new and node.ports.network.hostname == "new"
    assert config.load(node.ports.disk.files[("STATE", "config.yaml")]) == new


@pytest.mark.parametrize("force", [False, True])
def test_shutdown_seals_last_and_powers_off_after(make_node: Any, make_config: Any, pki: Any, force: bool) -> None:
    node = make_node(**installed(make_config()))
    run(bring_up(node.seq, boot_id="b1"))
    result = run(node.seq.run(S.SHUTDOWN, ShutdownRequest(force=force)))
    assert result.ok and node.ports.power.actions == ["power_off"]
    evs = list(node.log.read())
    assert evs[-1].kind == Kind.CHECKPOINT and evs[-1].payload["sealed"]
    assert evs[-1].payload["reason"] == "shutdown: final"
    stop = next(e for e in evs if e.kind in (Kind.PHASE_STARTED, Kind.PHASE_SKIPPED) and e.payload["phase"] == "stop"
                and e.payload["sequence"] == "shutdown")
    assert stop.kind == (Kind.PHASE_SKIPPED if force else Kind.PHASE_STARTED)
    report = verify_items(node.log.read_raw(), pki.ca)
    assert report.sealed and report.uncovered_tail == 0
    assert replay(evs).stage == "stopped" and replay(evs).boots[-1].outcome == "shutdown"


def test_a_config_that_does_not_load_sends_the_node_to_maintenance(make_node: Any) -> None:
    disk = MemoryDisk(partitioned=True, files={("STATE", "config.yaml"): b"version: v1alpha1\nmachine: {typo: 1}\n"})
    node = make_node(disk=disk, identity=MemoryIdentity("k1"))
    assert run(node.seq.run(S.INITIALIZE)).ok
    assert node.fsm.stage is Stage.MAINTENANCE
    failed = next(e.payload for e in node.log.read() if e.kind == Kind.TASK_FAILED)
    assert failed["task"] == "load_config" and failed["fatal"] is False and failed["code"] == "INVALID_CONFIG"
    assert "typo" in failed["error"]


@pytest.mark.parametrize(("named", "ok"), [("/dev/vdb", True), ("/dev/vda", False)])
def test_install_writes_only_to_the_disk_the_config_names(make_node: Any, make_config: Any, named: str,
                                                          ok: bool) -> None:
    cfg = make_config(install_disk=named)
    block = MemoryDisk(kind="block", makes_filesystems=True, device="/dev/vdb")
    node = make_node(stage=Stage.MAINTENANCE, cfg=cfg, disk=block, identity=MemoryIdentity())
    result = run(node.seq.run(S.INSTALL, InstallRequest(), actor=ADMIN))
    assert result.ok is ok
    disk = node.ports.disk
    assert isinstance(disk, MemoryDisk)
    assert disk.partitioned is ok and bool(disk.slots) is ok  # refused: nothing written at all
    if not ok:
        assert isinstance(result.error, InvalidConfig)
        assert result.error.details["errors"] == [
            {"path": "machine.install.disk", "line": None,
             "message": "names /dev/vda, but this machine's disk is /dev/vdb: nothing was written to either"}]
        assert node.fsm.stage is Stage.MAINTENANCE  # install aborted back to maintenance; apply a fixed config
        failed = next(e for e in node.log.read() if e.kind == Kind.TASK_FAILED)
        assert (failed.payload["task"], failed.payload["code"]) == ("partition_disk", "INVALID_CONFIG")
