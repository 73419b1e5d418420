"""A typed payload for every event kind (its schema version and upcasters: ``events._schema``).

Each Struct below is registered in ``SCHEMAS`` under its kind; ``specs/event-log.md`` has the map each one is on
the wire.
"""

from __future__ import annotations

import msgspec

from errors import GravenError

from ._kinds import Kind
from ._record import Actor, Event
from ._schema import SCHEMAS as SCHEMAS
from ._schema import VERSION_KEY as VERSION_KEY
from ._schema import Payload as Payload
from ._schema import Schemas as Schemas
from ._schema import payload_of as payload_of
from ._schema import read_payload as read_payload
from ._schema import to_payload as to_payload

__all__ = [  # and a Struct per kind, each named in SCHEMAS
    "SCHEMAS",
    "VERSION_KEY",
    "Payload",
    "Schemas",
    "Step",
    "api_denied",
    "api_refused",
    "certificate_of",
    "payload_of",
    "read_payload",
    "to_payload",
]

_reg = SCHEMAS.register

Opt = str | None


# -- the log itself ----------------------------------------------------------------------------------------------
@_reg
class Genesis(Payload, frozen=True, kw_only=True):
    KIND = Kind.GENESIS
    origin: str = ""
    cert: bytes = b""


@_reg
class Checkpointed(Payload, frozen=True, kw_only=True):
    KIND = Kind.CHECKPOINT
    size: int
    root: bytes
    frontier: list[bytes] = msgspec.field(default_factory=list)
    note: str = ""
    sealed: bool = False
    reason: str = ""


@_reg
class KeyRotated(Payload, frozen=True, kw_only=True):
    KIND = Kind.KEY_ROTATED
    cert: bytes = b""
    key_id: str = ""


def certificate_of(event: Event) -> bytes:
    """The log certificate (DER) a genesis or key rotation event carries (``InvalidEvent`` when it is no bytes)."""
    if event.kind == Kind.GENESIS:
        return payload_of(event, Genesis).cert
    return payload_of(event, KeyRotated).cert


# -- boots ---------------------------------------------------------------------------------------------------------
@_reg
class BootStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_STARTED
    boot_id: str = ""
    slot: Opt = None
    version: Opt = None
    image_digest: Opt = None
    boot_number: int = 0


@_reg
class BootSelected(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_SELECTED
    slot: Opt = None
    tries_left: int | None = None
    good: bool | None = None
    boot: int | None = None
    reason: str = ""
    installer: Opt = None
    version: Opt = None
    guest_ns: object = None  # a virtual machine's boot timeline {init, exec, agent} (sequencer.trace reads it)


@_reg
class BootFallback(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_FALLBACK
    from_slot: Opt = None
    to_slot: Opt = None
    reason: Opt = None


@_reg
class BootCommitted(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_COMMITTED
    slot: Opt = None


@_reg
class BootFailed(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_FAILED
    boot_id: Opt = None
    slot: Opt = None
    version: Opt = None
    exit_code: int | None = None
    signal: Opt = None
    reason: str = ""


@_reg
class BootReverted(Payload, frozen=True, kw_only=True):
    KIND = Kind.BOOT_REVERTED
    from_slot: Opt = None
    to_slot: Opt = None
    version: Opt = None
    digest: Opt = None


@_reg
class DiskWipeFailed(Payload, frozen=True, kw_only=True):
    KIND = Kind.DISK_WIPE_FAILED
    labels: list[str] = msgspec.field(default_factory=list)
    reason: str = ""
    sinks: list[str] = msgspec.field(default_factory=list)


@_reg
class DiskWiped(Payload, frozen=True, kw_only=True):
    KIND = Kind.DISK_WIPED
    labels: list[str] = msgspec.field(default_factory=list)
    reason: str = ""
    log_to_seq: int | None = None
    shipped: list[str] = msgspec.field(default_factory=list)


@_reg
class FsmTransition(Payload, frozen=True, kw_only=True):
    KIND = Kind.FSM_TRANSITION
    trigger: str = ""
    src: str = ""
    dst: str


# -- sequences, phases, tasks ---------------------------------------------------------------------------------------
class _Failure(Payload, frozen=True, kw_only=True):
    error: Opt = None
    code: Opt = None


@_reg
class SequenceStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.SEQUENCE_STARTED
    sequence: str
    phases: list[str] = msgspec.field(default_factory=list)
    request: object = None  # the request record; a request id (str) in older logs


@_reg
class SequenceStopped(Payload, frozen=True, kw_only=True):
    KIND = Kind.SEQUENCE_STOPPED
    sequence: Opt = None
    outcome: str = "ok"
    duration_ns: int = 0
    cancelled_by: Opt = None


@_reg
class SequenceFailed(_Failure, frozen=True, kw_only=True):
    KIND = Kind.SEQUENCE_FAILED
    sequence: Opt = None
    outcome: str = "failed"
    duration_ns: int = 0
    phase: Opt = None
    task: Opt = None


@_reg
class PhaseStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.PHASE_STARTED
    sequence: str = ""
    phase: str = ""
    index: int = 0
    count: int = 0


@_reg
class PhaseStopped(Payload, frozen=True, kw_only=True):
    KIND = Kind.PHASE_STOPPED
    sequence: str = ""
    phase: str = ""
    duration_ns: int = 0
    outcome: str = "ok"


@_reg
class PhaseFailed(_Failure, frozen=True, kw_only=True):
    KIND = Kind.PHASE_FAILED
    sequence: str = ""
    phase: str = ""
    duration_ns: int = 0
    task: Opt = None


@_reg
class PhaseSkipped(Payload, frozen=True, kw_only=True):
    KIND = Kind.PHASE_SKIPPED
    sequence: str = ""
    phase: str = ""
    index: int = 0
    count: int = 0
    when: str = ""


@_reg
class TaskStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.TASK_STARTED
    sequence: str = ""
    phase: str = ""
    task: str = ""


@_reg
class TaskStopped(Payload, frozen=True, kw_only=True):
    KIND = Kind.TASK_STOPPED
    sequence: str = ""
    phase: str = ""
    task: str = ""
    duration_ns: int = 0
    outcome: str = "ok"


@_reg
class TaskFailed(_Failure, frozen=True, kw_only=True):
    KIND = Kind.TASK_FAILED
    sequence: str = ""
    phase: str = ""
    task: str = ""
    duration_ns: int = 0
    fatal: bool = True


# a step of a sequence: its, a phase's or a task's start, stop, skip or failure (what boot traces and --wait follow)
Step = (SequenceStarted | SequenceStopped | SequenceFailed | PhaseStarted | PhaseStopped | PhaseFailed | PhaseSkipped
        | TaskStarted | TaskStopped | TaskFailed)


# -- config and images ------------------------------------------------------------------------------------------------
@_reg
class ConfigApplied(Payload, frozen=True, kw_only=True):
    KIND = Kind.CONFIG_APPLIED
    digest: str
    mode: Opt = None
    action: Opt = None
    changes: list[dict[str, object]] = msgspec.field(default_factory=list)
    deadline_ns: int | None = None


@_reg
class ConfigStaged(Payload, frozen=True, kw_only=True):
    KIND = Kind.CONFIG_STAGED
    digest: str
    mode: Opt = None
    action: Opt = None
    changes: list[dict[str, object]] = msgspec.field(default_factory=list)


@_reg
class ConfigReverted(Payload, frozen=True, kw_only=True):
    KIND = Kind.CONFIG_REVERTED
    digest: Opt = None
    reason: str = ""
    tried: Opt = None


@_reg
class ConfigConfirmed(Payload, frozen=True, kw_only=True):
    KIND = Kind.CONFIG_CONFIRMED
    digest: Opt = None


@_reg
class ImageInstalled(Payload, frozen=True, kw_only=True):
    KIND = Kind.IMAGE_INSTALLED
    slot: str
    version: Opt = None
    digest: Opt = None
    key_id: Opt = None


@_reg
class ImageMeasured(Payload, frozen=True, kw_only=True):
    KIND = Kind.IMAGE_MEASURED
    slot: Opt = None
    version: Opt = None
    digest: Opt = None


# -- the API and the agent's services --------------------------------------------------------------------------------
@_reg
class ApiRequest(Payload, frozen=True, kw_only=True):
    KIND = Kind.API_REQUEST
    method: str = ""
    args: dict[str, object] = msgspec.field(default_factory=dict)


@_reg
class ApiDenied(Payload, frozen=True, kw_only=True):
    KIND = Kind.API_DENIED
    method: str = ""
    subject: str = ""
    roles: list[str] = msgspec.field(default_factory=list)
    reason: str = ""


@_reg
class ApiRefused(Payload, frozen=True, kw_only=True):
    KIND = Kind.API_REFUSED
    method: str = ""
    request_seq: int | None = None
    reason: str = ""
    code: Opt = None
    holder: Opt = None


def api_denied(method: str, actor: Actor, reason: str) -> dict[str, object]:
    """The payload of an ``api.denied`` event: the method, who asked (subject and roles) and why not."""
    return {"method": method, "subject": actor.id, "roles": list(actor.roles), "reason": reason}


def api_refused(method: str, request_seq: int | None, error: GravenError, /, **more: object) -> dict[str, object]:
    """The payload of an ``api.refused`` event: the request (method, seq of its ``api.request``), the error's
    message and code, and ``more`` (which wins over those)."""
    return {"method": method, "request_seq": request_seq, "reason": error.message, "code": error.code.name, **more}


class _Service(Payload, frozen=True, kw_only=True):
    service: str = ""
    address: Opt = None


@_reg
class ServiceStarted(_Service, frozen=True, kw_only=True):
    KIND = Kind.SERVICE_STARTED


@_reg
class ServiceStopped(_Service, frozen=True, kw_only=True):
    KIND = Kind.SERVICE_STOPPED


@_reg
class ServiceFailed(_Service, frozen=True, kw_only=True):
    KIND = Kind.SERVICE_FAILED
    reason: str = ""


@_reg
class AuditShipped(Payload, frozen=True, kw_only=True):
    KIND = Kind.AUDIT_SHIPPED
    sink: str = ""
    file: str = ""
    to_seq: int | None = None
    events: int = 0


# -- the network ------------------------------------------------------------------------------------------------------
@_reg
class NetworkPlanned(Payload, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_PLANNED
    interfaces: object = None
    applied: bool = False
    why: str = ""


class _NetworkChange(Payload, frozen=True, kw_only=True):
    interface: str = ""
    before: object = None
    after: object = None


@_reg
class NetworkLink(_NetworkChange, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_LINK
    change: str = ""


@_reg
class NetworkAddress(_NetworkChange, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_ADDRESS
    op: str = ""


@_reg
class NetworkRoute(_NetworkChange, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_ROUTE
    op: str = ""


@_reg
class NetworkHostname(Payload, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_HOSTNAME
    before: Opt = None
    after: Opt = None
    applied: bool = False
    why: Opt = None


@_reg
class NetworkResolvers(Payload, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_RESOLVERS
    path: str = ""
    before: object = None
    after: object = None


@_reg
class NetworkFailed(Payload, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_FAILED
    interface: Opt = None
    op: Opt = None
    target: object = None
    error: str = ""
    errno: int | None = None


@_reg
class NetworkApplied(Payload, frozen=True, kw_only=True):
    KIND = Kind.NETWORK_APPLIED
    platform: str = ""
    changes: int = 0
    failed: int = 0
    summary: object = None
    interfaces: list[str] = msgspec.field(default_factory=list)
    notes: object = None


# -- etcd -------------------------------------------------------------------------------------------------------------
@_reg
class EtcdWaiting(Payload, frozen=True, kw_only=True, rename={"for_": "for"}):
    KIND = Kind.ETCD_WAITING
    for_: str = ""
    reason: str = ""


@_reg
class EtcdStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_STARTED
    pid: int | None = None
    initial_cluster_state: str = ""
    why: str = ""
    client_url: str = ""
    peer_url: str = ""


@_reg
class EtcdExited(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_EXITED
    code: int | None = None
    reason: str = ""
    quick_exits: int = 0


@_reg
class EtcdFailed(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_FAILED
    reason: str = ""


@_reg
class EtcdStopped(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_STOPPED
    reason: str = ""
    code: int | None = None


@_reg
class EtcdHealth(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_HEALTH
    healthy: bool = False
    reason: str = ""
    member_id: str = ""


@_reg
class EtcdBootstrapped(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_BOOTSTRAPPED
    member_id: str = ""
    name: str = ""


@_reg
class EtcdJoined(Payload, frozen=True, kw_only=True, rename={"as_": "as"}):
    KIND = Kind.ETCD_JOINED
    member_id: str = ""
    as_: str = ""
    through: list[str] = msgspec.field(default_factory=list)


@_reg
class EtcdPromoted(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_PROMOTED
    member_id: str = ""


@_reg
class EtcdLeft(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_LEFT
    member_id: str = ""


@_reg
class EtcdLocked(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_LOCKED
    lock: str = ""
    holder: str = ""
    ttl: int | float | None = None


@_reg
class EtcdUnlocked(Payload, frozen=True, kw_only=True):
    KIND = Kind.ETCD_UNLOCKED
    lock: str = ""
    holder: str = ""


# -- witnessed logs ---------------------------------------------------------------------------------------------------
@_reg
class WitnessStarted(Payload, frozen=True, kw_only=True):
    KIND = Kind.WITNESS_STARTED
    witness: str = ""
    key_id: str = ""
    holds: list[str] = msgspec.field(default_factory=list)


@_reg
class WitnessAdopted(Payload, frozen=True, kw_only=True):
    KIND = Kind.WITNESS_ADOPTED
    origin: str = ""
    size: int = 0
    root: object = None  # the checkpoint's root hash as the witness holds it
    witness: str = ""


@_reg
class WitnessRefused(Payload, frozen=True, kw_only=True):
    KIND = Kind.WITNESS_REFUSED
    origin: str = ""
    size: int = 0
    reason: str = ""
    message: str = ""
    code: Opt = None
    witnessed_size: int | None = None


@_reg
class WitnessForgotten(Payload, frozen=True, kw_only=True):
    KIND = Kind.WITNESS_FORGOTTEN
    origin: str = ""
    witness: str = ""
    size: int = 0
    root: str = ""  # hex of the root the witness held
    actor: str = ""


@_reg
class WitnessUnpublished(Payload, frozen=True, kw_only=True):
    KIND = Kind.WITNESS_UNPUBLISHED
    size: int = 0
    reason: str = ""
