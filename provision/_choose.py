"""Which provisioner makes a local cluster's machines: ``container`` (the agent as PID 1 of its own namespaces, the
slot's squashfs as ``/``; root) or ``process`` (the agent as a child process on the host's root; no root needed)."""

from __future__ import annotations

import os
from collections.abc import Callable

from errors import Unavailable

__all__ = ["PROVISIONERS", "choose_provisioner"]

PROVISIONERS = ("container", "process", "qemu")
DEFAULT_CONTAINER = True  # as root with namespaces: the e2e machine and cluster suites run green on containers
DEFAULT_ENV = "GRAVEN_PROVISIONER"  # container | process: the default when --provisioner is not given


def choose_provisioner(wanted: str | None, disk: str, say: Callable[[str], None],
                       problem: Callable[[], str | None] | None = None, prefer: str | None = None) -> str:
    """``wanted`` if it can work here (else a refusal naming the way out); else ``prefer`` (default
    ``$GRAVEN_PROVISIONER``): container where root and namespaces allow it (sandbox or block disk), else
    process."""
    prefer = prefer or os.environ.get(DEFAULT_ENV) or ("container" if DEFAULT_CONTAINER else "process")
    if wanted == "qemu":
        from node import qemu_problem
        from storage import block_problem

        why = qemu_problem() or block_problem()
        if why:
            raise Unavailable(f"--provisioner qemu: {why}")
        say("provisioner: qemu: each node a virtual machine booted from its own raw GPT disk image (Debian's cloud "
            "kernel, Graven's initramfs, the agent as PID 1)")
        return "qemu"
    if problem is None:
        from node import container_problem

        problem = container_problem
    why = problem()
    if wanted == "container" and why:
        raise Unavailable(f"--provisioner container: {why}; use --provisioner process")
    if wanted == "process":
        say("provisioner: process (--provisioner process): each agent a child process on this host's root")
        return "process"
    if wanted is None and (why or prefer != "container"):
        reason = why or f"{DEFAULT_ENV}={prefer}"
        say(f"provisioner: process ({reason}): each agent a child process on this host's root, as --provisioner "
            "process (container machines, the default, need root and namespaces)")
        return "process"
    say("provisioner: container: each agent PID 1 of its own namespaces, the slot's squashfs as /, in a memory "
        "cgroup" + ("" if wanted else " (root; --provisioner process for the old way)"))
    return "container"
