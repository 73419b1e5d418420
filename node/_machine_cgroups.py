"""The machine's cgroups on the host, as the container launcher makes, enters, watches and removes them: its
memory cgroup (v2, or the v1 memory hierarchy on hybrid hosts) and, where the host has the v1 devices controller,
its devices cgroup. The rules (which files, which settings, the OOM verdict) are ``_cgroup``'s; this is the I/O."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import _cgroup

if TYPE_CHECKING:
    from ._launch import ContainerResult, ContainerSpec

__all__ = [
    "CGROUP_FS",
    "DEVICES_FS",
    "enter_cgroup",
    "forget",
    "leave_cgroup",
    "memory_cgroup_root",
    "memory_current",
    "oom_events",
    "remove_cgroups",
    "step_out",
]

CGROUP_FS = Path("/sys/fs/cgroup")
DEVICES_FS = CGROUP_FS / "devices"  # the v1 devices controller's hierarchy, where the host has one


def memory_cgroup_root() -> tuple[Path, int] | None:
    """Where machines' memory cgroups go, and the cgroup version: v2 when its memory controller is enabled,
    else the v1 memory hierarchy (hybrid hosts); None when neither is writable."""
    for base in (CGROUP_FS, CGROUP_FS / "unified"):
        with contextlib.suppress(OSError):
            if "memory" in (base / "cgroup.controllers").read_text().split() and os.access(base, os.W_OK):
                return base / "graven", 2
    v1 = CGROUP_FS / "memory"
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return v1 / "graven", 1
    return None


def memory_current(cgroup: str | Path, version: int) -> int | None:
    """The machine's memory use now (the cgroup's ``memory.current`` / ``memory.usage_in_bytes``)."""
    try:
        return int((Path(cgroup) / _cgroup.files(version)["current"]).read_text())
    except (OSError, ValueError):
        return None


def _oom_kills(cgroup: Path, version: int, result: ContainerResult) -> int:
    try:
        verdict = _cgroup.oom_verdict(version, (cgroup / _cgroup.files(version)["events"]).read_text())
    except (OSError, ValueError) as exc:
        result.notes.append(f"no OOM counters: {exc}")
        return 0
    if not verdict.counted:
        result.notes.append("this kernel does not count OOM kills in the cgroup"
                            + (" (it was under OOM)" if verdict.under_oom else ""))
    return max(verdict.kills, verdict.group_kills)


def enter_cgroup(spec: ContainerSpec, result: ContainerResult) -> Path:
    cg = Path(spec.cgroup)
    files = _cgroup.files(spec.cgroup_version)
    with contextlib.suppress(OSError):
        cg.rmdir()  # a stale, empty one from a launcher that was killed
    cg.mkdir(parents=True, exist_ok=True)
    if spec.cgroup_version == 2:
        with contextlib.suppress(OSError):  # the parent must delegate the memory controller to its children
            (cg.parent / "cgroup.subtree_control").write_text("+memory")
    # the limit, and no swap to escape to (a machine past its limit is killed, not slowed to a crawl)
    for setting in _cgroup.limit_settings(spec.cgroup_version, spec.memory):
        try:
            (cg / setting.name).write_text(setting.value)
        except OSError:
            if setting.required:
                raise
    (cg / files["procs"]).write_text(str(os.getpid()))
    result.memory_limit = spec.memory
    if spec.devices_cgroup:
        dev = Path(spec.devices_cgroup)
        with contextlib.suppress(OSError):
            dev.rmdir()
        dev.mkdir(parents=True, exist_ok=True)
        (dev / "devices.deny").write_text("a")
        for rule in spec.device_rules:
            (dev / "devices.allow").write_text(rule)
        (dev / "cgroup.procs").write_text(str(os.getpid()))
    return cg


def step_out(cg: Path, spec: ContainerSpec) -> None:
    """The launcher back to where it came from (the hierarchy's root): PID 1, forked in ``cg``, stays there."""
    top = Path(CGROUP_FS / "memory") if spec.cgroup_version == 1 else cg.parent.parent
    with contextlib.suppress(OSError):
        (top / "cgroup.procs").write_text(str(os.getpid()))
    if spec.devices_cgroup:
        with contextlib.suppress(OSError):
            (DEVICES_FS / "cgroup.procs").write_text(str(os.getpid()))


def oom_events(cg: Path) -> int | None:
    """cgroup v1 has no ``memory.oom.group``: an eventfd that the kernel signals when its OOM killer acts in
    ``cg`` (registered on ``memory.oom_control``), so that the launcher can kill PID 1, which ends every process
    of its pid namespace with it. None when the kernel offers no such notification."""
    try:
        efd = os.eventfd(0)
        ofd = os.open(cg / "memory.oom_control", os.O_RDONLY)
        (cg / "cgroup.event_control").write_text(f"{efd} {ofd}")
    except OSError:
        return None  # the process the kernel picked then dies alone, still counted as an OOM kill
    return efd


def leave_cgroup(cg: Path, spec: ContainerSpec, result: ContainerResult) -> None:
    files = _cgroup.files(spec.cgroup_version)
    result.oom_kills = _oom_kills(cg, spec.cgroup_version, result)
    with contextlib.suppress(OSError, ValueError):
        result.memory_peak = int((cg / files["peak"]).read_text())
    step_out(cg, spec)
    remove_cgroups([cg, *([Path(spec.devices_cgroup)] if spec.devices_cgroup else [])], 0.02)


def remove_cgroups(cgroups: list[Path], pause: float) -> None:
    """Remove the machine's cgroups once empty (its processes are being killed: that takes a moment)."""
    for cg in cgroups:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(pause)


# -- PID 1's side, before exec -------------------------------------------------------------------------------
def forget(machine_dir: Path) -> None:
    """After a machine was stopped (or killed): SIGKILL whatever still runs in its cgroup and remove its cgroups."""
    try:
        spec = json.loads((machine_dir / "run" / "container.json").read_text())
    except (OSError, ValueError):
        return
    cg = Path(spec.get("cgroup") or "/nonexistent")
    for _ in range(50):
        try:
            pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            cg.rmdir()
            break
        except OSError:
            time.sleep(0.05)
    if spec.get("devices_cgroup"):
        remove_cgroups([Path(spec["devices_cgroup"])], 0.05)
