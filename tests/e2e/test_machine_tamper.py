"""Every tampered image (``tests/image/image_fixtures.TAMPERS``) is refused through ``gravenctl upgrade``, with
its reason, before the request is accepted,
and nothing is written: the inactive slot, its record and META stay as they were, nothing reboots."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest
from machinekit import Images, Machines

from image import load_signing_key
from image._keys import generate_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image"))
from image_fixtures import TAMPERS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_every_tampered_image_is_refused_and_nothing_is_written(machines: Machines, images: Images,
                                                                 tmp_path: Path) -> None:
    m = machines.installed("tamper")
    assert m.ctl("upgrade", "--image", str(images.v2), "--wait", timeout=120).returncode == 0
    # v2 runs from B; slot A (inactive) holds v1: the target of every upgrade below
    slot_a = m.root / "disk" / "BOOT-A"
    before = (_digest(slot_a), m.meta())
    boot = m.ctl_json("status")["boot_id"]
    key = load_signing_key(m.secrets.image_key)
    other = generate_key()
    data, other_image = images.v1.read_bytes(), images.v2.read_bytes()
    failures = []
    for name, (make, _error, pattern) in TAMPERS.items():
        bad = tmp_path / f"{name}.img"
        bad.write_bytes(make(data, key, other, other_image))
        r = m.ctl("upgrade", "--image", str(bad), "--wait", "--timeout", "60s", timeout=90)
        out = r.stdout + r.stderr
        expected = "needs an image" if name == "empty-file" else pattern
        if r.returncode != 1 or not re.search(expected, out):
            failures.append(f"{name}: exit {r.returncode}, wanted /{expected}/: {out[-400:]}")
    assert not failures, "\n".join(failures)
    assert (_digest(slot_a), m.meta()) == before, "a refused image changed slot A or META"
    st = m.ctl_json("status")
    assert st["boot_id"] == boot and st["version"] == "v2" and st["ready"]
    # verified before the request is accepted: each refusal is a signed api.refused, no upgrade sequence starts
    refused = [e for e in m.events("api.refused") if e["payload"]["method"] == "upgrade"]
    assert len(refused) == len(TAMPERS) - 1  # the empty upload is refused before it reaches the node
    assert {e["payload"]["code"] for e in refused} <= {"BAD_IMAGE", "UNTRUSTED_KEY"}
    assert len([e for e in m.events("sequence.started") if e["payload"]["sequence"] == "upgrade"]) == 1
    spool = m.root / "disk" / "EPHEMERAL" / "spool"
    assert not list(spool.glob("upgrade-*")), "a refused upload stays in the spool"
    assert not [e for e in m.events("image.installed") if e["payload"]["slot"] == "A" and
                e["payload"]["version"] != "v1"]
