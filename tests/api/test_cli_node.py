"""``gravenctl`` node commands in-process (``cli.main.main``) against a fake node over real mutual TLS:
outputs, error rows, ``--wait`` across a reboot, failures naming the task, timeouts, and fan-out."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from fakenode import ADMIN, Cluster, FakeNode, boot, run_sequence

from api import _clientconfig
from cli.main import main
from errors import Code
from events import Kind

REBOOT = [("stop", ["stop_services"]), ("seal", ["seal_log"]), ("reboot", ["request_reboot"])]
UPGRADE = [("verify", ["verify_image"]), ("write", ["write_inactive_slot"]), ("bootloader", ["arm_slot"]),
           ("stop", ["stop_services", "seal_log"]), ("reboot", ["request_reboot"])]


def ctl(cluster: Cluster, node: FakeNode | str, *argv: str) -> int:
    endpoint = node if isinstance(node, str) else node.endpoint
    return main(["--gravenconfig", str(cluster.config_path), "-e", endpoint, *argv])


def dead_endpoint(cluster: Cluster) -> str:
    node = FakeNode(cluster.secrets).start()
    node.stop()
    return node.endpoint


def test_version_json(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "version", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["server"]["version"] == "v1" and doc["server"]["slot"] == "A"
    assert doc["server"]["image_digest"] == "ab" * 32
    assert doc["client"]["version"] and doc["node"] == fake_node.endpoint
    assert ctl(cluster, fake_node, "version") == 0
    out = capsys.readouterr().out
    assert out.startswith("client: gravenctl ") and "NODE" in out and "v1" in out


def test_status_json(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    fake_node.status.sequence.name = "upgrade"
    fake_node.status.sequence.actor.id = "admin"
    fake_node.status.last_fallback.from_slot = "B"
    fake_node.status.last_fallback.to_slot = "A"
    fake_node.status.last_fallback.reason = "3 failed boots"
    assert ctl(cluster, fake_node, "status", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"stage", "ready", "slot", "version", "sequence", "last_fallback"} <= set(doc)
    assert doc["sequence"]["name"] == "upgrade"
    assert doc["last_fallback"]["slot"] == "B" and doc["last_fallback"]["reason"] == "3 failed boots"
    assert ctl(cluster, fake_node, "status") == 0
    assert "B->A: 3 failed boots" in capsys.readouterr().out


def test_locked_is_printed_with_its_code(cluster: Cluster, fake_node: FakeNode,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake_node.fail("Reboot", Code.LOCKED, "upgrade is running (started by admin[os:admin])", sequence="upgrade")
    assert ctl(cluster, fake_node, "reboot") == 1
    err = capsys.readouterr().err
    assert err.startswith("error [LOCKED]: upgrade is running (started by admin[os:admin])")
    assert "sequence=upgrade" in err


def test_fan_out_gives_an_error_row_for_an_unreachable_node(cluster: Cluster, fake_node: FakeNode,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    dead = dead_endpoint(cluster)
    start = time.monotonic()
    argv = ["--gravenconfig", str(cluster.config_path), "-n", f"{fake_node.endpoint},{dead}", "version"]
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["NODE", "VERSION"] and out[-1].split()[-1] != "ERROR"
    rows = {line.split()[0]: line for line in out[2:]}
    assert "v1" in rows[fake_node.endpoint]
    assert "[UNAVAILABLE]" in rows[dead]
    assert main([*argv, "-o", "json"]) == 1
    items = {i["node"]: i for i in json.loads(capsys.readouterr().out)}
    assert items[fake_node.endpoint]["server"]["version"] == "v1"
    assert items[dead]["error"]["code"] == "UNAVAILABLE"
    assert time.monotonic() - start < 10


def test_single_unreachable_node_is_an_error(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    dead = dead_endpoint(cluster)
    assert ctl(cluster, dead, "status") == 1
    assert capsys.readouterr().err.startswith(f"error [UNAVAILABLE]: node {dead} is not reachable")


def _reboot_script(node: FakeNode, seq: int) -> None:
    time.sleep(0.2)  # let the answer go out first
    run_sequence(node, "reboot", REBOOT, seq)
    node.log.seal("reboot")
    node.restart(down_for=0.5, during=lambda: boot(node, "A", "v1"))


def test_reboot_wait_follows_across_the_reboot(cluster: Cluster, fake_node: FakeNode,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_node.scripts["Reboot"] = _reboot_script
    assert ctl(cluster, fake_node, "reboot", "--wait", "--timeout", "30s", "-o", "json") == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["ok"] is True and doc["sequence"] == "reboot" and "up again on slot A" in doc["message"]
    assert "phase 2/3 seal" in out.err and "task request_reboot" in out.err
    assert "node booting: slot A" in out.err and "done: " in out.err


def test_upgrade_wait_reports_the_fallback(tmp_path: Path, cluster: Cluster, fake_node: FakeNode,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def script(node: FakeNode, seq: int) -> None:
        time.sleep(0.2)
        node.log.append(Kind.IMAGE_INSTALLED, {"slot": "B", "version": "v2", "digest": "cd" * 32, "key_id": "k"})
        run_sequence(node, "upgrade", UPGRADE, seq)
        node.log.seal("upgrade")
        node.restart(during=lambda: boot(node, "B", "v2", fail_task="wait_healthy"))
        node.restart(during=lambda: boot(node, "B", "v2", fail_task="wait_healthy"))

        def fallback() -> None:
            node.log.append(Kind.BOOT_FALLBACK, {"from_slot": "B", "to_slot": "A", "reason": "slot B used its tries"},
                            ADMIN)
            boot(node, "A", "v1")

        node.restart(during=fallback)

    fake_node.scripts["Upgrade"] = script
    image = tmp_path / "v2.img"
    image.write_bytes(b"i" * 3000)
    assert ctl(cluster, fake_node, "upgrade", "--image", str(image), "--wait", "--timeout", "30s") == 1
    out = capsys.readouterr()
    assert "upload 0.0/0.0 MiB (100%)" in out.err
    assert "image v2 written to slot B" in out.err
    assert out.err.count("boot failed in phase ready, task wait_healthy") == 2
    assert "FAILED: the bootloader fell back from slot B to A: slot B used its tries" in out.err
    assert "FAILED" in out.out and "fell back" in out.out


def test_wait_names_the_failed_task(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    fake_node.scripts["Upgrade"] = lambda node, seq: run_sequence(node, "upgrade", UPGRADE, seq,
                                                                  fail_task="verify_image")
    assert ctl(cluster, fake_node, "upgrade", "-i", "https://x.invalid/v2.img", "--wait", "-o", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["failed_task"] == "verify/verify_image"
    assert doc["message"] == "upgrade failed in phase verify, task verify_image: BAD_IMAGE: it broke"


def test_wait_never_hangs_past_the_timeout(cluster: Cluster, fake_node: FakeNode,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert ctl(cluster, fake_node, "rollback", "--wait", "--timeout", "1s") == 1
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "FAILED: no outcome within 1s; last seen: waiting for the sequence to start" in err


def test_wait_gives_up_on_a_node_that_stays_down(cluster: Cluster, fake_node: FakeNode,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def script(node: FakeNode, seq: int) -> None:
        time.sleep(0.2)
        run_sequence(node, "reboot", REBOOT, seq)
        node.stop()

    fake_node.scripts["Reboot"] = script
    start = time.monotonic()
    assert ctl(cluster, fake_node, "reboot", "--wait", "--timeout", "2s") == 1
    assert time.monotonic() - start < 6
    err = capsys.readouterr().err
    assert "lost the node" in err and "FAILED" in err


def test_shutdown_wait_ends_when_the_node_goes_away(cluster: Cluster, fake_node: FakeNode,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def script(node: FakeNode, seq: int) -> None:
        time.sleep(0.2)
        run_sequence(node, "shutdown", [("stop", ["stop_services"]), ("seal", ["seal_log"]),
                                        ("poweroff", ["request_power_off"])], seq)
        time.sleep(0.2)
        node.stop()

    fake_node.scripts["Shutdown"] = script
    assert ctl(cluster, fake_node, "shutdown", "--wait", "--timeout", "20s") == 0
    out = capsys.readouterr()
    assert "the node powered off" in out.out


def test_lifecycle_without_wait_prints_the_request(cluster: Cluster, fake_node: FakeNode,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "reset", "--wipe", "state", "--reboot", "--no-graceful", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sequence"] == "reset" and doc["actor"] == "admin" and doc["seq"] >= 1
    req = fake_node.reset_requests[-1]
    assert (list(req.wipe), req.graceful, req.reboot, req.force) == (["STATE"], False, True, False)
    assert ctl(cluster, fake_node, "reset", "--wipe", "BOOT-A") == 1
    assert "labels must be among STATE, EPHEMERAL" in capsys.readouterr().err


def test_apply_config(cluster: Cluster, fake_node: FakeNode, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(cluster.dir / "controlplane.yaml")
    assert ctl(cluster, fake_node, "apply-config", "-f", cfg, "--dry-run") == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].split() == ["OP", "PATH", "OLD", "NEW"]
    assert "machine.network.hostname" in out.out and "nothing applied" in out.err
    assert fake_node.applied[-1].dry_run

    assert ctl(cluster, fake_node, "apply-config", "-f", cfg, "--mode", "try", "--try-timeout", "2m",
               "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "try" and doc["seq"] > 0 and doc["diff"][0]["op"] == "replace"
    assert fake_node.applied[-1].try_timeout_seconds == 120

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1alpha1\nmachine:\n  type: toaster\n")
    n = len(fake_node.applied)
    assert ctl(cluster, fake_node, "apply-config", "-f", str(bad)) == 1
    err = capsys.readouterr().err
    assert "machine.type" in err and "invalid" in err
    assert len(fake_node.applied) == n  # refused locally, never sent


def test_apply_config_insecure_in_maintenance(cluster: Cluster, maintenance_node: FakeNode, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GRAVENCONFIG", str(tmp_path / "none"))  # no client config at all
    cfg = str(cluster.dir / "controlplane.yaml")
    assert main(["-e", maintenance_node.endpoint, "apply-config", "--insecure", "-f", cfg]) == 0
    out = capsys.readouterr()
    assert "server certificate SHA-256" in out.err
    assert "no-reboot" in out.out
    assert main(["-e", maintenance_node.endpoint, "apply-config", "-f", cfg]) == 1
    assert "no client config" in capsys.readouterr().err


def test_get_config(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(cluster, fake_node, "get", "config") == 0
    out = capsys.readouterr()
    assert out.out == "version: v1alpha1\n" and "redacted" in out.err
    assert ctl(cluster, fake_node, "get", "config", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["config"] == {"version": "v1alpha1"}


def test_events(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(6):
        fake_node.log.append(Kind.CONFIG_APPLIED if i % 2 else Kind.TASK_STARTED, {"i": i}, ADMIN)
    assert ctl(cluster, fake_node, "events", "--kind", "config.*") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SEQ", "TIME", "KIND", "ACTOR"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "4", "6"]
    assert ctl(cluster, fake_node, "events", "--tail", "2", "-o", "json") == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["seq"] for d in docs] == [5, 6] and docs[0]["node"] == fake_node.endpoint

    fake_node.scripts["Reboot"] = _reboot_script
    start = time.monotonic()
    assert ctl(cluster, fake_node, "reboot", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["seq"] == 7
    assert ctl(cluster, fake_node, "events", "-f", "--since", "7", "--timeout", "3s", "-o", "json") == 0
    assert time.monotonic() - start < 10
    seqs = [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()]
    assert seqs == list(range(7, fake_node.log.next_seq()))  # across the restart, each seq once


def test_config_new(cluster: Cluster, fake_node: FakeNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reader"
    assert ctl(cluster, fake_node, "config", "new", str(out), "--roles", "os:reader", "--crt-ttl", "24h") == 0
    assert "roles os:reader" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    name, ctx = _clientconfig.load(out).current()
    assert name == "test" and ctx.roles() == ["os:reader"] and ctx.endpoints == ["127.0.0.1"]
    cert = ctx.certificate()
    assert cert is not None
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 24 * 3600
    assert ctl(cluster, fake_node, "config", "new", str(out)) == 1
    assert "exists; not overwriting" in capsys.readouterr().err
    assert ctl(cluster, fake_node, "config", "new", str(out), "--roles", "os:root", "--force") == 1


def test_audit_against_a_node(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):
        fake_node.log.append(Kind.CONFIG_APPLIED, {"i": i, "digest": f"d{i}"}, ADMIN)
    fake_node.log.seal("shutdown")
    assert ctl(cluster, fake_node, "audit", "verify", "--ca", str(cluster.dir / "ca.crt"), "-o", "json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["verdict"] == "ok" and "fetched the audit bundle" in out.err
    assert ctl(cluster, fake_node, "audit", "show", "--kind", "config.*") == 0
    assert capsys.readouterr().out.count("config.applied") == 4
    assert ctl(cluster, fake_node, "audit", "replay", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["sealed"] is True
    assert ctl(cluster, fake_node, "audit", "prove", "--from-size", "3", "-o", "json") == 0
    proof = json.loads(capsys.readouterr().out)
    assert (proof["from_size"], proof["to_size"]) == (3, 5) and proof["to_note"] and proof["proof"]


def test_trace_against_a_node(cluster: Cluster, fake_node: FakeNode, capsys: pytest.CaptureFixture[str]) -> None:
    boot(fake_node, "A", "v1")
    fake_node.log.seal("reboot")
    fake_node.log.boot_id = "boot-1"
    boot(fake_node, "B", "v2", fail_task="wait_healthy")
    assert ctl(cluster, fake_node, "trace", "boots", "-o", "json") == 0
    boots = json.loads(capsys.readouterr().out)
    assert [(b["slot"], b["version"]) for b in boots] == [("A", "v1"), ("B", "v2")]
    assert ctl(cluster, fake_node, "trace", "boot", "--boot", "0") == 0
    assert "wait_healthy" in capsys.readouterr().out
