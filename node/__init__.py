"""The composition root: the agent (sequences + API on real adapters) and the machine supervisor."""

import typing

import lazy

if typing.TYPE_CHECKING:
    from ._launch import container_problem as container_problem
    from ._launch import forget as forget_container
    from ._qemu import GUEST_BLANK_DISK_SIZE as GUEST_BLANK_DISK_SIZE
    from ._qemu import GUEST_DISK_SIZE as GUEST_DISK_SIZE
    from ._qemu import preinstalled_disk as preinstalled_disk
    from ._qemu import qemu_problem as qemu_problem

# what the provisioner asks of the machine launchers, loaded by the provisioner that uses it
_LAZY: dict[str, str] = {
    "GUEST_BLANK_DISK_SIZE": "_qemu",
    "GUEST_DISK_SIZE": "_qemu",
    "container_problem": "_launch",
    "forget_container": "_launch:forget",
    "preinstalled_disk": "_qemu",
    "qemu_problem": "_qemu",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "GUEST_BLANK_DISK_SIZE",
    "GUEST_DISK_SIZE",
    "container_problem",
    "forget_container",
    "preinstalled_disk",
    "qemu_problem",
]
