"""An empty disk, the installer image, maintenance, apply-config, install, and Running from slot A; and the
agent runs the image's code, never the checkout's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from machinekit import PY, REPO, Images, Machines, kinds, requires_block

import image

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("disk", ["sandbox", pytest.param("block", marks=requires_block)])
def test_empty_disk_to_running_from_slot_a(machines: Machines, images: Images, disk: str) -> None:
    m = machines.new("install", disk=disk, boot_from=images.v1).start()
    st = m.wait_maintenance()
    assert st["slot"] in ("", None) and st["version"] == "v1"  # the installer's code runs, from no slot
    # machine.install.image: a path (sandbox) or a file:// URL (block)
    m.apply(m.config(install_image=images.v1 if disk == "sandbox" else images.v1.as_uri()))
    st = m.wait_running(version="v1", slot="A")
    assert st["last_fallback"] is None

    version = m.ctl_json("version")
    v1 = image.inspect(images.v1)
    assert version["server"]["version"] == "v1" and version["server"]["slot"] == "A"
    assert version["server"]["image_digest"] == v1.manifest.payload_sha256.hex()

    events = m.events()
    seen = kinds(events)
    # the installer boot (bootloader's choice), the install sequence, the reboot into A and its commit
    selected = [e for e in events if e["kind"] == "boot.selected"]
    assert selected[0]["payload"]["slot"] is None and "installer" in selected[0]["payload"]["reason"]
    assert selected[-1]["payload"]["slot"] == "A" and selected[-1]["actor"]["id"] == "bootloader"
    install = [e["payload"]["phase"] for e in events
               if e["kind"] == "phase.started" and e["payload"]["sequence"] == "install"]
    expected = ["disk", "format", "image", "state", "bootloader", "reboot"] if disk == "block" else \
        ["disk", "image", "state", "bootloader", "reboot"]
    assert install == expected
    assert {"image.installed", "boot.committed", "log.checkpoint"} <= set(seen)
    assert seen.index("image.installed") < seen.index("boot.committed")

    r = m.audit_verify()
    assert r.returncode == 0, r.stdout + r.stderr
    assert m.stop() == 0  # SIGTERM: the agent shuts down gracefully and the machine powers off
    if disk == "block":
        from provision._destroy import _loops_below, _mounts_below

        assert _mounts_below(m.root) == [] and _loops_below(m.root) == []


@requires_block
def test_a_config_naming_another_disk_is_refused_and_nothing_is_written(machines: Machines, images: Images) -> None:
    m = machines.new("otherdisk", disk="block", boot_from=images.v1).start()
    m.wait_maintenance()
    good = m.config(install_image=images.v1.as_uri())
    wrong = m.root / "wrong.yaml"
    wrong.write_text(good.read_text().replace(f"disk: {m.device}", "disk: /dev/sdz"))
    assert wrong.read_text() != good.read_text()
    r = m.ctl("apply-config", "-f", str(wrong), insecure=True)
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stderr.splitlines() if line.startswith("error"))
    assert row.split()[2] == "machine.install.disk", r.stderr  # LEVEL LINE PATH MESSAGE
    assert f"names /dev/sdz, but this machine's disk is {m.device}" in row and "nothing was written" in row
    assert m.wait_maintenance()["stage"] == "maintenance"
    assert subprocess.run(["sfdisk", "--dump", str(m.device)], capture_output=True).returncode != 0  # no table
    m.apply(good)  # nothing was kept of the refused config: the right one installs as on a fresh machine
    m.wait_running(version="v1", slot="A")


def test_machine_without_installer_on_empty_disk_says_why(machines: Machines) -> None:
    m = machines.new("noinstaller")
    r = subprocess.run(m.command(), capture_output=True, text=True, timeout=60, env={**os.environ,
                       "PYTHONPATH": str(REPO)})
    assert r.returncode != 0
    assert "--boot-from" in r.stderr


def test_the_agent_runs_the_images_code_not_the_checkouts(machines: Machines, images: Images) -> None:
    """An image whose code differs behaves differently: here it names the node differently."""
    source = (REPO / "service" / "_app.py").read_text()  # node_name, which the node's version reports
    patched = source.replace('return cfg.machine.network.hostname or cfg.cluster.name or "graven"',
                             'return (cfg.machine.network.hostname or cfg.cluster.name or "graven") + "-from-image"')
    assert patched != source
    overlay = images.overlay("identity", {"usr/lib/graven/service/_app.py": patched})
    img = images.build("v1", overlay=overlay, name="v1-identity.img")
    m = machines.new("code", boot_from=img).start()
    m.wait_maintenance()
    m.apply(m.config(install_image=img))
    m.wait_running(version="v1", slot="A")
    assert m.ctl_json("version")["server"]["node"] == f"{m.root.name}-from-image"
    # the checkout's code would say the version is "dev": the stamp exists only in the image's copy
    r = subprocess.run([PY, "-c", "import image; print(image.running_version())"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    assert r.stdout.strip() == "dev"


def test_an_editable_install_cannot_put_the_checkout_first(tmp_path: Path) -> None:
    """The agent's interpreter skips site (-S): a .pth naming the checkout, or an editable finder, is never
    processed; the image's code comes first and the dependencies after it."""
    from node._supervisor import agent_env

    code = tmp_path / "image-code"
    (code / "node").mkdir(parents=True)
    (code / "node" / "__init__.py").write_text("WHERE = 'image'\n")
    (code / "events").mkdir()
    (code / "events" / "__init__.py").write_text("WHERE = 'image'\n")
    fake_site = tmp_path / "site-packages"
    fake_site.mkdir()
    (fake_site / "__editable__.graven-0.1.0.pth").write_text(
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n")  # what a .pth could do if it were processed
    env = agent_env(code, tmp_path / "boot.json", base={"PATH": os.environ.get("PATH", "")})
    env["PYTHONPATH"] += os.pathsep + str(fake_site)
    probe = ("import json, sys, node, events, grpc; print(json.dumps({'node': node.__file__, "
             "'events': events.__file__, 'grpc': grpc.__file__, 'path': sys.path}))")
    r = subprocess.run([PY, "-S", "-P", "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["node"].startswith(str(code)) and out["events"].startswith(str(code))
    assert str(REPO) not in out["path"] and "" not in out["path"]
