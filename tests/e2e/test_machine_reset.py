"""Reset: refused while it would destroy events no sink has; forced, back to maintenance and reinstallable; with an
audit sink, the sealed log is shipped there and verified before EPHEMERAL is wiped."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from machinekit import Machines, gravenctl, kinds

pytestmark = pytest.mark.timeout(180)


def test_reset_that_would_destroy_unshipped_events_is_refused(machines: Machines) -> None:
    m = machines.installed("refuse")
    boot = m.ctl_json("status")["boot_id"]
    for extra in ([], ["--no-graceful"], ["--reboot"]):
        r = m.ctl("reset", *extra)
        assert r.returncode == 1, r.stdout
        assert "destroy events that were never shipped" in r.stderr and "--force" in r.stderr
    refused = [e for e in m.events("api.refused") if e["payload"]["method"] == "reset"]
    assert len(refused) == 3 and all(e["actor"]["id"] == "admin" for e in refused)
    st = m.ctl_json("status")
    assert st["boot_id"] == boot and st["ready"]
    assert (m.root / "disk" / "STATE" / "config.yaml").exists()
    assert m.audit_verify().returncode == 0


def test_forced_reset_returns_to_maintenance_and_the_node_can_be_configured_again(machines: Machines) -> None:
    m = machines.installed("reset")
    r = m.ctl("reset", "--force", "--reboot", "--wait", "--timeout", "60", "-o", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    done = json.loads(r.stdout)
    done = done[0] if isinstance(done, list) else done
    assert done["ok"] and done["message"] == "the node is up again in maintenance (apply a config to configure it " \
        "again): slot A, version v1", done  # --wait follows the reset through the reboot, as far as maintenance
    st = m.wait_maintenance(5)
    assert st["slot"] == "A" and st["version"] == "v1"  # the install stays; only STATE and EPHEMERAL are gone
    assert list((m.root / "disk" / "STATE").iterdir()) == []
    assert not (m.root / "disk" / "EPHEMERAL" / "log").exists()

    m.apply(m.config(install_image=m.boot_from))
    m.wait_running(version="v1", slot="A")
    events = m.events()
    seen = kinds(events)
    wiped = next(e for e in events if e["kind"] == "disk.wiped")
    assert wiped["payload"]["labels"] == ["EPHEMERAL"] and wiped["actor"]["id"] == "bootloader"
    skipped = {e["payload"]["phase"] for e in events
               if e["kind"] == "phase.skipped" and e["payload"]["sequence"] == "install"}
    assert skipped == {"disk", "format", "image", "bootloader"}  # an installed disk: only STATE is rewritten
    assert "api.refused" not in seen  # a new log: nothing of the old one is left
    assert m.audit_verify().returncode == 0


def test_reset_without_reboot_powers_the_machine_off_after_the_wipe(machines: Machines) -> None:
    m = machines.installed("poweroff")
    assert m.ctl("reset", "--force").returncode == 0
    assert m.proc is not None and m.proc.wait(30) == 0
    assert not (m.root / "disk" / "EPHEMERAL" / "log").exists()
    assert "wiped EPHEMERAL" in m.log()


def _bundles(sink: Path) -> list[Path]:
    return sorted(sink.glob("*.tar"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def test_reset_with_a_sink_ships_the_sealed_log_verifies_it_then_wipes(machines: Machines, tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    m = machines.installed("sink", sinks=[str(sink)])
    last_seq = m.ctl_json("status")["log_next_seq"]
    r = m.ctl("reset", "--reboot")  # graceful by default
    assert r.returncode == 0, r.stderr
    m.wait_maintenance()
    bundles = _bundles(sink)
    assert len(bundles) == 2, bundles  # the ship phase's copy, then the final one of the sealed log
    final = bundles[-1]
    r = gravenctl("audit", "verify", str(final), "--ca", str(m.secrets.ca_crt), "-o", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    with tarfile.open(final) as tar:
        names = tar.getnames()
    assert names, "empty bundle"
    r = gravenctl("audit", "show", str(final), "-o", "json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    rows = shown if isinstance(shown, list) else shown.get("events", [])
    shipped_kinds = [row["kind"] for row in rows]
    assert shipped_kinds[-1] == "log.checkpoint"  # the bundle ends with the final sealed checkpoint
    assert "audit.shipped" in shipped_kinds and len(rows) > last_seq
    wipe = [row for row in rows if row["kind"] == "phase.started" and row["payload"].get("phase") == "wipe"]
    assert wipe, "the reset's wipe phase is in the shipped log"

    m.apply(m.config(install_image=m.boot_from, sinks=[str(sink)]))
    m.wait_running(version="v1", slot="A")
    events = m.events()
    wiped = next(e for e in events if e["kind"] == "disk.wiped")["payload"]
    assert wiped["shipped"] == [str(sink)] and wiped["log_to_seq"] == len(rows) - 1
    shipped = [e for e in events if e["kind"] == "audit.shipped"]
    assert shipped and shipped[0]["payload"]["file"] == final.name
