"""Image fixtures: real Ed25519 keys and real images built with mksquashfs (once per session)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from image_fixtures import CREATED, Images, Keys

from image import build_image


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def images(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Images:
    d = tmp_path_factory.mktemp("images")
    overlay = d / "overlay"
    (overlay / "usr/lib/graven").mkdir(parents=True)
    (overlay / "usr/lib/graven/graven_probe.py").write_text('WHO = "v2"\n')
    build_image("1.0.0", keys.signing, d / "v1.img", created=CREATED)
    build_image("2.0.0", keys.signing, d / "v2.img", overlay=overlay, created=CREATED)
    return Images(d / "v1.img", d / "v2.img")
