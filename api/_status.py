"""Graven errors as gRPC status: the code (``Code`` to ``google.rpc.Code``), the message and an ``ErrorDetail``
with the error's own code and details, each clipped to what one refusal may send."""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from config.limits import clip_utf8
from errors import Code, GravenError

from ._pb import machine_pb2 as pb

__all__ = ["error_status", "fit_details", "fit_message"]

_GRPC_CODE = {
    Code.LOCKED: code_pb2.FAILED_PRECONDITION,
    Code.TRANSITION_REJECTED: code_pb2.FAILED_PRECONDITION,
    Code.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    Code.NOT_FOUND: code_pb2.NOT_FOUND,
    Code.UNAVAILABLE: code_pb2.UNAVAILABLE,
    Code.CANCELLED: code_pb2.ABORTED,
    Code.TASK_TIMEOUT: code_pb2.DEADLINE_EXCEEDED,
    Code.DISK_FULL: code_pb2.RESOURCE_EXHAUSTED,
    Code.TOO_LARGE: code_pb2.RESOURCE_EXHAUSTED,
    Code.BAD_IMAGE: code_pb2.INVALID_ARGUMENT,  # in a reply, always the image the client gave
    Code.UNTRUSTED_KEY: code_pb2.INVALID_ARGUMENT,
    Code.INVARIANT: code_pb2.INTERNAL,
}



def _status(code: int, message: str, detail: pb.ErrorDetail) -> grpc.Status:
    st = status_pb2.Status(code=code, message=message)
    st.details.add().Pack(detail)
    return rpc_status.to_status(st)


# What one refusal may send (limit status_bytes, 8 KiB): the message goes out twice in the status details
# (base64, 4/3) and once percent-encoded in grpc-message; the details JSON once in the status details.
_MESSAGE_BYTES = 1024
_DETAILS_BYTES = 2048


def error_status(exc: GravenError) -> grpc.Status:
    code = _GRPC_CODE.get(exc.code, code_pb2.INVALID_ARGUMENT if exc.code.value >= 40 else code_pb2.FAILED_PRECONDITION)
    message = fit_message(exc.message, _MESSAGE_BYTES)
    detail = pb.ErrorDetail(code=exc.code.name, message=message,
                            details_json=fit_details(exc.plain_details(), _DETAILS_BYTES))
    return _status(code, message, detail)


def _encoded_len(data: bytes) -> int:
    """Length of ``data`` as grpc-message sends it (percent-encoding all but printable ASCII)."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in data)


def fit_message(message: str, max_bytes: int) -> str:
    """``message`` clipped so that its percent-encoded form fits ``max_bytes``."""
    if _encoded_len(message.encode()) <= max_bytes:
        return message
    head, _, last = message.rpartition("\n")
    tail = f"\n{last}" if head and _encoded_len(last.encode()) < max_bytes // 4 else ""
    if not tail:
        head = message
    room = max_bytes - _encoded_len(tail.encode())
    out = clip_utf8(head, room // 3)
    for cut in range(room // 3, room, 32):
        longer = clip_utf8(head, cut)
        if _encoded_len(longer.encode()) > room:
            break
        out = longer
    return out + tail


def fit_details(details: Mapping[str, object], max_bytes: int) -> str:
    """The details as JSON within ``max_bytes``: long lists lose their tail (counted in ``<key>_omitted``), long
    strings are clipped, and if that is not enough only the scalars are kept."""
    text = json.dumps(details, default=str)
    if len(text) <= max_bytes:
        return text
    slim: dict[str, object] = {}
    for key, value in details.items():
        if isinstance(value, str):
            slim[key] = clip_utf8(value, 200)
        elif isinstance(value, list | int | float | bool) or value is None:
            slim[key] = value
    for key, value in list(slim.items()):
        if not isinstance(value, list):
            continue
        kept = list(value)
        while kept and len(json.dumps({**slim, key: kept, f"{key}_omitted": len(value)}, default=str)) > max_bytes:
            kept = kept[: len(kept) // 2]
        if len(kept) < len(value):
            slim[key] = kept
            slim[f"{key}_omitted"] = len(value) - len(kept)
    text = json.dumps(slim, default=str)
    if len(text) <= max_bytes:
        return text
    scalars = {k: v for k, v in slim.items() if not isinstance(v, list | dict | str)}
    return json.dumps({**scalars, "details_clipped": True}, default=str)[:max_bytes]
