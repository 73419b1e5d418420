"""Opening the machine's disk, for the supervisor and the agent alike (no heavy imports: both start with it)."""

from __future__ import annotations

from pathlib import Path

from storage import BlockDisk, DiskBase, SandboxDisk

__all__ = ["open_disk"]


def open_disk(root: Path, device: Path | str | None, run_dir: Path) -> DiskBase:
    """The machine's disk: the block device (or disk image file) ``device``, else the sandbox under ``root``.

    ``run_dir`` is where this process mounts and makes device nodes; the supervisor and the agent it starts
    use different ones, so that neither ever unmounts what the other mounted.
    """
    if device is not None:
        return BlockDisk(device, run_dir=run_dir)
    return SandboxDisk(root, run_dir=run_dir)
