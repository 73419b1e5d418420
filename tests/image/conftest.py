"""Image fixtures: real Ed25519 keys and real images built with mksquashfs (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from image_fixtures import CREATED, Images, Keys

from boot import BootEnv, Slot, choose_slot, mark_good
from image import build_image, install, plan_install, verify
from storage import SandboxDisk

SLOT = 4 << 20


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def images(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Images:
    d = tmp_path_factory.mktemp("images")
    overlay = d / "overlay"
    (overlay / "usr/lib/graven").mkdir(parents=True)
    (overlay / "usr/lib/graven/graven_probe.py").write_text('WHO = "v2"\n')
    build_image("1.0.0", keys.signing, d / "v1.img", created=CREATED, code_only=True)
    build_image("2.0.0", keys.signing, d / "v2.img", overlay=overlay, created=CREATED, code_only=True)
    return Images(d / "v1.img", d / "v2.img")


@pytest.fixture
def running_v1(images: Images, keys: Keys, tmp_path: Path) -> SandboxDisk:
    """A sandbox machine that installed v1 into slot A and booted it good."""
    disk = SandboxDisk(tmp_path / "machine", slot_size=SLOT, mount_strategy="unpack")
    disk.partition()
    disk.format()
    install(disk, plan_install(None, verify(images.v1, keys.trusted)))
    choice = choose_slot(disk.read_boot_env() or BootEnv())
    disk.write_boot_env(choice.env)
    disk.write_boot_env(mark_good(choice.env, Slot.A)[0])
    return disk
