"""A config change interrupted by a crash leaves the config and its event both there or both absent."""

from __future__ import annotations

from typing import Any

from seqkit import run

import config
from events import Actor, Kind
from fsm import Stage
from sequencer import SequenceName, apply_config
from sequencer.memory import MemoryDisk, MemoryIdentity

ADMIN = Actor("alice", ("os:admin",))
CONFIG, PENDING = ("STATE", "config.yaml"), ("STATE", "config.yaml.pending")


def booted(make_node: Any, cfg: Any, files: dict[tuple[str, str], bytes], log: Any = None) -> Any:
    disk = MemoryDisk(partitioned=True, files=files)
    kw = {"log": log} if log is not None else {}
    node = make_node(disk=disk, identity=MemoryIdentity("k1"), **kw)
    result = run(node.seq.run(SequenceName.INITIALIZE))
    assert result.ok, result
    return node


def test_apply_writes_pending_then_event_then_config(make_node: Any, make_config: Any, monkeypatch: Any) -> None:
    old, new = make_config(), make_config(hostname="renamed")
    node = make_node(stage=Stage.RUNNING, cfg=old, disk=MemoryDisk(
        partitioned=True, files={CONFIG: config.dump_yaml(old).encode()}))
    seen: list[tuple[bool, bool]] = []
    record = node.seq.record

    async def spy(kind: str, payload: Any, actor: Any = ADMIN) -> Any:
        files = node.ports.disk.files
        seen.append((PENDING in files, files[CONFIG] == config.dump_yaml(new).encode()))
        return await record(kind, payload, actor)

    monkeypatch.setattr(node.seq, "record", spy)
    plan = config.plan_apply(old, old, None, new, "no-reboot")
    run(apply_config(node.seq, plan, actor=ADMIN))
    assert seen == [(True, False)], "when the event is written, the new config is pending, not yet in place"
    assert node.ports.disk.files[CONFIG] == config.dump_yaml(new).encode() and PENDING not in node.ports.disk.files


def test_a_pending_config_whose_event_is_durable_is_kept(make_node: Any, make_config: Any) -> None:
    old, new = make_config(), make_config(hostname="renamed")
    first = make_node(stage=Stage.RUNNING, cfg=old)
    first.log.append(Kind.CONFIG_APPLIED, {"digest": config.digest(new), "mode": "no-reboot"}, ADMIN)
    node = booted(make_node, old, {CONFIG: config.dump_yaml(old).encode(),
                                   PENDING: config.dump_yaml(new).encode()}, log=first.log)
    assert node.seq.runtime.config == new
    assert node.ports.disk.files[CONFIG] == config.dump_yaml(new).encode() and PENDING not in node.ports.disk.files


def test_a_pending_config_without_its_event_is_dropped(make_node: Any, make_config: Any) -> None:
    old, new = make_config(), make_config(hostname="renamed")
    node = booted(make_node, old, {CONFIG: config.dump_yaml(old).encode(), PENDING: config.dump_yaml(new).encode()})
    assert node.seq.runtime.config == old
    assert PENDING not in node.ports.disk.files
    assert not any(e.kind == Kind.CONFIG_APPLIED for e in node.log.read())
