"""Apply modes as a pure function: what applying a config does, decided before anything is done.

Three configs describe a node: ``active`` (what the agent runs now; ``None`` in maintenance), ``persisted``
(on STATE, what the next boot loads) and ``staged`` (set aside for the next boot only; when present the
next boot loads it instead, see ``boot_config``). ``plan_apply`` returns the three as they will be after
the apply, the diff against what runs, and whether to reboot. The caller carries the plan out and records
``plan.event_payload()`` as the ``config.applied`` event (``config.reverted`` for a try that timed out).

Which changes need a reboot (``REBOOT_FIELDS``):

- ``machine.type``: the node's role decides which services the boot sequence starts.
- ``machine.install``: disk, image, wipe and trusted keys are read by the install and upgrade sequences and by
  the bootloader's image verification; applying them mid-run would leave the running image verified under
  other keys than the config names.
- ``machine.ca``: the CA certifies the node's log key and API certificates; both are issued at boot.
- ``cluster.name``: the node's identity in certificates and events.

Everything else applies live: ``machine.network`` (links, addresses, routes, hostname, resolvers),
``machine.audit`` (checkpoint cadence, sinks), ``machine.certSANs`` (the API certificate is re-issued) and
``cluster.endpoint``. In maintenance (no active config) nothing runs, so nothing needs a reboot.

Modes:

- ``auto``: live when no changed field needs a reboot, else persist and reboot.
- ``no-reboot``: live; refuses (``InvalidRequest`` naming the fields) a change that needs a reboot.
- ``reboot``: persist and reboot, even when the change could apply live.
- ``staged``: stage for the next boot; active and persisted stay as they are.
- ``try``: apply live without persisting, so any reboot or crash also reverts; after ``try_timeout`` seconds
  the caller reverts to ``plan.revert_to`` (``revert_try``) unless confirmed (``confirm_try``). Like
  ``no-reboot`` it refuses changes that need a reboot, and it needs an active config to go back to.

A live or reboot apply supersedes a staged config (it is dropped, with a warning). ``dry_run`` plans the
same, refuses the same, and returns the inputs unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec

from errors import InvalidRequest

from ._diff import Change, diff, digest
from ._schema import MachineConfig

__all__ = [
    "DEFAULT_TRY_TIMEOUT",
    "REBOOT_FIELDS",
    "Action",
    "ApplyMode",
    "ApplyPlan",
    "boot_config",
    "confirm_try",
    "needs_reboot",
    "plan_apply",
    "revert_try",
]

REBOOT_FIELDS: tuple[str, ...] = ("machine.type", "machine.install", "machine.ca", "cluster.name")
DEFAULT_TRY_TIMEOUT = 60.0


class ApplyMode(enum.StrEnum):
    AUTO = "auto"
    NO_REBOOT = "no-reboot"
    REBOOT = "reboot"
    STAGED = "staged"
    TRY = "try"


class Action(enum.StrEnum):
    NONE = "none"  # nothing to do
    LIVE = "live"  # apply to the running node and persist
    REBOOT = "reboot"  # persist, then reboot into it
    STAGE = "stage"  # keep for the next boot
    TRY = "try"  # apply to the running node only, revert after the timeout unless confirmed


class ApplyPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What an apply does; ``active``, ``persisted`` and ``staged`` are the configs after it."""

    mode: ApplyMode
    action: Action
    dry_run: bool
    changes: tuple[Change, ...]
    reboot_fields: tuple[str, ...]
    digest: str
    active: MachineConfig | None
    persisted: MachineConfig | None
    staged: MachineConfig | None
    reboot: bool = False
    try_timeout: float | None = None
    revert_to: MachineConfig | None = None
    warnings: tuple[str, ...] = ()

    def event_payload(self) -> dict[str, object]:
        """The ``config.applied`` payload: the diff (secrets as digests) and the new config's digest."""
        return {
            "mode": str(self.mode),
            "action": str(self.action),
            "digest": self.digest,
            "changes": [c.to_dict() for c in self.changes],
            "reboot": self.reboot,
            "reboot_fields": list(self.reboot_fields),
            "try_timeout": self.try_timeout,
        }


def needs_reboot(path: str) -> bool:
    """Whether a change at ``path`` (dotted, as in a ``Change``) takes a reboot to apply."""
    return any(path == f or path.startswith((f + ".", f + "[")) or f.startswith(path + ".") for f in REBOOT_FIELDS)


def boot_config(persisted: MachineConfig | None, staged: MachineConfig | None) -> MachineConfig | None:
    """The config a boot loads: the staged one if any (it then becomes the persisted one), else persisted."""
    return staged if staged is not None else persisted


def plan_apply(
    active: MachineConfig | None,
    persisted: MachineConfig | None,
    staged: MachineConfig | None,
    new: MachineConfig,
    mode: ApplyMode | str,
    *,
    dry_run: bool = False,
    try_timeout: float = DEFAULT_TRY_TIMEOUT,
    reboot_required_fn: Callable[[str], bool] | None = None,
) -> ApplyPlan:
    """Plan applying ``new`` in ``mode``; raises ``InvalidRequest`` when the mode cannot apply it."""
    try:
        mode = ApplyMode(mode)
    except ValueError:
        raise InvalidRequest(
            f"unknown apply mode {mode!r} (one of: {', '.join(m.value for m in ApplyMode)})", mode=str(mode)
        ) from None
    rebooting = reboot_required_fn or needs_reboot
    base = active if active is not None else persisted
    changes = tuple(diff(base, new))
    reboot_fields = tuple(c.path for c in changes if rebooting(c.path)) if active is not None else ()
    new_active, new_persisted, new_staged = active, persisted, staged
    reboot, timeout, revert_to = False, None, None
    if mode is ApplyMode.STAGED:
        action = Action.NONE if new == boot_config(persisted, staged) else Action.STAGE
        if action is Action.STAGE:
            new_staged = new
    elif not changes and persisted == new and staged is None:
        action = Action.NONE
    elif mode is ApplyMode.TRY:
        if active is None:
            raise InvalidRequest(
                "mode try needs a running config to revert to; use auto in maintenance", mode=str(mode)
            )
        _refuse_reboot(mode, reboot_fields)
        if try_timeout <= 0:
            raise InvalidRequest(f"try timeout must be positive, got {try_timeout}", mode=str(mode))
        action, new_active, timeout, revert_to = Action.TRY, new, try_timeout, active
    elif mode is ApplyMode.REBOOT or (mode is ApplyMode.AUTO and reboot_fields):
        action, new_persisted, new_staged, reboot = Action.REBOOT, new, None, True
    else:
        _refuse_reboot(mode, reboot_fields)
        action, new_active, new_persisted, new_staged = Action.LIVE, new, new, None
    warnings = []
    if staged is not None and new_staged is None:
        warnings.append(f"the staged config ({digest(staged)}) is dropped: this apply supersedes it")
    elif staged is not None and new_staged is not staged:
        warnings.append(f"replaces the config staged before ({digest(staged)})")
    if dry_run:
        new_active, new_persisted, new_staged = active, persisted, staged
    return ApplyPlan(
        mode=mode, action=action, dry_run=dry_run, changes=changes, reboot_fields=reboot_fields,
        digest=digest(new), active=new_active, persisted=new_persisted, staged=new_staged, reboot=reboot,
        try_timeout=timeout, revert_to=revert_to, warnings=tuple(warnings),
    )  # fmt: skip


def _refuse_reboot(mode: ApplyMode, fields: tuple[str, ...]) -> None:
    if fields:
        raise InvalidRequest(
            f"mode {mode} cannot apply this change without a reboot; these fields need one: "
            f"{', '.join(fields)} (use mode auto or reboot to reboot now, or staged for the next boot)",
            mode=str(mode),
            fields=list(fields),
        )


def confirm_try(active: MachineConfig, persisted: MachineConfig | None, staged: MachineConfig | None) -> ApplyPlan:
    """Keep a tried config: persist what runs (a staged config stays staged)."""
    return ApplyPlan(
        mode=ApplyMode.TRY, action=Action.NONE if persisted == active else Action.LIVE, dry_run=False,
        changes=(), reboot_fields=(), digest=digest(active), active=active, persisted=active, staged=staged,
    )  # fmt: skip


def revert_try(
    active: MachineConfig, persisted: MachineConfig | None, staged: MachineConfig | None, revert_to: MachineConfig
) -> ApplyPlan:
    """Undo a try that was not confirmed in time: run ``revert_to`` again; nothing was persisted."""
    changes = tuple(diff(active, revert_to))
    return ApplyPlan(
        mode=ApplyMode.TRY, action=Action.LIVE if changes else Action.NONE, dry_run=False, changes=changes,
        reboot_fields=(), digest=digest(revert_to), active=revert_to, persisted=persisted, staged=staged,
    )  # fmt: skip
