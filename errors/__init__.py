"""The one error tree of Graven. Every leaf carries a stable ``code`` mirrored by ``Code`` in
``specs/machine.proto``; only ``api/`` maps these to gRPC status.

    GravenError
    ├── OperationalError            the world is not as the request needs
    │   ├── StorageError            LMDB, disk, META
    │   │   ├── DiskFull
    │   │   ├── LogLocked           another process writes this log
    │   │   └── LogReadOnly         the log failed verification at open
    │   ├── VerificationError       a chain, signature, proof or image does not verify
    │   │   ├── TamperedLog         names the first bad seq
    │   │   ├── UntrustedKey
    │   │   ├── BadImage
    │   │   └── WitnessRefused      a witness will not cosign a checkpoint (rollback, fork, untrusted key...)
    │   ├── TransitionRejected      the FSM refuses a trigger in this stage
    │   ├── Locked                  another sequence runs and may not be taken over
    │   ├── Cancelled
    │   ├── TaskTimeout
    │   ├── NotFound
    │   ├── Unavailable             the node cannot be reached, or is not ready
    │   ├── PermissionDenied
    │   └── QuorumAtRisk            a controlplane node going down would leave etcd without quorum
    ├── InvalidRequest              bad input
    │   ├── InvalidConfig           carries every problem with its path
    │   ├── InvalidEvent            an append that would break the chain
    │   └── LimitExceeded           a named limit (specs/limits.md): ``limit``, ``value``, ``max``
    │       └── TooLarge            a size limit (gRPC RESOURCE_EXHAUSTED)
    └── InvariantViolation          a bug in Graven
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "BadImage",
    "Cancelled",
    "Code",
    "DiskFull",
    "GravenError",
    "InvalidConfig",
    "InvalidEvent",
    "InvalidRequest",
    "InvariantViolation",
    "LimitExceeded",
    "Locked",
    "LogLocked",
    "LogReadOnly",
    "NotFound",
    "OperationalError",
    "PermissionDenied",
    "QuorumAtRisk",
    "StorageError",
    "TamperedLog",
    "TaskTimeout",
    "TooLarge",
    "TransitionRejected",
    "Unavailable",
    "UntrustedKey",
    "VerificationError",
    "WitnessRefused",
    "error_for_code",
]


class Code(enum.IntEnum):
    """Stable error codes; the numbers are part of the API (``specs/machine.proto`` ``Code``)."""

    UNKNOWN = 0
    STORAGE = 10
    DISK_FULL = 11
    LOG_LOCKED = 12
    LOG_READ_ONLY = 13
    VERIFICATION = 20
    TAMPERED_LOG = 21
    UNTRUSTED_KEY = 22
    BAD_IMAGE = 23
    WITNESS_REFUSED = 24
    TRANSITION_REJECTED = 30
    LOCKED = 31
    CANCELLED = 32
    TASK_TIMEOUT = 33
    NOT_FOUND = 34
    UNAVAILABLE = 35
    PERMISSION_DENIED = 36
    QUORUM_AT_RISK = 37
    INVALID_REQUEST = 40
    INVALID_CONFIG = 41
    INVALID_EVENT = 42
    LIMIT_EXCEEDED = 43
    TOO_LARGE = 44
    INVARIANT = 50


class GravenError(Exception):
    """Root of every error Graven raises on purpose."""

    code: ClassVar[Code] = Code.UNKNOWN

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, object] = details

    def plain_details(self) -> dict[str, object]:
        """The details as JSON values (bytes in hex, anything else unknown as its ``str``)."""
        return {str(k): _plain(v) for k, v in self.details.items()}

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code.name, "message": self.message, "details": self.plain_details()}


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class OperationalError(GravenError):
    code = Code.UNKNOWN


class StorageError(OperationalError):
    code = Code.STORAGE


class DiskFull(StorageError):
    code = Code.DISK_FULL


class LogLocked(StorageError):
    code = Code.LOG_LOCKED


class LogReadOnly(StorageError):
    code = Code.LOG_READ_ONLY


class VerificationError(OperationalError):
    code = Code.VERIFICATION


class TamperedLog(VerificationError):
    """The log does not verify; ``seq`` is the first bad event (or the first missing one)."""

    code = Code.TAMPERED_LOG

    def __init__(self, message: str, *, seq: int | None, reason: str, **details: object) -> None:
        super().__init__(message, seq=seq, reason=reason, **details)
        self.seq = seq
        self.reason = reason


class UntrustedKey(VerificationError):
    code = Code.UNTRUSTED_KEY


class BadImage(VerificationError):
    code = Code.BAD_IMAGE


class WitnessRefused(VerificationError):
    """A witness will not cosign a checkpoint; ``reason`` is one of ``events._witness.REASONS`` (``rollback``,
    ``fork``, ``inconsistent``, ``untrusted-key``, ...)."""

    code = Code.WITNESS_REFUSED

    def __init__(self, message: str, *, reason: str, **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class TransitionRejected(OperationalError):
    code = Code.TRANSITION_REJECTED


class Locked(OperationalError):
    """Another sequence runs and the take-over table does not let this request cancel it."""

    code = Code.LOCKED


class Cancelled(OperationalError):
    code = Code.CANCELLED


class TaskTimeout(OperationalError):
    code = Code.TASK_TIMEOUT


class NotFound(OperationalError):
    code = Code.NOT_FOUND


class Unavailable(OperationalError):
    code = Code.UNAVAILABLE


class PermissionDenied(OperationalError):
    code = Code.PERMISSION_DENIED


class QuorumAtRisk(OperationalError):
    """Taking this controlplane node down would leave etcd without quorum; ``details['down']`` names the members
    that are down or unhealthy (``--force`` goes ahead anyway)."""

    code = Code.QUORUM_AT_RISK


class InvalidRequest(GravenError):
    code = Code.INVALID_REQUEST


class InvalidConfig(InvalidRequest):
    """Every problem found in a machine config, each with its path (and YAML line where known)."""

    code = Code.INVALID_CONFIG


class InvalidEvent(InvalidRequest):
    code = Code.INVALID_EVENT


class LimitExceeded(InvalidRequest):
    """A request goes past one of the named limits (``config.limits``): the details name the limit, the value
    seen (or a lower bound of it) and the maximum."""

    code = Code.LIMIT_EXCEEDED

    def __init__(self, message: str, *, limit: str, value: object, max: object, **details: object) -> None:
        super().__init__(message, limit=limit, value=value, max=max, **details)
        self.limit = limit


class TooLarge(LimitExceeded):
    code = Code.TOO_LARGE


class InvariantViolation(GravenError):
    code = Code.INVARIANT


_BY_CODE: dict[Code, type[GravenError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, GravenError):
        _BY_CODE.setdefault(_cls.code, _cls)
_BY_CODE[Code.UNKNOWN] = GravenError


def error_for_code(code: int | str, message: str, details: Mapping[str, object] | None = None) -> GravenError:
    """Rebuild an error on the client side from its stable code."""
    try:
        c = Code[code] if isinstance(code, str) else Code(code)
    except (KeyError, ValueError):
        c = Code.UNKNOWN
    cls = _BY_CODE[c]
    d = dict(details or {})
    if cls is WitnessRefused:
        return WitnessRefused(message, reason=str(d.pop("reason", "unknown")), **d)
    if cls is TamperedLog:
        seq = d.pop("seq", None)
        return TamperedLog(message, seq=seq if isinstance(seq, int) else None, reason=str(d.pop("reason", "unknown")),
                           **d)
    if issubclass(cls, LimitExceeded):
        return cls(message, limit=str(d.pop("limit", "")), value=d.pop("value", None), max=d.pop("max", None), **d)
    return cls(message, **d)
