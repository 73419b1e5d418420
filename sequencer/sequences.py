"""Every sequence as a table: phases in order, the tasks of a phase together (``specs/sequences.md``).

A phase's ``when`` is a named condition checked just before it runs; ``fires`` moves the stage as it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fsm import Stage, Trigger

from ._context import Context
from ._model import Phase, Sequence, SequenceName, condition
from ._requests import InstallRequest, RebootRequest, ResetRequest, ShutdownRequest, UpgradeRequest
from .tasks import disk, image, log, meta, network, power, services, state

__all__ = ["SEQUENCES"]


# -- conditions --------------------------------------------------------------------------------------------
@condition
def config_missing(ctx: Context) -> bool:
    return ctx.runtime.config is None


def _installed(ctx: Context) -> bool:
    env = ctx.runtime.boot_env
    return env is not None and (env.a.good or env.b.good)


@condition
def fresh_disk(ctx: Context) -> bool:
    """No install on the disk ever booted good. After a reset (STATE and EPHEMERAL wiped, slots and META kept,
    as Talos's reset to maintenance) the node runs from its slot: install then only rewrites STATE."""
    return not _installed(ctx)


@condition
def fresh_disk_to_format(ctx: Context) -> bool:
    return ctx.ports.disk.makes_filesystems and not _installed(ctx)


@condition
def not_forced(ctx: Context) -> bool:
    return not (isinstance(ctx.request, RebootRequest | ShutdownRequest) and ctx.request.force)


@condition
def graceful_with_sinks(ctx: Context) -> bool:
    cfg = ctx.runtime.config
    return ctx.request_as(ResetRequest).graceful and cfg is not None and bool(cfg.machine.audit.sinks)


@condition
def reset_reboots(ctx: Context) -> bool:
    return ctx.request_as(ResetRequest).reboot


@condition
def reset_powers_off(ctx: Context) -> bool:
    return not ctx.request_as(ResetRequest).reboot


def _in(stages: str) -> frozenset[Stage]:
    return frozenset(Stage(s) for s in stages.split())


# -- the tables --------------------------------------------------------------------------------------------
INITIALIZE = Sequence(SequenceName.INITIALIZE, stages=_in("booting"), phases=(
    Phase("meta", (meta.load_boot_env,)),
    Phase("log", (log.verify_tail,)),
    Phase("identity", (state.load_identity,)),
    Phase("config", (state.load_config,)),
    Phase("maintenance", (services.start_maintenance_api,), when=config_missing, fires=Trigger.MAINTENANCE),
), summary="load the boot environment, check the log, load identity and config; no config: maintenance")

BOOT = Sequence(SequenceName.BOOT, stages=_in("booting"), done=Trigger.BOOTED, phases=(
    Phase("image", (image.measure_image,)),
    Phase("network", (network.configure_links, network.set_hostname, network.set_resolvers)),
    Phase("services", (services.start_api, services.start_health, services.start_etcd)),
    Phase("ready", (services.wait_healthy,)),
    Phase("commit", (meta.commit_boot,)),
), summary="bring the node up and, once healthy, mark the boot good")

INSTALL = Sequence(SequenceName.INSTALL, stages=_in("booting maintenance"), request=InstallRequest,
                   enter=Trigger.INSTALL, failed=Trigger.ABORT, phases=(
    Phase("disk", (disk.partition_disk,), when=fresh_disk),
    Phase("format", (disk.format_partitions,), when=fresh_disk_to_format),
    Phase("image", (image.install_image,), when=fresh_disk),
    Phase("state", (state.write_config, state.create_identity)),
    Phase("bootloader", (meta.default_slot_a,), when=fresh_disk),
    Phase("reboot", (power.request_reboot,), fires=Trigger.REBOOT),
), summary="partition the disk, write the image to slot A, keep config and node key on STATE, reboot")

UPGRADE = Sequence(SequenceName.UPGRADE, stages=_in("booting running"), request=UpgradeRequest,
                   enter=Trigger.UPGRADE, failed=Trigger.ABORT, phases=(
    Phase("verify", (image.verify_image,)),
    Phase("write", (image.write_inactive_slot,)),
    Phase("bootloader", (meta.arm_slot,)),
    Phase("stop", (services.stop_services, log.seal_log)),
    Phase("reboot", (power.request_reboot,), fires=Trigger.REBOOT),
), summary="verify the image, write the inactive slot, arm it for 3 tries, reboot into it")

STAGE_UPGRADE = Sequence(SequenceName.STAGE_UPGRADE, stages=_in("running"), request=UpgradeRequest,
                         enter=Trigger.UPGRADE, done=Trigger.STAGED, failed=Trigger.ABORT, phases=(
    Phase("verify", (image.verify_image,)),
    Phase("write", (image.write_inactive_slot,)),
    Phase("bootloader", (meta.arm_slot,)),
), summary="as upgrade, but the armed slot boots at the next reboot, whenever that is")

ROLLBACK = Sequence(SequenceName.ROLLBACK, stages=_in("booting maintenance running"), phases=(
    Phase("bootloader", (meta.revert_slot,)),
    Phase("stop", (services.stop_services,), fires=Trigger.REBOOT),
    Phase("reboot", (power.request_reboot,)),
), summary="make the other slot (it must have booted good) the default, reboot into it")

RESET = Sequence(SequenceName.RESET, stages=_in("booting maintenance running"), request=ResetRequest,
                 enter=Trigger.RESET, phases=(
    Phase("ship", (log.ship_audit,), when=graceful_with_sinks),
    Phase("stop", (services.stop_services,)),
    Phase("seal", (log.seal_log,)),
    Phase("wipe", (disk.wipe_labels,)),
    Phase("reboot", (power.request_reboot,), when=reset_reboots, fires=Trigger.REBOOT),
    Phase("poweroff", (power.request_power_off,), when=reset_powers_off, fires=Trigger.POWER_OFF),
), summary="ship the log, stop, seal, wipe STATE and/or EPHEMERAL, then reboot or power off")

REBOOT = Sequence(SequenceName.REBOOT, request=RebootRequest, enter=Trigger.REBOOT,
                  stages=_in("booting maintenance installing running upgrading resetting rebooting"), phases=(
    Phase("stop", (services.stop_services,), when=not_forced),
    Phase("seal", (log.seal_log,)),
    Phase("reboot", (power.request_reboot,)),
), summary="stop services (unless forced), seal the log, reboot")

SHUTDOWN = Sequence(SequenceName.SHUTDOWN, stages=frozenset(Stage) - {Stage.STOPPED}, request=ShutdownRequest,
                    enter=Trigger.SHUTDOWN, phases=(
    Phase("stop", (services.stop_services,), when=not_forced),
    Phase("seal", (log.seal_log,)),
    Phase("poweroff", (power.request_power_off,), fires=Trigger.POWER_OFF),
), summary="stop services (unless forced), seal the log, power off")

SEQUENCES: Mapping[SequenceName, Sequence] = MappingProxyType({
    s.name: s for s in (INITIALIZE, BOOT, INSTALL, UPGRADE, STAGE_UPGRADE, ROLLBACK, RESET, REBOOT, SHUTDOWN)
})
