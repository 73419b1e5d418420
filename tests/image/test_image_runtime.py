"""The full OS image: a self-contained root with the interpreter, its trimmed library, the dependencies and their
shared libraries as bytecode, and nothing to log in with or install from (no shell, busybox, package manager, pip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from image_fixtures import CREATED, Keys

from errors import InvalidRequest, StorageError
from image import build_image, verify
from image._build import COMPRESSION_ENV, FULL_COMPRESSION, default_compression
from image._runtime import PYTHON, STDLIB, forbidden_paths, normalise, runtime_layer

PROJECT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


@pytest.fixture(scope="module")
def full_image(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = tmp_path_factory.mktemp("full") / "full.img"
    build_image("4.2.0", keys.signing, img, created=CREATED, compression=FULL_COMPRESSION)
    return img


@pytest.fixture(scope="module")
def base_image(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = tmp_path_factory.mktemp("base") / "base.img"
    build_image("4.2.0", keys.signing, img, created=CREATED, etcd=False, compression=FULL_COMPRESSION)
    return img


HOST_ETCD = shutil.which("etcd") is not None
needs_etcd = pytest.mark.skipif(not HOST_ETCD, reason="this host has no etcd (Debian's etcd-server)")


def listing(img: Path) -> list[str]:
    out = subprocess.run(["unsquashfs", "-l", "-n", str(img)], capture_output=True, text=True, check=True).stdout
    return [line.removeprefix("squashfs-root") for line in out.splitlines() if line.startswith("squashfs-root")]


def test_a_full_image_is_lz4_unless_the_host_names_another(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(COMPRESSION_ENV, raising=False)
    assert default_compression(code_only=False) == "lz4"
    assert default_compression(code_only=True) == "gzip"
    monkeypatch.setenv(COMPRESSION_ENV, "zstd")
    assert default_compression(code_only=False) == "zstd"
    assert default_compression(code_only=True) == "gzip"
    monkeypatch.setenv(COMPRESSION_ENV, "brotli")
    with pytest.raises(InvalidRequest, match=r"\$GRAVEN_IMAGE_COMPRESSION='brotli' is not a squashfs compression"):
        default_compression(code_only=False)


def squashfs_compressor(img: Path) -> str:
    return subprocess.run(["unsquashfs", "-s", str(img)], capture_output=True, text=True, check=True).stdout


def test_the_size_and_listing_tests_measure_the_release_compression(full_image: Path, base_image: Path):
    for img in (full_image, base_image):
        assert "Compression lz4" in squashfs_compressor(img)


def test_forbidden_names_are_caught():
    bad = ["/bin/sh", "/usr/bin/bash", "/bin/busybox", "/usr/bin/apt-get", "/usr/bin/dpkg",
           "/usr/lib/python3.11/site-packages/pip/__init__.pyc", "/usr/bin/pip3.11", "/usr/lib/python3.11/ensurepip"]
    good = ["/usr/bin/python3.11", "/usr/lib/python3.11/shlex.pyc", "/usr/lib/graven/node/agent.py",
            "/usr/lib/python3.11/site-packages/pyroute2/shell.pyc", "/etc/os-release"]
    assert forbidden_paths(bad + good) == bad


def test_full_image_is_a_self_contained_root_without_a_shell_or_pip(full_image: Path, keys: Keys):
    names = listing(full_image)
    assert forbidden_paths(names) == []
    have = set(names)
    for needed in (f"/{PYTHON}", "/etc/os-release", "/usr/lib/graven/node/__main__.py",
                   "/usr/lib/graven/graven_build.json", "/lib64/ld-linux-x86-64.so.2", "/proc", "/sys", "/dev",
                   "/run", "/tmp", "/machine"):
        assert needed in have, needed
    lib = f"/{STDLIB}"
    assert f"{lib}/os.pyc" in have and f"{lib}/os.py" not in have  # bytecode only
    assert not [n for n in names if n.startswith(lib) and n.endswith(".py")]
    for gone in ("test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data", "site-packages/setuptools",
                 "site-packages/grpc_tools"):
        assert f"{lib}/{gone}" not in have, gone
    assert any(n.startswith(f"{lib}/site-packages/grpc/") for n in names)
    assert ("/usr/bin/etcd" in have) == HOST_ETCD  # the etcd part, when the host has etcd to take


def test_the_base_image_stays_within_40_mib_and_etcd_is_apart(base_image: Path, full_image: Path, keys: Keys):
    """The 40 MiB limit is the base OS's (interpreter, libraries, dependencies, code); etcd is measured apart."""
    names = set(listing(base_image))
    assert "/usr/bin/etcd" not in names and "/usr/bin/etcdctl" not in names and f"/{PYTHON}" in names
    assert forbidden_paths(names) == []
    size = verify(base_image, keys.trusted).manifest.payload_size
    assert size <= 40 * MIB, f"the base OS image grew to {size / MIB:.1f} MiB (limit 40)"
    with_etcd = verify(full_image, keys.trusted).manifest.payload_size
    if HOST_ETCD:
        assert 2 * MIB < with_etcd - size < 20 * MIB, (with_etcd - size) / MIB


def test_etcd_required_without_a_host_etcd_is_a_clear_error(keys: Keys, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("image._runtime._host_binary", lambda _name: None)
    with pytest.raises(StorageError, match=r"etcd is not installed.*etcd-server"):
        build_image("4.2.0", keys.signing, tmp_path / "x.img", created=CREATED, etcd=True)
    assert not (tmp_path / "x.img").exists()
    with pytest.raises(InvalidRequest, match="code-only image carries no etcd"):
        build_image("4.2.0", keys.signing, tmp_path / "x.img", created=CREATED, etcd=True, code_only=True)


def test_full_build_is_reproducible_and_reuses_the_cached_layer(full_image: Path, keys: Keys, tmp_path: Path):
    layer = runtime_layer(PROJECT)
    start = time.monotonic()
    again = runtime_layer(PROJECT)
    assert again.root == layer.root and time.monotonic() - start < 2.0  # a digest of inputs, no rebuild
    build_image("4.2.0", keys.signing, tmp_path / "again.img", created=CREATED, compression=FULL_COMPRESSION)
    assert (tmp_path / "again.img").read_bytes() == full_image.read_bytes()


def test_cache_follows_graven_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from image._runtime import cache_dir

    monkeypatch.setenv("GRAVEN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GRAVEN_CACHE")
    assert cache_dir() == Path.home() / ".cache/graven/runtime"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None, reason="chroot needs root")
def test_the_image_runs_its_own_agent_code_on_its_own_interpreter(full_image: Path, tmp_path: Path):
    """Nothing of the host: chrooted into the unpacked root, the image's Python imports the agent and its
    dependencies (C extensions included) and reports the image's stamped version."""
    root = tmp_path / "root"
    subprocess.run(["unsquashfs", "-n", "-q", "-no-xattrs", "-d", str(root), str(full_image)], check=True,
                   capture_output=True)
    code = ("import node.agent, api._server, storage._lmdb_log, cryptography.hazmat.primitives.asymmetric.ed25519, "
            "lmdb, grpc, pyroute2, image, sys; print(image.running_version(), sys.prefix, sys.path[0])")
    env = {"PYTHONHOME": "/usr", "PYTHONPATH": f"/usr/lib/graven:/{STDLIB}/site-packages", "PATH": "/"}
    chroot = shutil.which("chroot") or "chroot"
    proc = subprocess.run([chroot, str(root), f"/{PYTHON}", "-S", "-P", "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4.2.0", "/usr", "/usr/lib/graven"]
    if HOST_ETCD:  # the controlplane's etcd runs on the image's own C library
        etcd = subprocess.run([chroot, str(root), "/usr/bin/etcd", "--version"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin"}, timeout=60, check=False)
        assert etcd.returncode == 0 and "etcd Version" in etcd.stdout, etcd.stderr


@pytest.mark.parametrize("mtime", [None, 0])
def test_normalise_sets_modes_whatever_the_umask_and_the_layers_file_times(tmp_path: Path, mtime: int | None):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True, mode=0o700)
    (root / "usr/bin/tool").write_bytes(b"\x7fELF")
    (root / "usr/bin/tool").chmod(0o700)
    (root / "usr/data").write_text("x")
    (root / "usr/data").chmod(0o600)
    (root / "usr/bin/link").symlink_to("tool")
    root.chmod(0o700)
    before = {name: os.lstat(root / name).st_mtime_ns for name in ("usr/data", "usr/bin/tool")}
    normalise(root, mtime=mtime)
    modes = {p.relative_to(root).as_posix(): p.lstat().st_mode & 0o7777 for p in [root, *root.rglob("*")]}
    assert modes == {".": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/bin/tool": 0o755, "usr/data": 0o644,
                     "usr/bin/link": 0o777}
    assert {name: os.lstat(root / name).st_mtime_ns for name in before} == (before if mtime is None else
                                                                             dict.fromkeys(before, 0))
    assert os.lstat(root / "usr/bin/link").st_mtime_ns != 0
