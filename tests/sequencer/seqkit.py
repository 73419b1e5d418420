"""Helpers for the sequencer tests (a module of its own: ``conftest`` names collide across test folders)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509

from events import MemoryEventLog
from fsm import Stage, Trigger
from pki import Ed25519Signer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    ca_pem: bytes
    ca_key_pem: bytes
    signer: Ed25519Signer
    cert_der: bytes
    image_key_pem: bytes


PATHS: dict[Stage, tuple[Trigger, ...]] = {
    Stage.BOOTING: (),
    Stage.MAINTENANCE: (Trigger.MAINTENANCE,),
    Stage.INSTALLING: (Trigger.INSTALL,),
    Stage.RUNNING: (Trigger.BOOTED,),
    Stage.UPGRADING: (Trigger.BOOTED, Trigger.UPGRADE),
    Stage.REBOOTING: (Trigger.REBOOT,),
    Stage.RESETTING: (Trigger.RESET,),
    Stage.SHUTTING_DOWN: (Trigger.SHUTDOWN,),
    Stage.STOPPED: (Trigger.SHUTDOWN, Trigger.POWER_OFF),
}


# -- probe tasks for runner tests ---------------------------------------------------------------------------
def sleeper(name: str, seconds: float = 0.0, **kw: Any) -> Any:
    from sequencer import task

    async def run(ctx: Any) -> None:
        await asyncio.sleep(seconds)

    return task(name=name, **kw)(run)


def failer(name: str, error: BaseException, **kw: Any) -> Any:
    from sequencer import task

    async def run(ctx: Any) -> None:
        await asyncio.sleep(0)
        raise error

    return task(name=name, **kw)(run)


def blocker(name: str, started: asyncio.Event | None = None, **kw: Any) -> Any:
    """Runs until its run is cancelled, checking the token as a long task should."""
    from sequencer import task

    async def run(ctx: Any) -> None:
        if started is not None:
            started.set()
        while True:
            await ctx.cancel.sleep(0.01)

    return task(name=name, **kw)(run)


def kinds(log: MemoryEventLog, start: int = 0) -> list[str]:
    return [e.kind for e in log.read(start) if e.kind != "log.checkpoint"]


class BrokenNetwork:
    def configure(self, interfaces: Any) -> None:
        from errors import Unavailable

        raise Unavailable("eth0: no carrier", link="eth0")

    def set_hostname(self, hostname: str) -> None:
        return None

    def set_resolvers(self, nameservers: Any) -> None:
        return None


async def history(log: Any, cfg_yaml: bytes, set_boot: Any) -> None:
    """Four boots: ok then rebooted; failed in boot/network/configure_links; crashed mid-task; still running.

    ``set_boot(boot_id)`` switches the log to a new boot (and returns the log to use)."""
    from events import Kind
    from fsm import NodeFSM
    from sequencer import RebootRequest, SequenceName, Sequencer, bring_up
    from sequencer.memory import MemoryDisk, MemoryIdentity, memory_ports

    disk = MemoryDisk(partitioned=True, files={("STATE", "config.yaml"): cfg_yaml})
    identity = MemoryIdentity("k1")

    def node(log: Any, **ports: Any) -> Sequencer:
        return Sequencer(log, NodeFSM(log), memory_ports(disk=disk, identity=identity, **ports))

    seq = node(log)
    assert (await bring_up(seq, boot_id="boot-ok")).ok
    assert (await seq.run(SequenceName.REBOOT, RebootRequest())).ok

    log = set_boot("boot-failed")
    seq = node(log, network=BrokenNetwork())
    result = await bring_up(seq, boot_id="boot-failed")
    assert result.outcome == "failed" and result.task == "configure_links"

    log = set_boot("boot-crashed")
    log.append(Kind.BOOT_STARTED, {"boot_id": "boot-crashed", "slot": "A", "version": "v1"})
    log.append(Kind.SEQUENCE_STARTED, {"sequence": "initialize", "phases": ["meta"]})
    log.append(Kind.PHASE_STARTED, {"sequence": "initialize", "phase": "meta", "index": 0, "count": 1})
    log.append(Kind.TASK_STARTED, {"sequence": "initialize", "phase": "meta", "task": "load_boot_env"})

    log = set_boot("boot-last")
    seq = node(log)
    assert (await bring_up(seq, boot_id="boot-last")).ok
