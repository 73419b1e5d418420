"""The service's config commands in memory: plan, two-phase persist, try, confirm and revert, and status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import pytest
from servicekit import FakeNetwork, Node

import config
from config import ApplyMode
from errors import InvalidConfig, NotFound, Unavailable
from events import Actor, Kind
from fsm import Stage
from sequencer import SequenceName
from sequencer.memory import MemoryDisk
from service import ApplyConfig, Upgrade

T = TypeVar("T")
ADMIN = Actor("alice", ("os:admin",))
CONFIG, PENDING = ("STATE", "config.yaml"), ("STATE", "config.yaml.pending")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


SETUP = {"log.genesis", "log.checkpoint", "fsm.transition"}  # what making the node in a stage wrote


def kinds(node: Node) -> list[str]:
    return [e.kind for e in node.log.read() if e.kind not in SETUP]


def apply(new: config.MachineConfig, mode: ApplyMode = ApplyMode.NO_REBOOT, **kw: Any) -> ApplyConfig:
    return ApplyConfig(data=config.dump_yaml(new).encode(), mode=mode, **kw)


def running(make_node: Any, old: config.MachineConfig) -> Node:
    node: Node = make_node(cfg=old, disk=MemoryDisk(partitioned=True, files={CONFIG: config.dump_yaml(old).encode()}))
    return node


def test_a_dry_run_plans_and_records_nothing(make_node: Any, make_config: Any) -> None:
    node = running(make_node, make_config())
    out = run(node.service.apply_config(apply(make_config(hostname="renamed"), dry_run=True), ADMIN))
    assert out.seq == 0 and [c.path for c in out.changes] == ["machine.network.hostname"]
    assert kinds(node) == [] and node.host.changed == 0


def test_apply_persists_two_phase_records_and_tells_the_host(make_node: Any, make_config: Any) -> None:
    old, new = make_config(), make_config(hostname="renamed")
    node = running(make_node, old)
    out = run(node.service.apply_config(apply(new), ADMIN))
    assert out.mode is ApplyMode.NO_REBOOT and out.digest == config.digest(new) and not out.reboot_required
    applied = [e for e in node.log.read() if e.kind == Kind.CONFIG_APPLIED]
    assert [e.seq for e in applied] == [out.seq]
    assert node.ports.disk.files[CONFIG] == config.dump_yaml(new).encode() and PENDING not in node.ports.disk.files
    assert node.seq.runtime.config == new and node.host.changed == 1


def test_a_change_that_needs_a_reboot_reboots_a_running_node(make_node: Any, make_config: Any) -> None:
    node = running(make_node, make_config())

    async def go() -> SequenceName | None:
        out = await node.service.apply_config(apply(make_config(install_disk="/dev/vdb"), ApplyMode.AUTO), ADMIN)
        assert out.reboot_required and out.mode is ApplyMode.AUTO
        return node.seq.running.name if node.seq.running else None

    assert run(go()) is SequenceName.REBOOT


def test_try_then_the_same_config_again_confirms_it(make_node: Any, make_config: Any) -> None:
    old, new = make_config(), make_config(hostname="tried")
    node = running(make_node, old)

    async def go() -> Any:
        tried = await node.service.apply_config(apply(new, ApplyMode.TRY, try_timeout=30), ADMIN)
        assert node.service.trying(tried.digest)
        assert node.ports.disk.files[CONFIG] == config.dump_yaml(old).encode(), "a try is not persisted"
        return await node.service.apply_config(apply(new, ApplyMode.NO_REBOOT), ADMIN)

    out = run(go())
    assert out.warnings == ("confirmed the config on trial: it is kept and persisted",) and out.changes == ()
    assert kinds(node) == [Kind.CONFIG_APPLIED, Kind.CONFIG_CONFIRMED]
    assert out.seq == next(e.seq for e in node.log.read() if e.kind == Kind.CONFIG_CONFIRMED)
    assert node.ports.disk.files[CONFIG] == config.dump_yaml(new).encode() and PENDING not in node.ports.disk.files
    assert node.seq.runtime.persisted == new and not node.service.trying(out.digest)


def test_a_try_not_confirmed_reverts_after_its_timeout(make_node: Any, make_config: Any) -> None:
    old, new = make_config(), make_config(hostname="tried")
    node = running(make_node, old)

    async def go() -> None:
        await node.service.apply_config(apply(new, ApplyMode.TRY, try_timeout=0.05), ADMIN)
        for _ in range(200):
            if node.seq.runtime.config == old:
                break
            await asyncio.sleep(0.01)

    run(go())
    assert node.seq.runtime.config == old
    [reverted] = [dict(e.payload) for e in node.log.read() if e.kind == Kind.CONFIG_REVERTED]
    assert reverted == {"digest": config.digest(old), "reason": "try timed out", "tried": config.digest(new)}


def test_in_maintenance_a_wrong_install_disk_is_refused_before_anything_is_recorded(make_node: Any,
                                                                                   make_config: Any) -> None:
    node = make_node(stage=Stage.MAINTENANCE, disk=MemoryDisk(device="/dev/vda"))
    with pytest.raises(InvalidConfig):
        run(node.service.apply_config(apply(make_config(install_disk="/dev/sdz"), ApplyMode.AUTO), ADMIN))
    assert kinds(node) == []
    assert node.seq.runtime.config is None


def test_a_sandbox_node_with_nothing_to_install_adopts_its_folders(make_node: Any, make_config: Any) -> None:
    cfg = make_config()
    cfg = msgspec.structs.replace(cfg, machine=msgspec.structs.replace(cfg.machine, install=None))
    node = make_node(stage=Stage.MAINTENANCE, durable=False)
    run(node.service.apply_config(apply(cfg, ApplyMode.AUTO), ADMIN))
    assert node.host.adopted == ["lab"] and node.seq.runtime.config == cfg
    durable = make_node(stage=Stage.MAINTENANCE, durable=True)
    run(durable.service.apply_config(apply(cfg, ApplyMode.AUTO), ADMIN))
    assert durable.host.adopted == [], "a node whose log is on disk has its identity already"


def test_config_text_redacts_and_needs_a_config(make_node: Any, make_config: Any) -> None:
    with pytest.raises(NotFound):
        make_node(stage=Stage.MAINTENANCE).service.config_text(redact=True)
    cfg = make_config()
    node = make_node(cfg=cfg)
    shown, digest = node.service.config_text(redact=True)
    full, _ = node.service.config_text(redact=False)
    assert digest == config.digest(cfg) and full == config.dump_yaml(cfg).encode() and shown != full


def test_status_is_one_typed_record(make_node: Any, make_config: Any) -> None:
    node = make_node(cfg=make_config(hostname="n7"))
    st = node.service.status()
    assert (st.stage, st.ready, st.slot, st.version, st.boot_id, st.node) == ("running", False, "A", "v1", "boot-1",
                                                                              "n7")
    assert st.sequence is None and st.last_fallback is None and st.log_next_seq == node.log.next_seq()
    assert st.details.drift == [] and st.details.network_platform == "netns" and st.details.durable_log

    async def during() -> Any:
        await node.service.request(Upgrade(source="v2.img"), ADMIN)
        return node.service.status()

    busy = run(during())
    assert busy.sequence is not None and busy.sequence.name is SequenceName.UPGRADE
    assert busy.sequence.actor == str(ADMIN)


def test_status_reports_a_drift_it_cannot_read(make_node: Any, make_config: Any) -> None:
    class Broken(FakeNetwork):
        def drift(self, cfg: config.MachineConfig) -> list[dict[str, object]] | None:
            raise Unavailable("netlink: no answer")

    node = make_node(cfg=make_config())
    node.service.network = Broken()
    details = node.service.status().details
    assert details.drift is None and details.drift_error == "netlink: no answer"


def test_boot_trace_renders_this_boot_from_the_log(make_node: Any, make_config: Any) -> None:
    from sequencer import record_boot

    node = make_node(stage=Stage.BOOTING, cfg=make_config())

    async def boot() -> None:
        await record_boot(node.seq, "boot-1")
        assert (await node.seq.run(SequenceName.INITIALIZE)).ok

    run(boot())
    trace = json.loads(node.service.boot_trace(-1, "", "json"))
    assert trace["total_ns"] > 0 and "initialize" in json.dumps(trace["critical_path"])
    assert node.service.boot_trace(-1, trace["boot"]["boot_id"], "svg").lstrip().startswith(b"<")
    with pytest.raises(NotFound):
        node.service.boot_trace(-1, "no-such-boot", "json")
