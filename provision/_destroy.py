"""``destroy_cluster``: stop a local cluster's machines (SIGTERM to each process group, SIGKILL after a grace
period), unmount what is mounted below its folder, detach the loop devices over its disk files, remove its network
namespaces and links (found by their names, so after a crash too), drop its client config context and remove the
folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from api import load_client_config
from errors import GravenError, Unavailable

from . import _netns
from ._cluster import TimedProgress, _cluster_dir, load_cluster, machine_alive
from ._record import ClusterRecord

__all__ = ["destroy_cluster"]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), sig)


def _stop_machine(name: str, root: str, pid: int | None, grace: float, report: Callable[[str], None]) -> None:
    pids = [pid]
    with contextlib.suppress(OSError, ValueError):
        pids.append(int((Path(root) / "run" / "agent.pid").read_text().strip()))
    live = [p for p in pids if p and machine_alive(p, root)]
    if not live:
        from node import forget_container

        forget_container(Path(root))
        return
    for pid in live:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(machine_alive(p, root) for p in live):
        time.sleep(0.05)
    left = [p for p in live if machine_alive(p, root)]
    for pid in left:
        _signal_group(pid, signal.SIGKILL)
    for _ in range(100):
        if not any(machine_alive(p, root) for p in left):
            break
        time.sleep(0.02)
    from node import forget_container

    forget_container(Path(root))  # a container machine: what still runs in its cgroup, and the cgroup
    report(f"{name}: machine stopped" + (" (killed)" if left else ""))


def _mounts_below(directory: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = str(directory).rstrip("/") + "/"
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] else fields[4]
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _loops_below(directory: Path) -> list[str]:
    try:
        out = subprocess.run(["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"], capture_output=True,
                             check=False, timeout=30).stdout
        devices = json.loads(out or b"{}").get("loopdevices", [])
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    prefix = str(directory).rstrip("/") + "/"
    return [str(d["name"]) for d in devices
            if str(d.get("back-file") or "").removesuffix(" (deleted)").startswith(prefix)]


def destroy_cluster(name: str, *, state: Path | None = None, grace: float = 15.0,
                    say: Callable[[str], None] | None = None) -> bool:
    """Stop and remove the cluster; False when there was nothing to destroy."""


    report = say or TimedProgress()
    directory = _cluster_dir(state, name)
    if not directory.exists():
        if _destroy_netns(name, report, record=None):  # a crash may leave namespaces without the folder
            return True
        report(f"no cluster {name!r} under {directory.parent}; nothing to destroy")
        return False
    record: ClusterRecord | None
    try:
        record = load_cluster(state, name)
    except GravenError:
        record = None
    # (name, root, pid): the recorded machines, and those the file does not know about yet (a create that crashed
    # before saving them)
    machines = [(n.name, n.root, n.pid) for n in record.nodes] if record is not None else []
    for root in sorted((directory / "nodes").glob("*")) if (directory / "nodes").is_dir() else ():
        if not any(known == str(root) for _, known, _ in machines):
            machines.append((root.name, str(root), None))
    for node_name, root_dir, pid in machines:
        if not pid:
            with contextlib.suppress(OSError, ValueError):
                pid = int((Path(root_dir) / "run" / "machine.pid").read_text().strip())
        _stop_machine(node_name, root_dir, pid, grace, report)
    _destroy_netns(name, report, record=record)
    for point in _mounts_below(directory):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        report(f"unmounted {point}")
    for _ in range(2):  # partition loops first, then the disk loops they sit on
        for dev in _loops_below(directory):
            subprocess.run(["losetup", "--detach", dev], capture_output=True, check=False)
    for dev in _loops_below(directory):
        report(f"warning: loop device {dev} is still attached")
    if record is not None:
        _drop_context(record, report)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise Unavailable(f"could not remove {directory} entirely (something still mounted or busy?)",
                          path=str(directory))
    report(f"cluster {name} destroyed")
    return True


def _drop_context(record: ClusterRecord, report: Callable[[str], None]) -> None:
    path, used = record.client_config, record.context
    if not path or not used or not Path(path).exists():
        return
    try:
        cfg = load_client_config(path)
        ours = Path(record.ca_cert).read_bytes()
    except (GravenError, OSError):
        return
    ctx = cfg.contexts.get(used)
    if ctx is None or ctx.ca != ours:
        return
    del cfg.contexts[used]
    if cfg.context == used:
        cfg.context = next(iter(sorted(cfg.contexts)), None)
    cfg.save(path)
    report(f"removed context {used} from {path}")


def _destroy_netns(name: str, report: Callable[[str], None], record: ClusterRecord | None) -> bool:
    """Remove the cluster's namespaces, links and the processes still in them (found by their names, so after a
    crash too); False when there were none (or this is not a namespaced cluster and no namespace exists)."""
    try:
        _netns.link_names(name)
    except GravenError:
        return False  # a name no namespaced cluster can have
    if os.geteuid() != 0:
        if record is not None and record.network == "netns":
            report(f"warning: cluster {name} has network namespaces; only root can remove them")
        return False
    removed = _netns.destroy(name)
    if not any(removed.values()):
        return False
    report(f"network: removed {len(removed['namespaces'])} namespace(s), {len(removed['links'])} link(s)"
           + (f", ended {len(removed['processes'])} process(es) left in them" if removed["processes"] else ""))
    return True
