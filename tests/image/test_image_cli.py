"""gravenctl image keygen|build|verify|inspect, in process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from image_fixtures import TAMPERS

from cli.main import main


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    assert main(["image", "keygen", "-o", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys"


def test_keygen(keydir: Path, capsys: pytest.CaptureFixture[str]):
    assert (keydir / "image-key.pem").stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in (keydir / "image-key.pub").read_bytes()
    assert main(["image", "keygen", "-o", str(keydir)]) == 1  # never overwrites a key
    assert "exists" in capsys.readouterr().err


def test_build_verify_inspect(keydir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    img = tmp_path / "v1.img"
    assert main(["image", "build", "--version", "1.2.3", "--key", str(keydir / "image-key.pem"), "-o", str(img),
                 "--created", "1700000000"]) == 0
    out = capsys.readouterr()
    assert "build: staging 1.2.3" in out.err and "build: wrote" in out.err  # progress on stderr
    assert "Graven 1.2.3" in out.out

    assert main(["image", "verify", str(img), "--trusted-key", str(keydir / "image-key.pub")]) == 0
    out = capsys.readouterr()
    assert "OK:" in out.out and "1.2.3" in out.out

    assert main(["image", "verify", str(img), "--trusted-key", str(keydir / "image-key.pub"), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is True and data["version"] == "1.2.3"

    assert main(["image", "inspect", str(img)]) == 0
    out = capsys.readouterr()
    assert "UNVERIFIED" in out.err and "1.2.3" in out.out
    assert main(["image", "inspect", str(img), "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is False and data["manifest"]["version"] == "1.2.3"


def test_verify_refusals_exit_1_with_the_reason(keydir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from image import load_signing_key

    img = tmp_path / "v1.img"
    assert main(["image", "build", "--version", "1.0.0", "--key", str(keydir / "image-key.pem"), "-o", str(img)]) == 0
    key = load_signing_key(keydir / "image-key.pem")
    pub = str(keydir / "image-key.pub")
    for name in ("payload-bitflip-middle", "truncated-half", "wrong-key", "unknown-trailer-format"):
        make, _, pattern = TAMPERS[name]
        bad = tmp_path / f"{name}.img"
        bad.write_bytes(make(img.read_bytes(), key, Ed25519PrivateKey.generate(), img.read_bytes()))
        capsys.readouterr()
        assert main(["image", "verify", str(bad), "--trusted-key", pub]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error [") and str(bad) in err
        assert re.search(pattern, err), err
    capsys.readouterr()
    assert main(["image", "verify", str(tmp_path / "truncated-half.img"), "--trusted-key", pub, "-o", "json"]) == 1
    assert json.loads(capsys.readouterr().err)["error"]["code"] == "BAD_IMAGE"


def test_bad_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "junk.pem").write_text("not a key")
    assert main(["image", "build", "--version", "1", "--key", str(tmp_path / "junk.pem"), "-o", "x.img"]) == 1
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert main(["image", "verify", "x.img", "--trusted-key", str(tmp_path / "missing.pub")]) == 1
    assert "cannot read trusted key" in capsys.readouterr().err
