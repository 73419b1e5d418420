"""What the disk tests share: a signed image to install in a slot."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from image import build_image
from pki import public_raw


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A code-only image ``v1.img`` (1.0.0) and the raw public key that signed it."""
    d = tmp_path_factory.mktemp("images")
    key = Ed25519PrivateKey.generate()
    build_image("1.0.0", key, d / "v1.img", created=1_700_000_000, code_only=True)
    return d / "v1.img", public_raw(key.public_key())
