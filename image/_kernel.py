"""The kernel of qemu machines: Debian's cloud kernel, fetched by the set-up into a cache (one folder per
package version, ``kernel.json`` saying what it holds), and the modules its initramfs loads.

Debian's package ships no ``modules.dep``; the load order comes from each module's ``depends=`` in its
``.modinfo`` ELF section, read here without ``modinfo``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from errors import StorageError
from storage import KERNEL_META, KERNEL_SETUP, kernel_cache

__all__ = ["BOOT_MODULES", "Kernel", "find_kernel", "module_info", "module_order"]

# what a qemu machine needs that the cloud kernel builds as modules: the virtio PCI transport, its disk and
# NIC, squashfs for the slot's root, pvpanic so that a crash reaches the host as a QMP event, and fw_cfg through
# which the host's bootloader hands the boot's decisions (boot.json) to the agent
BOOT_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "squashfs", "pvpanic_mmio", "pvpanic_pci", "qemu_fw_cfg")


@dataclass(frozen=True)
class Kernel:
    root: Path  # the cache folder of this version
    package: str
    version: str  # Debian's package version
    release: str  # uname -r inside the machine
    sha256: str

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    @classmethod
    def load(cls, folder: Path) -> Kernel:
        try:
            meta = json.loads((folder / KERNEL_META).read_text())
            kernel = cls(folder, meta["package"], meta["version"], meta["release"], meta["sha256"])
        except (OSError, ValueError, KeyError) as exc:
            raise StorageError(f"{folder / KERNEL_META}: not a kernel fetched by the set-up ({exc})",
                               path=str(folder)) from exc
        if not kernel.vmlinuz.is_file():
            raise StorageError(f"{folder}: {kernel.vmlinuz.name} is missing; run: {KERNEL_SETUP}", path=str(folder))
        return kernel


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    parts = version.replace("-", ".").replace("+", ".").split(".")
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts)


def find_kernel(cache: Path | None = None) -> Kernel:
    """``$GRAVEN_KERNEL`` (a cache folder) when set, else the newest version in the cache; a clear refusal
    naming the set-up command when there is none."""
    named = os.environ.get("GRAVEN_KERNEL")
    if named:
        return Kernel.load(Path(named))
    cache = cache or kernel_cache()
    versions = sorted((d for d in cache.glob("*") if (d / KERNEL_META).is_file()),
                      key=lambda d: _version_key(d.name)) if cache.is_dir() else []
    if not versions:
        raise StorageError(f"no kernel for qemu machines in {cache}: Debian's cloud kernel is fetched by the "
                           f"set-up; run: {KERNEL_SETUP} (or make system-test)", path=str(cache))
    return Kernel.load(versions[-1])


# -- modules ----------------------------------------------------------------------------------------------------
def module_info(path: Path) -> dict[str, list[str]]:
    """The ``key=value`` strings of a kernel module's ``.modinfo`` section (ELF64, little-endian)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise StorageError(f"{path}: not a little-endian ELF64 kernel module", path=str(path))
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off:end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[offset:offset + size].split(b"\0"):
                key, eq, value = item.decode(errors="replace").partition("=")
                if eq:
                    info.setdefault(key, []).append(value)
            return info
    raise StorageError(f"{path}: no .modinfo section", path=str(path))


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name -> its ``.ko`` file, for every module under ``modules_dir``."""
    return {_norm(p.name.removesuffix(".ko")): p for p in sorted(modules_dir.rglob("*.ko"))}


def module_order(modules_dir: Path, wanted: tuple[str, ...] = BOOT_MODULES) -> list[tuple[str, Path]]:
    """``wanted`` and everything they depend on, each after its dependencies (ties in name order, so the same
    kernel always gives the same order). Raises naming a module that is neither present nor a dependency's."""
    index = module_index(modules_dir)
    deps: dict[str, list[str]] = {}
    todo = sorted(_norm(w) for w in wanted)
    while todo:
        name = todo.pop()
        if name in deps:
            continue
        path = index.get(name)
        if path is None:
            raise StorageError(f"kernel module {name} is not in {modules_dir}", path=str(modules_dir))
        needs = [_norm(d) for v in module_info(path).get("depends", []) for d in v.split(",") if d]
        deps[name] = sorted(needs)
        todo.extend(needs)
    order: list[str] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            raise StorageError(f"kernel modules depend on each other in a cycle through {name}")
        visiting.add(name)
        for dep in deps[name]:
            place(dep)
        visiting.discard(name)
        placed.add(name)
        order.append(name)

    for name in sorted(deps):
        place(name)
    return [(name, index[name]) for name in order]
