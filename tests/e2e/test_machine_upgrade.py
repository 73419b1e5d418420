"""Upgrades through ``gravenctl upgrade``: v1 → v2 runs v2's code; a v3 that crashes, fails its health checks or
whose code is broken spends its three tries and the bootloader falls back; rollback needs a good other slot."""

from __future__ import annotations

from typing import Any

import pytest
from machinekit import Images, Machines, kinds, requires_block

import image

pytestmark = pytest.mark.timeout(180)


def _since_request(events: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """The events from the last ``api.request`` for ``method`` on."""
    start = max(i for i, e in enumerate(events) if e["kind"] == "api.request" and e["payload"]["method"] == method)
    return events[start:]


@pytest.mark.parametrize("disk", ["sandbox", pytest.param("block", marks=requires_block)])
def test_upgrade_v1_to_v2_with_wait_runs_v2(machines: Machines, images: Images, disk: str) -> None:
    m = machines.installed("upgrade", disk=disk)
    r = m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr + m.log()
    assert "phase 2/5 write" in r.stderr and "the node is up again on slot B, version v2" in r.stdout
    version = m.ctl_json("version")["server"]
    assert (version["version"], version["slot"]) == ("v2", "B")
    assert version["image_digest"] == image.inspect(images.v2).manifest.payload_sha256.hex()
    st = m.ctl_json("status")
    assert st["stage"] == "running" and st["ready"] and st["slot"] == "B" and st["last_fallback"] is None

    events = _since_request(m.events(), "upgrade")
    phases = [(e["payload"]["phase"], e["kind"]) for e in events
              if e["kind"].startswith("phase.") and e["payload"].get("sequence") == "upgrade"]
    assert [p for p, k in phases if k == "phase.started"] == ["verify", "write", "bootloader", "stop", "reboot"]
    assert all(k != "phase.failed" for _, k in phases)
    installed = next(e for e in events if e["kind"] == "image.installed")
    assert installed["payload"]["slot"] == "B" and installed["payload"]["version"] == "v2"
    seen = kinds(events)
    sealed = [i for i, e in enumerate(events) if e["kind"] == "log.checkpoint" and e["payload"]["sealed"]]
    selected = next(i for i, e in enumerate(events) if e["kind"] == "boot.selected")
    assert sealed and sealed[0] < selected  # the old boot sealed its log before the bootloader's next choice
    assert events[selected]["payload"]["slot"] == "B" and events[selected]["payload"]["good"] is False
    started = next(e for e in events if e["kind"] == "boot.started")
    assert started["payload"]["version"] == "v2" and started["boot_id"] != events[0]["boot_id"]
    assert seen.index("boot.started") < seen.index("boot.committed")
    if disk == "sandbox":
        env = m.meta()
        assert env.default.value == "B" and env.b.good and env.a.good and env.fallback is None
    assert m.audit_verify().returncode == 0


def _fell_back_from_a(m: Any, events: list[dict[str, Any]], exit_code: int | None, why: str) -> None:
    failed = [e for e in events if e["kind"] == "boot.failed"]
    assert len(failed) == 3, [e["payload"] for e in failed]
    assert all(e["payload"]["slot"] == "A" for e in failed)
    if exit_code is not None:
        assert all(e["payload"]["exit_code"] == exit_code for e in failed)
    tries = [e["payload"]["tries_left"] for e in events if e["kind"] == "boot.selected"
             and e["payload"]["slot"] == "A"]
    assert tries == [2, 1, 0]
    fallback = [e for e in events if e["kind"] == "boot.fallback"]
    assert len(fallback) == 1 and fallback[0]["actor"]["id"] == "bootloader"
    fb = fallback[0]["payload"]
    assert (fb["from_slot"], fb["to_slot"]) == ("A", "B")
    assert "ran out of boot tries" in fb["reason"] and why in fb["reason"]
    st = m.ctl_json("status")
    assert st["last_fallback"]["from_slot"] == "A" and st["last_fallback"]["to_slot"] == "B"
    assert why in st["last_fallback"]["reason"]
    r = m.ctl("status")  # the operator sees it in the table too
    assert "A->B" in r.stdout


def test_crashing_v3_falls_back_to_v2_after_three_tries(machines: Machines, images: Images) -> None:
    m = machines.installed("crash")
    assert m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=120).returncode == 0
    v3 = images.build("v3", fault="boot-crash")
    r = m.ctl("upgrade", "--image", str(v3), "--wait", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fell back from slot A to B" in r.stdout
    st = m.wait_running(version="v2", slot="B")
    assert st["last_fallback"] is not None
    events = _since_request(m.events(), "upgrade")
    _fell_back_from_a(m, events, 70, "code 70")
    env = m.meta()
    assert env.default.value == "B" and not env.a.good and env.a.tries_left == 0 and env.b.good

    # rollback to the slot that never booted good: refused at once, as an event, and nothing reboots
    r = m.ctl("rollback")
    assert r.returncode == 1 and "slot A holds no image that booted good" in r.stderr, r.stderr
    refused = m.events("api.refused")[-1]["payload"]
    assert refused["method"] == "rollback" and "slot A" in refused["reason"]
    assert m.ctl_json("status")["boot_id"] == st["boot_id"]
    assert m.audit_verify().returncode == 0


@pytest.mark.parametrize("broken", ["code", "health-fail"])
def test_broken_image_falls_back(machines: Machines, images: Images, broken: str) -> None:
    if broken == "code":  # a genuinely broken image: its agent's code does not even compile
        overlay = images.overlay("broken", {"usr/lib/graven/node/agent.py": "def run_agent(:\n"})
        bad = images.build("v2", overlay=overlay, name="v2-broken.img")
        exit_code, why = 1, "code 1"
    else:
        bad = images.build("v2", fault="health-fail")
        exit_code, why = 20, "code 20"
    m = machines.installed(f"broken-{broken}")
    r = m.ctl("upgrade", "--image", str(bad), "--wait", timeout=120)
    assert r.returncode == 1 and "fell back" in r.stdout, r.stdout + r.stderr
    m.wait_running(version="v1", slot="A")
    events = m.events()
    moved = [e for e in events if e["kind"] == "image.installed"][-1]
    assert moved["payload"]["slot"] == "B"
    after = _since_request(events, "upgrade")
    failed = [e for e in after if e["kind"] == "boot.failed"]
    assert all(e["payload"]["slot"] == "B" for e in failed) and len(failed) == 3
    assert all(e["payload"]["exit_code"] == exit_code for e in failed)
    fb = next(e for e in after if e["kind"] == "boot.fallback")["payload"]
    assert (fb["from_slot"], fb["to_slot"]) == ("B", "A") and why in fb["reason"]
    if broken == "health-fail":
        health = [e for e in after if e["kind"] == "task.failed" and e["payload"]["task"] == "wait_healthy"]
        assert len(health) == 3 and "health check failed" in health[0]["payload"]["error"]
    assert m.audit_verify().returncode == 0


def test_rollback_v2_to_v1_and_back(machines: Machines, images: Images) -> None:
    m = machines.installed("rollback")
    assert m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=120).returncode == 0
    r = m.ctl("rollback", "--wait", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    version = m.ctl_json("version")["server"]
    assert (version["version"], version["slot"]) == ("v1", "A")
    reverted = m.events("boot.reverted")[-1]["payload"]
    assert (reverted["from_slot"], reverted["to_slot"], reverted["version"]) == ("B", "A", "v1")
    assert m.ctl("rollback", "--wait", timeout=120).returncode == 0
    assert m.ctl_json("version")["server"]["version"] == "v2"


def test_rollback_refused_when_the_other_slot_is_empty(machines: Machines) -> None:
    m = machines.installed("rollback-empty")
    boot = m.ctl_json("status")["boot_id"]
    r = m.ctl("rollback", "--wait", timeout=60)
    assert r.returncode == 1
    assert "slot B holds no image that booted good; nothing to roll back to" in r.stderr
    assert m.ctl_json("status")["boot_id"] == boot
    assert m.events("api.refused")[-1]["payload"]["method"] == "rollback"


def test_rollback_refused_when_the_other_slots_image_is_damaged(machines: Machines, images: Images) -> None:
    m = machines.installed("rollback-bad")
    assert m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=120).returncode == 0
    boot = m.ctl_json("status")["boot_id"]
    slot_a = m.root / "disk" / "BOOT-A"  # booted good once, then damaged on disk
    with open(slot_a, "r+b") as f:
        f.seek(8192)
        byte = f.read(1)
        f.seek(8192)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = m.ctl("rollback", "--wait", timeout=60)
    assert r.returncode == 1
    assert "cannot roll back to slot A: its image does not verify" in r.stdout + r.stderr
    assert "payload digest mismatch" in r.stdout + r.stderr
    st = m.ctl_json("status")
    assert st["boot_id"] == boot and st["version"] == "v2" and st["ready"]
    assert m.meta().default.value == "B"
