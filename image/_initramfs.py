"""The initramfs of a qemu machine, built by Graven: reproducible, and no shell in it.

It holds ``/init`` (``image/init.c`` compiled with ``gcc -static``: mounts devtmpfs, loads the modules, mounts
the slot the kernel command line names read-only as ``/`` and executes the agent as PID 1), ``/init.conf``
(the modules in load order, the agent's argv and environment), the modules themselves, ``/dev/console``, empty
mount points, and ``/tools``: the host's ``sfdisk``, ``mkfs.ext4`` and ``partx`` with the libraries they need
beyond the C library, which init binds on ``/run/tools`` for the agent (the install partitions and formats the
guest's blank disk with them; the OS image holds no disk tools). The archive is cpio ``newc`` written here with
every entry sorted by name, owned by root, dated 0, then gzip with mtime 0: the same kernel, host tools and agent
command give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from errors import StorageError
from storage import have, missing_tool

from ._build import CODE_DIR
from ._kernel import BOOT_MODULES, Kernel, module_order
from ._runtime import PYTHON, SITE

__all__ = [
    "AGENT_LISTEN",
    "INIT_SOURCE",
    "CpioEntry",
    "agent_command",
    "build_initramfs",
    "compile_init",
    "cpio_newc",
    "read_cpio",
]

INIT_SOURCE = Path(__file__).with_name("init.c")
AGENT_LISTEN = "0.0.0.0:50000"
MACHINE = "/machine"  # tmpfs inside the VM: the agent's run folder (mount points of STATE and EPHEMERAL)
GUEST_DISK = "/dev/vda"  # the machine's disk, the first virtio-blk device
GUEST_TOOLS = "/run/tools"  # where init binds the initramfs's /tools
DISK_TOOLS = ("sfdisk", "mkfs.ext4", "partx")
# the image brings these (its interpreter needs them): the tools use the image's own
_IMAGE_LIBS = re.compile(r"^(libc|libm|libpthread|libdl|librt|ld-linux[-\w]*)\.so")
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    name: str  # relative, no leading slash
    mode: int  # with the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _cache() -> Path:
    env = os.environ.get("GRAVEN_INITRAMFS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "graven" / "initramfs"


def compile_init(cache: Path | None = None) -> Path:
    """``init.c`` compiled static and stripped, cached by a digest of the source and the compiler's version."""
    if not have("gcc"):
        raise missing_tool("gcc", "compiles the initramfs's init for qemu machines")
    cache = cache or _cache()
    source = INIT_SOURCE.read_bytes()
    cc = subprocess.run(["gcc", "--version"], capture_output=True, check=True, timeout=30).stdout
    key = hashlib.sha256(source + b"\0" + cc).hexdigest()[:16]
    out = cache / f"init-{key}"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".init-{key}.{os.getpid()}"
    done = subprocess.run(["gcc", "-static", "-Os", "-s", "-Wall", "-Werror", "-o", str(tmp), str(INIT_SOURCE)],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise StorageError(f"gcc could not build the initramfs's init: {done.stderr.strip()[-500:]}")
    os.replace(tmp, out)
    return out


def agent_command(listen: str = AGENT_LISTEN, extra: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The agent's argv and environment as PID 1 of the machine: the image's interpreter and code alone."""
    argv = [f"/{PYTHON}", "-S", "-P", "-m", "node", "agent", "--root", MACHINE, "--disk", GUEST_DISK,
            "--listen", listen, *extra]
    env = [f"PATH=/usr/bin:{GUEST_TOOLS}/bin", f"LD_LIBRARY_PATH={GUEST_TOOLS}/lib", "HOME=/run", "LANG=C.UTF-8",
           "PYTHONHOME=/usr",
           f"PYTHONPATH=/{CODE_DIR}:/{SITE}", "PYTHONDONTWRITEBYTECODE=1", "PYTHONSAFEPATH=1",
           "GRAVEN_PLATFORM=netns", "GRAVEN_MACHINE=qemu"]
    return argv, env


def _conf(modules: Iterable[str], argv: Sequence[str], env: Sequence[str]) -> bytes:
    lines = [f"m /{m}" for m in modules] + [f"a {a}" for a in argv] + [f"e {e}" for e in env]
    for line in lines:
        if "\n" in line:
            raise StorageError(f"initramfs: {line!r} holds a newline")
    return ("\n".join(lines) + "\n").encode()


def disk_tools(tools: Sequence[str] = DISK_TOOLS) -> dict[str, Path]:
    """``tools/bin/NAME`` and ``tools/lib/LIB`` -> the host file: each tool found on this host, and the shared
    libraries it links beyond those of the image's interpreter (``ldd``)."""
    found: dict[str, Path] = {}
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            continue
        found[f"tools/bin/{tool}"] = Path(path).resolve()
        done = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30, check=False)
        for line in done.stdout.splitlines():
            name, _, rest = line.strip().partition(" => ")
            lib = rest.split(" (", 1)[0].strip()
            if lib.startswith("/") and not _IMAGE_LIBS.match(name):
                found[f"tools/lib/{name}"] = Path(lib).resolve()
    return found


def initramfs_entries(kernel: Kernel, init: Path, argv: Sequence[str], env: Sequence[str],
                      modules: tuple[str, ...] = BOOT_MODULES, tools: dict[str, Path] | None = None) -> list[CpioEntry]:
    order = module_order(kernel.modules, modules)
    names = [f"lib/modules/{i:02d}-{name}.ko" for i, (name, _) in enumerate(order)]
    tools = disk_tools() if tools is None else tools
    dirs = ["dev", "lib", "lib/modules", "newroot", "proc", "sys"]
    dirs += ["tools", "tools/bin", "tools/lib"] if tools else []
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    entries.extend(CpioEntry(n, stat.S_IFREG | 0o755, p.read_bytes()) for n, p in sorted(tools.items()))
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, init.read_bytes()))
    entries.append(CpioEntry("init.conf", stat.S_IFREG | 0o644, _conf(names, argv, env)))
    entries.extend(CpioEntry(n, stat.S_IFREG | 0o644, p.read_bytes()) for n, (_, p) in zip(names, order, strict=True))
    return entries


def cpio_newc(entries: Iterable[CpioEntry]) -> bytes:
    """A cpio ``newc`` archive of ``entries`` sorted by name: inodes numbered in that order, owner 0, mtime 0."""
    out = bytearray()

    def add(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    ordered = sorted(entries, key=lambda e: e.name.encode())
    for ino, e in enumerate(ordered, start=1):
        add(ino, e.name, e.mode, e.data, e.rdev)
    add(0, _TRAILER, 0, b"", (0, 0))
    return bytes(out)


def read_cpio(data: bytes) -> list[CpioEntry]:
    """The entries of a (gzipped or plain) newc archive; for tests and ``inspect``."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise StorageError(f"initramfs: no cpio newc header at byte {pos}")
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        name_end = pos + 110 + f[11]
        name = data[pos + 110:name_end - 1].decode()
        start = name_end + (-name_end % 4)
        end = start + f[6]
        if name == _TRAILER:
            return entries
        entries.append(CpioEntry(name, f[1], data[start:end], (f[9], f[10])))
        pos = end + (-end % 4)


def build_initramfs(kernel: Kernel, out: Path, *, listen: str = AGENT_LISTEN, extra: Sequence[str] = (),
                    init: Path | None = None) -> Path:
    """Write the gzipped initramfs for ``kernel`` to ``out`` (atomically) and return ``out``."""
    argv, env = agent_command(listen, extra)
    archive = cpio_newc(initramfs_entries(kernel, init or compile_init(), argv, env))
    data = gzip.compress(archive, compresslevel=9, mtime=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out
