"""The container machine's memory cgroup, as pure rules over the kernel's files (no I/O here): which files limit
the machine on each cgroup version, and what the cgroup's counters say about an OOM kill after the machine died.

cgroup v2 (Documentation/admin-guide/cgroup-v2.rst): ``memory.max`` is the limit; ``memory.swap.max`` 0 leaves no
swap to escape to; ``memory.oom.group`` 1 makes one OOM kill end every process in the cgroup (the machine dies
whole, as a VM would); ``memory.events`` is a flat-keyed file (``low``, ``high``, ``max``, ``oom``, ``oom_kill``,
and since 5.19 ``oom_group_kill``).
cgroup v1 (Documentation/admin-guide/cgroup-v1/memory.rst): ``memory.limit_in_bytes``; ``memory.memsw.limit_in_bytes``
equal to it where swap is accounted, and ``memory.swappiness`` 0; ``memory.oom_control`` reads
``oom_kill_disable``, ``under_oom`` and (since 4.13) ``oom_kill``. v1 has no group kill: the launcher kills PID 1
on the OOM notification, which ends the pid namespace.
Devices (v1 ``devices`` controller): ``device_rules`` lists what a machine may open or make (its /dev's character
devices, its block disk and partitions); on a host whose devices controller is v2 only, that takes a BPF program,
which Graven does not load: the machine's devices are then what its /dev holds (PID 1 is root and could mknod more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BLOCK_EXT_MAJOR", "OomVerdict", "Setting", "device_rules", "files", "limit_settings", "oom_verdict"]

BLOCK_EXT_MAJOR = 259  # "blkext": the kernel's numbers for partitions of disks with no minors of their own (loop)


@dataclass(frozen=True)
class Setting:
    name: str  # the file in the machine's cgroup
    value: str
    required: bool  # False: absent when the kernel does not account swap (or predates the knob), which is as good


@dataclass(frozen=True)
class OomVerdict:
    kills: int  # processes the OOM killer killed in the machine
    limit_hits: int  # v2 ``oom``: times an allocation was about to fail at the limit (0 where v1 does not say)
    group_kills: int  # v2 ``oom_group_kill``: times the whole machine was killed at once
    under_oom: bool  # v1 ``under_oom``: the cgroup is (still) in an OOM state
    counted: bool  # the kernel reports OOM kills in this file at all (v1 before 4.13 does not)

    @property
    def killed(self) -> bool:
        return self.kills > 0 or self.group_kills > 0


def files(version: int) -> dict[str, str]:
    """The cgroup's files by role on ``version`` (1 or 2)."""
    if version == 2:
        return {"limit": "memory.max", "current": "memory.current", "peak": "memory.peak", "procs": "cgroup.procs",
                "events": "memory.events"}
    if version == 1:
        return {"limit": "memory.limit_in_bytes", "current": "memory.usage_in_bytes",
                "peak": "memory.max_usage_in_bytes", "procs": "cgroup.procs", "events": "memory.oom_control"}
    raise ValueError(f"cgroup version {version}: 1 or 2")


def limit_settings(version: int, memory: int) -> list[Setting]:
    """What the launcher writes, in order, to limit a machine to ``memory`` bytes with no swap and (v2) one OOM
    kill for all of it."""
    if memory <= 0:
        raise ValueError(f"memory limit {memory}: a positive number of bytes")
    if version == 2:
        return [Setting("memory.max", str(memory), True), Setting("memory.swap.max", "0", False),
                Setting("memory.oom.group", "1", False)]
    if version == 1:
        return [Setting("memory.limit_in_bytes", str(memory), True),
                Setting("memory.memsw.limit_in_bytes", str(memory), False), Setting("memory.swappiness", "0", False)]
    raise ValueError(f"cgroup version {version}: 1 or 2")


def _flat_keyed(text: str, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"{where} line {n}: {line!r} is not 'KEY NUMBER'") from None
    return out


def oom_verdict(version: int, events: str) -> OomVerdict:
    """What the machine's OOM counters say, from the text of ``memory.events`` (v2) or ``memory.oom_control`` (v1).
    Raises ``ValueError`` naming the file and line that does not read as ``KEY NUMBER``."""
    name = files(version)["events"]
    keys = _flat_keyed(events, name)
    if version == 2:
        return OomVerdict(kills=keys.get("oom_kill", 0), limit_hits=keys.get("oom", 0),
                          group_kills=keys.get("oom_group_kill", 0), under_oom=False, counted="oom_kill" in keys)
    return OomVerdict(kills=keys.get("oom_kill", 0), limit_hits=0, group_kills=0,
                      under_oom=keys.get("under_oom", 0) > 0, counted="oom_kill" in keys)


def device_rules(chars: Iterable[tuple[int, int]], disks: Iterable[tuple[int, int]], *,
                 new_partitions: bool) -> list[str]:
    """The v1 devices cgroup's ``devices.allow`` lines of a machine, after ``a`` in ``devices.deny``: its character
    devices, its block disk and the partitions it has (by number), and, when the agent may make partitions
    (``new_partitions``: an installer boot, whose install partitions a blank disk), any partition numbered by the
    kernel's ``blkext`` major, since the kernel picks their numbers only then. ``rwm``: read, write, mknod."""
    rules = [f"c {major}:{minor} rwm" for major, minor in chars]
    rules += [f"b {major}:{minor} rwm" for major, minor in disks]
    if new_partitions:
        rules.append(f"b {BLOCK_EXT_MAJOR}:* rwm")
    for rule in rules:
        kind, _, rest = rule.partition(" ")
        numbers = rest.split()[0].split(":")
        if kind not in ("b", "c") or len(numbers) != 2 or not all(n == "*" or n.isdigit() for n in numbers):
            raise ValueError(f"device rule {rule!r}: 'b|c MAJOR:MINOR rwm'")
    return rules
