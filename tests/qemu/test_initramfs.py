"""The qemu machines' kernel and initramfs: found by version, modules in dependency order, no shell,
reproducible bytes."""

from __future__ import annotations

import gzip
import json
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import StorageError
from image._initramfs import (
    GUEST_TOOLS,
    CpioEntry,
    agent_command,
    build_initramfs,
    compile_init,
    cpio_newc,
    read_cpio,
)
from image._kernel import BOOT_MODULES, find_kernel, module_info, module_order
from image._runtime import forbidden_paths
from storage._sys import have

try:
    KERNEL = find_kernel()
    NO_KERNEL = ""
except StorageError as exc:
    KERNEL = None
    NO_KERNEL = exc.message
needs_kernel = pytest.mark.skipif(KERNEL is None, reason=f"no cached kernel: {NO_KERNEL}")
needs_gcc = pytest.mark.skipif(not have("gcc"), reason="gcc is not installed (make system-test installs it)")


def test_no_kernel_names_the_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAVEN_KERNEL", raising=False)
    with pytest.raises(StorageError, match=r"storage/_systools.py kernel"):
        find_kernel(tmp_path / "empty")


def test_kernel_picks_newest_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAVEN_KERNEL", raising=False)
    for version, release in (("6.1.9-1", "6.1.0-9-cloud-amd64"), ("6.1.10-1", "6.1.0-10-cloud-amd64")):
        d = tmp_path / version
        (d / "boot").mkdir(parents=True)
        (d / "boot" / f"vmlinuz-{release}").write_bytes(b"k")
        (d / "kernel.json").write_text(json.dumps({"package": "p", "version": version, "release": release,
                                                   "sha256": "00"}))
    assert find_kernel(tmp_path).release == "6.1.0-10-cloud-amd64"  # 10 > 9 as numbers, not as text
    (tmp_path / "6.1.10-1" / "boot" / "vmlinuz-6.1.0-10-cloud-amd64").unlink()
    with pytest.raises(StorageError, match=r"vmlinuz-6\.1\.0-10-cloud-amd64 is missing"):
        find_kernel(tmp_path)


def _fake_module(path: Path, depends: str) -> None:
    """A minimal ELF64 with a .shstrtab and a .modinfo section."""
    shstr = b"\0.shstrtab\0.modinfo\0"
    modinfo = f"license=GPL\0depends={depends}\0name={path.stem}\0".encode()
    data = bytearray(64)
    data[:6] = b"\x7fELF\x02\x01"
    off_shstr, off_info = 64, 64 + len(shstr)
    shoff = off_info + len(modinfo)
    shoff += -shoff % 8
    body = shstr + modinfo + b"\0" * (shoff - off_info - len(modinfo))
    sections = [bytes(64),
                struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, off_shstr, len(shstr), 0, 0, 1, 0),
                struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, off_info, len(modinfo), 0, 0, 1, 0)]
    struct.pack_into("<Q", data, 0x28, shoff)
    struct.pack_into("<HHH", data, 0x3A, 64, 3, 1)
    path.write_bytes(bytes(data) + body + b"".join(sections))


def test_module_order_follows_depends(tmp_path: Path) -> None:
    graph = {"a": "b,c", "b": "d", "c": "d", "d": "", "e": "a", "unused": ""}
    for name, deps in graph.items():
        _fake_module(tmp_path / f"{name}.ko", deps)
    assert module_info(tmp_path / "a.ko")["depends"] == ["b,c"]
    order = [n for n, _ in module_order(tmp_path, ("e",))]
    assert order == ["d", "b", "c", "a", "e"]
    with pytest.raises(StorageError, match="kernel module nosuch is not in"):
        module_order(tmp_path, ("nosuch",))
    _fake_module(tmp_path / "d.ko", "e")
    with pytest.raises(StorageError, match="cycle"):
        module_order(tmp_path, ("e",))


@needs_kernel
def test_real_kernel_module_order() -> None:
    assert KERNEL is not None
    order = module_order(KERNEL.modules)
    names = [n for n, _ in order]
    assert set(BOOT_MODULES) <= set(names)
    for i, (name, path) in enumerate(order):  # every dependency is loaded before the module that needs it
        for dep in (d for v in module_info(path).get("depends", []) for d in v.split(",") if d):
            assert names.index(dep.replace("-", "_")) < i, (name, dep)
    assert names.index("virtio") < names.index("virtio_pci") < names.index("virtio_blk") or \
        names.index("virtio") < names.index("virtio_blk")


names_st = st.lists(st.text("abcdefgh/", min_size=1, max_size=12).filter(lambda s: not s.startswith("/")),
                    min_size=1, max_size=8, unique=True)


@given(names_st, st.binary(max_size=50))
def test_cpio_round_trip_sorted(names: list[str], data: bytes) -> None:
    entries = [CpioEntry(n, stat.S_IFREG | 0o644, data + n.encode()) for n in names]
    archive = cpio_newc(reversed(entries))
    assert archive == cpio_newc(entries)  # the order given does not matter
    back = read_cpio(archive)
    assert [e.name for e in back] == sorted(names, key=str.encode)
    assert {e.name: e.data for e in back} == {e.name: e.data for e in entries}


@needs_kernel
@needs_gcc
def test_initramfs_reproducible_and_shell_free(tmp_path: Path) -> None:
    assert KERNEL is not None
    init = compile_init(tmp_path / "cache-a")
    again = compile_init(tmp_path / "cache-b")  # a second compile from nothing gives the same binary
    assert init.read_bytes() == again.read_bytes()
    a = build_initramfs(KERNEL, tmp_path / "a.img", init=init).read_bytes()
    b = build_initramfs(KERNEL, tmp_path / "b.img", init=again).read_bytes()
    assert a == b
    assert a[:2] == b"\x1f\x8b" and gzip.decompress(a)[:6] == b"070701"
    entries = {e.name: e for e in read_cpio(a)}
    assert not forbidden_paths(entries)
    assert {"init", "init.conf", "dev/console", "newroot", "proc", "sys"} <= set(entries)
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)
    assert entries["init"].data[:4] == b"\x7fELF"
    assert b"/bin/sh" not in entries["init"].data  # static, and no system() or popen() in it
    conf = entries["init.conf"].data.decode().splitlines()
    modules = [line[3:] for line in conf if line.startswith("m ")]
    assert modules == sorted(modules)  # numbered in load order
    assert all(m in entries for m in modules)
    argv, env = agent_command()
    assert [line[2:] for line in conf if line.startswith("a ")] == argv
    assert argv[4:6] == ["node", "agent"] and "--disk" in argv
    assert [line[2:] for line in conf if line.startswith("e ")] == env
    other = build_initramfs(KERNEL, tmp_path / "c.img", init=init, listen="0.0.0.0:50001").read_bytes()
    assert other != a
    # the disk tools the install runs inside the VM, with what they link beyond the image's C library
    assert {"tools/bin/sfdisk", "tools/bin/mkfs.ext4"} <= set(entries) and not forbidden_paths(entries)
    for tool in ("sfdisk", "mkfs.ext4"):
        needed = subprocess.run(["ldd", str(shutil.which(tool))], capture_output=True, text=True).stdout
        for line in needed.splitlines():
            name = line.strip().split(" ", 1)[0]
            if " => /" in line and not name.startswith(("libc.", "libm.", "ld-linux")):
                assert f"tools/lib/{name}" in entries, (tool, name)
    assert f"PATH=/usr/bin:{GUEST_TOOLS}/bin" in env and f"LD_LIBRARY_PATH={GUEST_TOOLS}/lib" in env
