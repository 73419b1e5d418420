"""Done when: the core runs every sequence end to end against the in-memory ports, across six boots of one
machine; every event lands in a log (in memory and in a real LMDB log), the log verifies with nothing but the
CA, live state equals the replayed state, and every boot's trace renders in all four formats."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from seqkit import Pki

import config
from boot import choose_slot
from events import Actor, Event, EventLog, Kind, MemoryEventLog, replay, verify_items
from fsm import NodeFSM, Stage
from sequencer import (
    Ports,
    RebootRequest,
    ResetRequest,
    SequenceName,
    Sequencer,
    ShutdownRequest,
    UpgradeRequest,
    apply_config,
    bring_up,
)
from sequencer.memory import (
    MemoryBootEnv,
    MemoryDisk,
    MemoryIdentity,
    MemoryImage,
    MemoryImages,
    MemoryNetwork,
    MemoryServices,
    MemorySinks,
    memory_ports,
)
from sequencer.ports import RunningImage
from sequencer.trace import list_boots, render_chrome, render_json, render_svg, render_table, trace_boot

ADMIN = Actor("alice", ("os:admin",))
S = SequenceName


class Machine:
    """The in-memory machine: a disk and META that survive reboots, and a supervisor that picks the slot."""

    def __init__(self, open_log: Callable[[str], EventLog]) -> None:
        self.open_log = open_log
        self.disk = MemoryDisk()
        self.meta = MemoryBootEnv()
        self.images = MemoryImages(catalog={f"v{i}.img": MemoryImage.of(f"v{i}") for i in (1, 2, 3)})
        self.identity = MemoryIdentity()
        self.sinks = MemorySinks()
        self.power: list[str] = []
        self.boots = 0
        self.log: EventLog | None = None

    def power_on(self) -> Sequencer:
        state = self.meta.state
        if state is not None and state.default is not None:  # the supervisor: pick, count tries, measure
            choice = choose_slot(state)  # the bootloader's own rule
            self.meta.state = choice.env
            assert choice.slot is not None
            image = self.disk.slots[choice.slot.value]
            self.images.current = RunningImage(choice.slot.value, image.version, image.payload_sha256.hex())
        if self.log is not None and hasattr(self.log, "close"):
            self.log.close()
        self.log = self.open_log(f"boot-{self.boots}")
        self.boots += 1
        machine = self

        class Power:
            def reboot(self) -> None:
                machine.power.append("reboot")

            def power_off(self) -> None:
                machine.power.append("power_off")

        ports: Ports = memory_ports(disk=self.disk, boot_env=self.meta, images=self.images, power=Power(),
                                    identity=self.identity, sinks=self.sinks, services=MemoryServices(),
                                    network=MemoryNetwork())
        return Sequencer(self.log, NodeFSM(self.log), ports)


def _check(seq: Sequencer) -> None:
    state = replay(seq.log.read())
    assert state.stage == seq.fsm.stage.value
    assert state.sequence is None


async def life(machine: Machine, cfg: config.MachineConfig) -> list[str]:
    """Six boots that run all nine sequences; returns the stage after each step."""
    seen: list[str] = []

    # boot 0: blank disk, no config: maintenance until a config arrives, then install and reboot
    seq = machine.power_on()
    up = asyncio.create_task(bring_up(seq, boot_id="boot-0"))
    while seq.fsm.stage is not Stage.MAINTENANCE:
        await asyncio.sleep(0.001)
    await apply_config(seq, config.plan_apply(None, None, None, cfg, "auto"), actor=ADMIN)
    result = await up
    assert (result.sequence, result.outcome) == (S.INSTALL, "ok"), result
    _check(seq)
    seen.append(seq.fsm.stage.value)

    # boot 1: slot A, v1: boot, then upgrade to v2
    seq = machine.power_on()
    assert (await bring_up(seq, boot_id="boot-1")).sequence is S.BOOT
    assert seq.fsm.stage is Stage.RUNNING
    assert (await seq.run(S.UPGRADE, UpgradeRequest("v2.img"), actor=ADMIN)).ok
    _check(seq)
    seen.append(seq.fsm.stage.value)

    # boot 2: slot B, v2 on trial; commit it, then roll back to A
    seq = machine.power_on()
    assert seq.ports.images.running().slot == "B"
    assert (await bring_up(seq, boot_id="boot-2")).ok
    assert machine.meta.state is not None and machine.meta.state.b.good
    assert (await seq.run(S.ROLLBACK, actor=ADMIN)).ok
    _check(seq)
    seen.append(seq.fsm.stage.value)

    # boot 3: back on A; stage v3 for the next boot, then an explicit reboot
    seq = machine.power_on()
    assert seq.ports.images.running().version == "v1"
    assert (await bring_up(seq, boot_id="boot-3")).ok
    assert (await seq.run(S.STAGE_UPGRADE, UpgradeRequest("v3.img"), actor=ADMIN)).ok
    assert seq.fsm.stage is Stage.RUNNING
    assert (await seq.run(S.REBOOT, RebootRequest(), actor=ADMIN)).ok
    _check(seq)
    seen.append(seq.fsm.stage.value)

    # boot 4: B, v3; reset STATE, gracefully (the log goes to the audit sinks first), and reboot
    seq = machine.power_on()
    assert seq.ports.images.running().version == "v3"
    assert (await bring_up(seq, boot_id="boot-4")).ok
    assert (await seq.run(S.RESET, ResetRequest(graceful=True, reboot=True, wipe=("STATE",)), actor=ADMIN)).ok
    assert seq.ports.sinks.shipped  # type: ignore[attr-defined]
    _check(seq)
    seen.append(seq.fsm.stage.value)

    # boot 5: STATE is empty: maintenance; then shut down
    seq = machine.power_on()
    up = asyncio.create_task(bring_up(seq, boot_id="boot-5"))
    while seq.fsm.stage is not Stage.MAINTENANCE:
        await asyncio.sleep(0.001)
    assert (await seq.run(S.SHUTDOWN, ShutdownRequest(), actor=ADMIN)).ok
    await asyncio.wait_for(up, 1)
    _check(seq)
    seen.append(seq.fsm.stage.value)
    return seen


def memory_logs(pki: Pki) -> Iterator[Callable[[str], EventLog]]:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/node1", boot_id="boot-0", checkpoint_every=50)

    def open_log(boot_id: str) -> EventLog:
        log.boot_id = boot_id
        return log

    yield open_log


def lmdb_logs(pki: Pki, path: Path) -> Iterator[Callable[[str], EventLog]]:
    from storage import LmdbEventLog

    opened: list[Any] = []

    def open_log(boot_id: str) -> EventLog:
        log = LmdbEventLog(path, pki.signer, boot_id=boot_id, origin="graven/node1", cert_der=pki.cert_der,
                           checkpoint_every=50)
        opened.append(log)
        return log

    yield open_log
    for log in opened:
        log.close()


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
def test_every_sequence_end_to_end(backend: str, pki: Pki, make_config: Any, tmp_path: Path) -> None:
    logs = memory_logs(pki) if backend == "memory" else lmdb_logs(pki, tmp_path / "log")
    open_log = next(logs)
    machine = Machine(open_log)
    cfg = make_config(sinks=("file:///var/audit",))
    stages = asyncio.run(life(machine, cfg))
    assert stages == ["rebooting", "rebooting", "rebooting", "rebooting", "rebooting", "stopped"]
    assert machine.power == ["reboot"] * 5 + ["power_off"]
    assert machine.log is not None
    raw = list(machine.log.read_raw())  # type: ignore[attr-defined]
    events: list[Event] = list(machine.log.read())

    # every sequence ran, and ended ok
    outcomes = {(e.payload["sequence"], e.payload["outcome"]) for e in events if e.kind == Kind.SEQUENCE_STOPPED}
    assert {name for name, outcome in outcomes if outcome == "ok"} == {s.value for s in SequenceName}
    assert not [e for e in events if e.kind in (Kind.SEQUENCE_FAILED, Kind.TASK_FAILED)]

    # the whole history verifies with the CA alone, and ends sealed
    report = verify_items(raw, pki.ca)
    assert report.events == len(events) and report.sealed and report.uncovered_tail == 0
    assert events[-1].kind == Kind.CHECKPOINT and events[-1].payload["sealed"]

    # the fold agrees with what happened
    state = replay(events)
    assert state.stage == "stopped"
    assert [b.outcome for b in state.boots] == ["rebooted"] * 5 + ["shutdown"]
    assert [(b.slot, b.version) for b in state.boots][1:5] == [("A", "v1"), ("B", "v2"), ("A", "v1"), ("B", "v3")]

    # tracing: every boot is listed and renders in all four formats
    boots = list_boots(events)
    assert [b.boot_id for b in boots] == [f"boot-{i}" for i in range(6)]
    assert [b.outcome for b in boots] == ["rebooted"] * 5 + ["shutdown"]
    assert boots[1].sequences == ("initialize", "boot", "upgrade")
    for i in range(6):
        trace = trace_boot(events, index=i)
        assert trace.spans and trace.total_ns > 0
        text = render_table(trace)
        assert "initialize" in text and "load_config" in text
        doc = json.loads(json.dumps(render_json(trace)))
        assert len(doc["spans"]) == len(trace.spans)
        chrome = json.loads(json.dumps(render_chrome(trace)))
        complete = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
        assert len(complete) == len(trace.spans)
        assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in complete)
        svg = ET.fromstring(render_svg(trace))
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(svg.findall(".//{http://www.w3.org/2000/svg}g")) == len(trace.spans)
