"""build_image(): reproducible squashfs of os-release and the stamped code, then manifest, signature, trailer."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from image_fixtures import CREATED, Images, Keys, Parts

import image
from errors import InvalidRequest, StorageError
from image import build_image, running_version, verify

PROJECT = Path(image.__file__).resolve().parent.parent


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpack(img: Path, dest: Path) -> Path:
    subprocess.run(["unsquashfs", "-n", "-q", "-no-xattrs", "-d", str(dest), str(img)], check=True,
                   capture_output=True)
    return dest


def run_image_code(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with only the image's copy of the packages importable (isolated from the checkout)."""
    boot = f"import sys; sys.path.insert(0, {str(root / 'usr/lib/graven')!r}); sys.path.remove({str(PROJECT)!r}) " \
           f"if {str(PROJECT)!r} in sys.path else None\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-I", "-c", boot + code], capture_output=True, text=True, env=env,
                          cwd=root, timeout=60)


def test_reproducible(keys: Keys, tmp_path: Path):
    a = build_image("1.0.0", keys.signing, tmp_path / "a.img", created=CREATED)
    b = build_image("1.0.0", keys.signing, tmp_path / "b.img", created=CREATED)
    assert a == b
    assert sha(tmp_path / "a.img") == sha(tmp_path / "b.img")  # Ed25519 is deterministic: whole file equal
    # another creation time changes the manifest only; the payload stays byte for byte the same
    build_image("1.0.0", keys.signing, tmp_path / "c.img", created=CREATED + 1)
    pa, pc = Parts.of((tmp_path / "a.img").read_bytes()), Parts.of((tmp_path / "c.img").read_bytes())
    assert pa.payload == pc.payload and pa.manifest != pc.manifest


def test_source_date_epoch_default(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert build_image("1.0.0", keys.signing, tmp_path / "a.img", code_only=True).created == 1234567890


def test_contents(images: Images, keys: Keys, tmp_path: Path):
    root = unpack(images.v1, tmp_path / "root")
    osr = (root / "etc/os-release").read_text()
    assert "NAME=\"Graven\"" in osr and "VERSION_ID=1.0.0" in osr and "ID=graven" in osr
    code = root / "usr/lib/graven"
    for pkg in ("events", "storage", "image", "api"):
        assert (code / pkg / "__init__.py").is_file(), pkg
    # bytecode for every module, hash-based (no timestamps), unchecked (the image is read-only and verified),
    # compiled from the image's own sources
    sources = sorted(code.rglob("*.py"))
    tag = sys.implementation.cache_tag
    assert sorted(p.parent.parent / f"{p.name.split('.')[0]}.py" for p in code.rglob("*.pyc")) == sources
    for src in sources[:20]:
        pyc = (src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc").read_bytes()
        assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, not checked at import
        assert pyc[8:16] == importlib.util.source_hash(src.read_bytes())
        assert str(root).encode() not in pyc  # recorded as on the node: /usr/lib/graven/...
    assert (code / "graven_build.json").read_text() == '{"fault": null, "format": 1, "version": "1.0.0"}\n'
    assert not (root / "usr/lib/graven/graven_probe.py").exists()
    listing = subprocess.run(["unsquashfs", "-lln", str(images.v1)], capture_output=True, text=True).stdout
    owners = {line.split()[1] for line in listing.splitlines() if line[:1] in "-dl" and len(line.split()) > 1}
    assert owners == {"0/0"}  # -all-root


def test_the_version_comes_from_the_images_own_code(images: Images, tmp_path: Path):
    assert running_version() == "dev"  # the checkout is unstamped
    for img, want in ((images.v1, "1.0.0"), (images.v2, "2.0.0")):
        root = unpack(img, tmp_path / want)
        r = run_image_code(root, "import image; print(image.running_version(), image.fault_point(), image.__file__)")
        assert r.returncode == 0, r.stderr
        version, fault, where = r.stdout.split()
        assert (version, fault) == (want, "None")
        assert where.startswith(str(root)), "the checkout's code ran instead of the image's"


def test_an_image_whose_code_differs_behaves_differently(images: Images, tmp_path: Path):
    v1 = unpack(images.v1, tmp_path / "v1")
    v2 = unpack(images.v2, tmp_path / "v2")
    probe = "import graven_probe; print(graven_probe.WHO)"
    assert run_image_code(v2, probe).stdout.strip() == "v2"
    assert "ModuleNotFoundError" in run_image_code(v1, probe).stderr


@pytest.mark.parametrize("fault", ["boot-crash", "health-fail"])
def test_fault_marker(fault: str, keys: Keys, tmp_path: Path):
    build_image("3.0.0", keys.signing, tmp_path / "f.img", fault=fault, created=CREATED, code_only=True)
    root = unpack(tmp_path / "f.img", tmp_path / "root")
    r = run_image_code(root, "import image; print(image.fault_point())")
    assert r.stdout.strip() == fault
    assert verify(tmp_path / "f.img", keys.trusted).version == "3.0.0"  # a fault image is still a signed image


def test_broken_code_overlay_still_builds_and_verifies(keys: Keys, tmp_path: Path):
    """A genuinely broken image: its agent code does not even import. Signing does not judge code."""
    overlay = tmp_path / "overlay/usr/lib/graven/image"
    overlay.mkdir(parents=True)
    (overlay / "__init__.py").write_text("this is not python(\n")
    build_image("9.9.9", keys.signing, tmp_path / "broken.img", overlay=tmp_path / "overlay", created=CREATED,
                code_only=True)
    assert verify(tmp_path / "broken.img", keys.trusted).version == "9.9.9"
    root = unpack(tmp_path / "broken.img", tmp_path / "root")
    assert "SyntaxError" in run_image_code(root, "import image").stderr


def test_overlay_wins_and_modes_are_normalised(keys: Keys, tmp_path: Path):
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/os-release").write_text("NAME=Custom\n")
    (overlay / "bin").mkdir()
    tool = overlay / "bin/tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o700)
    (overlay / "etc/secret").write_text("x")
    (overlay / "etc/secret").chmod(0o600)
    build_image("1.0.0", keys.signing, tmp_path / "o.img", overlay=overlay, created=CREATED, code_only=True)
    listing = subprocess.run(["unsquashfs", "-lln", str(tmp_path / "o.img")], capture_output=True, text=True).stdout
    modes = {line.split()[-1].removeprefix("squashfs-root"): line.split()[0] for line in listing.splitlines() if line}
    assert modes["/bin/tool"] == "-rwxr-xr-x" and modes["/etc/secret"] == "-rw-r--r--"
    assert modes["/etc"] == "drwxr-xr-x" and modes[""] == "drwxr-xr-x"
    root = unpack(tmp_path / "o.img", tmp_path / "root")
    assert (root / "etc/os-release").read_text() == "NAME=Custom\n"


def test_source_root_takes_only_known_packages(keys: Keys, tmp_path: Path):
    src = tmp_path / "src"
    (src / "node").mkdir(parents=True)
    (src / "node/__init__.py").write_text("X = 1\n")
    (src / "node/__pycache__").mkdir()
    (src / "node/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (src / "tests").mkdir()
    (src / "tests/test_x.py").write_text("")
    build_image("1.0.0", keys.signing, tmp_path / "s.img", source_root=src, created=CREATED, code_only=True)
    root = unpack(tmp_path / "s.img", tmp_path / "root")
    names = sorted(p.name for p in (root / "usr/lib/graven").iterdir())
    assert names == ["graven_build.json", "node"]
    assert sorted(p.name for p in (root / "usr/lib/graven/node").iterdir()) == ["__init__.py", "__pycache__"]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"version": "bad version"}, "bad image version"),
        ({"version": ""}, "bad image version"),
        ({"fault": "explode"}, "unknown fault"),
        ({"overlay": "/nonexistent/overlay"}, "is not a directory"),
        ({"compression": "brotli"}, "unknown compression"),
    ],
)
def test_bad_build_requests(kwargs: dict[str, str], pattern: str, keys: Keys, tmp_path: Path):
    args = {"version": "1.0.0", **kwargs}
    version = args.pop("version")
    with pytest.raises(InvalidRequest, match=pattern):
        build_image(version, keys.signing, tmp_path / "x.img", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "x.img").exists()


def test_missing_mksquashfs_is_a_clear_error(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StorageError, match=r"mksquashfs is not installed .*Debian package squashfs-tools"):
        build_image("1.0.0", keys.signing, tmp_path / "x.img", created=CREATED)
    assert not (tmp_path / "x.img").exists() and not list(tmp_path.glob(".graven-build-*"))


def test_progress_lines(keys: Keys, tmp_path: Path):
    lines: list[str] = []
    build_image("1.0.0", keys.signing, tmp_path / "x.img", created=CREATED, progress=lines.append, code_only=True)
    assert lines[0].startswith("staging 1.0.0") and "mksquashfs" in lines[1] and lines[-1].startswith("wrote ")
