from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[Code]
    STORAGE: _ClassVar[Code]
    DISK_FULL: _ClassVar[Code]
    LOG_LOCKED: _ClassVar[Code]
    LOG_READ_ONLY: _ClassVar[Code]
    VERIFICATION: _ClassVar[Code]
    TAMPERED_LOG: _ClassVar[Code]
    UNTRUSTED_KEY: _ClassVar[Code]
    BAD_IMAGE: _ClassVar[Code]
    WITNESS_REFUSED: _ClassVar[Code]
    TRANSITION_REJECTED: _ClassVar[Code]
    LOCKED: _ClassVar[Code]
    CANCELLED: _ClassVar[Code]
    TASK_TIMEOUT: _ClassVar[Code]
    NOT_FOUND: _ClassVar[Code]
    UNAVAILABLE: _ClassVar[Code]
    PERMISSION_DENIED: _ClassVar[Code]
    QUORUM_AT_RISK: _ClassVar[Code]
    INVALID_REQUEST: _ClassVar[Code]
    INVALID_CONFIG: _ClassVar[Code]
    INVALID_EVENT: _ClassVar[Code]
    LIMIT_EXCEEDED: _ClassVar[Code]
    TOO_LARGE: _ClassVar[Code]
    INVARIANT: _ClassVar[Code]

class ApplyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTO: _ClassVar[ApplyMode]
    NO_REBOOT: _ClassVar[ApplyMode]
    REBOOT: _ClassVar[ApplyMode]
    STAGED: _ClassVar[ApplyMode]
    TRY: _ClassVar[ApplyMode]
UNKNOWN: Code
STORAGE: Code
DISK_FULL: Code
LOG_LOCKED: Code
LOG_READ_ONLY: Code
VERIFICATION: Code
TAMPERED_LOG: Code
UNTRUSTED_KEY: Code
BAD_IMAGE: Code
WITNESS_REFUSED: Code
TRANSITION_REJECTED: Code
LOCKED: Code
CANCELLED: Code
TASK_TIMEOUT: Code
NOT_FOUND: Code
UNAVAILABLE: Code
PERMISSION_DENIED: Code
QUORUM_AT_RISK: Code
INVALID_REQUEST: Code
INVALID_CONFIG: Code
INVALID_EVENT: Code
LIMIT_EXCEEDED: Code
TOO_LARGE: Code
INVARIANT: Code
AUTO: ApplyMode
NO_REBOOT: ApplyMode
REBOOT: ApplyMode
STAGED: ApplyMode
TRY: ApplyMode

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "details_json")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    code: Code
    message: str
    details_json: str
    def __init__(self, code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Actor(_message.Message):
    __slots__ = ("id", "roles")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version", "image_digest", "slot", "boot_id", "node", "kernel", "os_image", "provisioner")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    OS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROVISIONER_FIELD_NUMBER: _ClassVar[int]
    version: str
    image_digest: str
    slot: str
    boot_id: str
    node: str
    kernel: str
    os_image: str
    provisioner: str
    def __init__(self, version: _Optional[str] = ..., image_digest: _Optional[str] = ..., slot: _Optional[str] = ..., boot_id: _Optional[str] = ..., node: _Optional[str] = ..., kernel: _Optional[str] = ..., os_image: _Optional[str] = ..., provisioner: _Optional[str] = ...) -> None: ...

class Fallback(_message.Message):
    __slots__ = ("from_slot", "to_slot", "reason", "seq")
    FROM_SLOT_FIELD_NUMBER: _ClassVar[int]
    TO_SLOT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    from_slot: str
    to_slot: str
    reason: str
    seq: int
    def __init__(self, from_slot: _Optional[str] = ..., to_slot: _Optional[str] = ..., reason: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class RunningSequence(_message.Message):
    __slots__ = ("name", "actor", "started_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STARTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    actor: Actor
    started_seq: int
    def __init__(self, name: _Optional[str] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ..., started_seq: _Optional[int] = ...) -> None: ...

class MachineStatusResponse(_message.Message):
    __slots__ = ("stage", "ready", "slot", "version", "sequence", "last_fallback", "boot_id", "log_next_seq", "config_digest", "staged_config_digest", "node", "details_json")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STAGED_CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ready: bool
    slot: str
    version: str
    sequence: RunningSequence
    last_fallback: Fallback
    boot_id: str
    log_next_seq: int
    config_digest: str
    staged_config_digest: str
    node: str
    details_json: str
    def __init__(self, stage: _Optional[str] = ..., ready: _Optional[bool] = ..., slot: _Optional[str] = ..., version: _Optional[str] = ..., sequence: _Optional[_Union[RunningSequence, _Mapping]] = ..., last_fallback: _Optional[_Union[Fallback, _Mapping]] = ..., boot_id: _Optional[str] = ..., log_next_seq: _Optional[int] = ..., config_digest: _Optional[str] = ..., staged_config_digest: _Optional[str] = ..., node: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class ApplyConfigurationRequest(_message.Message):
    __slots__ = ("data", "mode", "dry_run", "try_timeout_seconds")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TRY_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mode: ApplyMode
    dry_run: bool
    try_timeout_seconds: int
    def __init__(self, data: _Optional[bytes] = ..., mode: _Optional[_Union[ApplyMode, str]] = ..., dry_run: _Optional[bool] = ..., try_timeout_seconds: _Optional[int] = ...) -> None: ...

class ApplyConfigurationResponse(_message.Message):
    __slots__ = ("mode", "diff_json", "digest", "seq", "reboot_required", "warnings")
    MODE_FIELD_NUMBER: _ClassVar[int]
    DIFF_JSON_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REBOOT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    mode: ApplyMode
    diff_json: str
    digest: str
    seq: int
    reboot_required: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mode: _Optional[_Union[ApplyMode, str]] = ..., diff_json: _Optional[str] = ..., digest: _Optional[str] = ..., seq: _Optional[int] = ..., reboot_required: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConfigurationResponse(_message.Message):
    __slots__ = ("data", "digest", "redacted")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    digest: str
    redacted: bool
    def __init__(self, data: _Optional[bytes] = ..., digest: _Optional[str] = ..., redacted: _Optional[bool] = ...) -> None: ...

class SequenceAccepted(_message.Message):
    __slots__ = ("sequence", "seq", "actor")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    sequence: str
    seq: int
    actor: Actor
    def __init__(self, sequence: _Optional[str] = ..., seq: _Optional[int] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ...) -> None: ...

class UpgradeRequest(_message.Message):
    __slots__ = ("chunk", "url", "stage", "total_size", "force")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    url: str
    stage: bool
    total_size: int
    force: bool
    def __init__(self, chunk: _Optional[bytes] = ..., url: _Optional[str] = ..., stage: _Optional[bool] = ..., total_size: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("wipe", "graceful", "reboot", "force")
    WIPE_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_FIELD_NUMBER: _ClassVar[int]
    REBOOT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    wipe: _containers.RepeatedScalarFieldContainer[str]
    graceful: bool
    reboot: bool
    force: bool
    def __init__(self, wipe: _Optional[_Iterable[str]] = ..., graceful: _Optional[bool] = ..., reboot: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class RebootRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: _Optional[bool] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: _Optional[bool] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("since_seq", "tail_events", "follow", "kinds", "actor")
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    TAIL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    since_seq: int
    tail_events: int
    follow: bool
    kinds: _containers.RepeatedScalarFieldContainer[str]
    actor: str
    def __init__(self, since_seq: _Optional[int] = ..., tail_events: _Optional[int] = ..., follow: _Optional[bool] = ..., kinds: _Optional[_Iterable[str]] = ..., actor: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("raw", "next_seq")
    RAW_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    raw: _containers.RepeatedScalarFieldContainer[bytes]
    next_seq: int
    def __init__(self, raw: _Optional[_Iterable[bytes]] = ..., next_seq: _Optional[int] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("service", "since", "tail", "follow")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    since: int
    tail: int
    follow: bool
    def __init__(self, service: _Optional[str] = ..., since: _Optional[int] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("lines", "first_position", "next_position")
    LINES_FIELD_NUMBER: _ClassVar[int]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[bytes]
    first_position: int
    next_position: int
    def __init__(self, lines: _Optional[_Iterable[bytes]] = ..., first_position: _Optional[int] = ..., next_position: _Optional[int] = ...) -> None: ...

class DmesgRequest(_message.Message):
    __slots__ = ("tail", "follow")
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    tail: int
    follow: bool
    def __init__(self, tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class AuditExportRequest(_message.Message):
    __slots__ = ("from_seq", "to_seq")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    to_seq: int
    def __init__(self, from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class BootTraceRequest(_message.Message):
    __slots__ = ("boot", "boot_id", "format")
    BOOT_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    boot: int
    boot_id: str
    format: str
    def __init__(self, boot: _Optional[int] = ..., boot_id: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class BootTraceResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ConfigNewRequest(_message.Message):
    __slots__ = ("roles", "ttl_seconds", "name")
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedScalarFieldContainer[str]
    ttl_seconds: int
    name: str
    def __init__(self, roles: _Optional[_Iterable[str]] = ..., ttl_seconds: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class ConfigNewResponse(_message.Message):
    __slots__ = ("ca_crt", "crt", "key")
    CA_CRT_FIELD_NUMBER: _ClassVar[int]
    CRT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ca_crt: bytes
    crt: bytes
    key: bytes
    def __init__(self, ca_crt: _Optional[bytes] = ..., crt: _Optional[bytes] = ..., key: _Optional[bytes] = ...) -> None: ...

class NetworkResource(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class ResourcesRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: str
    def __init__(self, kind: _Optional[str] = ...) -> None: ...

class ResourcesResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class NetworkRequest(_message.Message):
    __slots__ = ("what",)
    WHAT_FIELD_NUMBER: _ClassVar[int]
    what: str
    def __init__(self, what: _Optional[str] = ...) -> None: ...

class NetworkResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class EtcdRequest(_message.Message):
    __slots__ = ("action", "args_json")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    action: str
    args_json: str
    def __init__(self, action: _Optional[str] = ..., args_json: _Optional[str] = ...) -> None: ...

class EtcdResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...
