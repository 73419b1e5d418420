"""The guard at the door: every request body is decoded without raising and checked against the named limits,
and every handler's failure leaves as a status with an ``ErrorDetail`` (never gRPC's ``UNKNOWN``).

gRPC's generated ``add_..._to_server`` decodes with ``FromString``, whose ``DecodeError`` reaches the client as
``UNKNOWN "Unexpected DecodeError"``. Here the handlers are built from the service descriptor with a decoder that
returns ``Undecodable`` instead, and the handler refuses it with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import grpc
from google.protobuf import descriptor, message, unknown_fields

from config.limits import LIMITS, Limits
from errors import GravenError, InvalidRequest, InvariantViolation, LimitExceeded
from events import Actor

from ._memory import BIG_REQUEST, trim

__all__ = ["Ctx", "Undecodable", "add_service", "check_request", "decoder", "guarded", "guarded_stream"]

log = logging.getLogger("graven.api")

# Fields whose strings are not short names: the config document, upload chunks, the upgrade URL, JSON arguments.
_LONG_FIELDS = {"data", "chunk", "url", "args_json", "json"}


class Ctx(Protocol):
    """What the handlers use of grpc.aio's servicer context (grpc ships no types of its own)."""

    def auth_context(self) -> Mapping[str, Sequence[bytes]]: ...

    async def abort_with_status(self, status: grpc.Status) -> None: ...


class Authorizing(Protocol):
    """The servicer as the guard sees it: it names the caller of a method, or refuses it."""

    async def authorize(self, method: str, context: Ctx) -> Actor: ...


class Undecodable:
    """A request body that is not the method's message (or carries fields this node does not know)."""

    def __init__(self, type_name: str, size: int, reason: str) -> None:
        self.type_name = type_name
        self.size = size
        self.reason = reason

    def error(self) -> InvalidRequest:
        return InvalidRequest(f"the request body ({self.size} bytes) is not a valid {self.type_name}: {self.reason}",
                              message_type=self.type_name, size=self.size)


def decoder(cls: type[message.Message]) -> Callable[[bytes], message.Message | Undecodable]:
    """``cls.FromString`` that never raises: an undecodable body becomes ``Undecodable``."""
    name = cls.DESCRIPTOR.full_name

    def decode(data: bytes) -> message.Message | Undecodable:
        try:
            msg = cls.FromString(data)
        except Exception as exc:  # DecodeError, or whatever the C decoder raises on garbage
            return Undecodable(name, len(data), str(exc) or type(exc).__name__)
        unknown = unknown_fields.UnknownFieldSet(msg)
        if len(unknown):
            numbers = sorted({unknown[i].field_number for i in range(len(unknown))})[:8]
            return Undecodable(name, len(data), f"unknown field number(s) {numbers}: not a {name}, or sent by a "
                                                f"newer client than this node")
        return msg

    return decode


def check_request(msg: message.Message, limits: Limits = LIMITS) -> None:
    """Short strings and short lists stay short (``name_bytes``, ``list_items``; a URL ``URL_BYTES``)."""
    for field, value in msg.ListFields():
        where = f"{msg.DESCRIPTOR.name}.{field.name}"
        if field.name in _LONG_FIELDS:
            if field.name == "url" and len(value.encode()) > limits.url_bytes:
                raise LimitExceeded(f"{where} is {len(value.encode())} bytes; the limit is {limits.url_bytes} "
                                    f"(limit url_bytes)", limit="url_bytes", value=len(value.encode()),
                                    max=limits.url_bytes, field=where)
            continue
        if field.is_repeated:
            if len(value) > limits.list_items:
                raise LimitExceeded(f"{where} has {len(value)} items; the limit is {limits.list_items} "
                                    f"(limit list_items)", limit="list_items", value=len(value),
                                    max=limits.list_items, field=where)
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, str | bytes) and len(item) > limits.name_bytes:
                raise LimitExceeded(f"{where} is {len(item)} bytes long; the limit is {limits.name_bytes} "
                                    f"(limit name_bytes)", limit="name_bytes", value=len(item),
                                    max=limits.name_bytes, field=where)


def first_problem(request: object) -> GravenError | None:
    """Why a decoded request is refused before its handler runs, if it is."""
    if isinstance(request, Undecodable):
        return request.error()
    if not isinstance(request, message.Message):
        return None
    try:
        check_request(request)
    except GravenError as exc:
        return exc
    return None


def internal(method: str, exc: BaseException) -> InvariantViolation:
    """What a client sees of a bug: a stable code and the exception's type, never the node's internals."""
    log.error("%s failed unexpectedly:\n%s", method, "".join(traceback.format_exception(exc)))
    return InvariantViolation(f"{method} failed inside the node ({type(exc).__name__}); the node logged it",
                              method=method, exception=type(exc).__name__)


T = TypeVar("T")
M = TypeVar("M")
Abort = Callable[[Ctx, GravenError], Awaitable[None]]


_STREAMED = {"Upgrade", "EtcdRecover"}
_trimming: set[asyncio.Task[None]] = set()


def _trim_soon() -> None:
    """``malloc_trim`` off the event loop once the request's buffers are freed (one at a time)."""
    if _trimming:
        return
    task = asyncio.get_running_loop().create_task(_trim())
    _trimming.add(task)
    task.add_done_callback(_trimming.discard)


async def _trim() -> None:
    await asyncio.sleep(0.05)  # the handler's frame, the request and the call's buffers go first
    await asyncio.to_thread(trim)


def _bare(exc: GravenError) -> GravenError:
    """The error without its traceback and context: gRPC keeps an abort's exception in a reference cycle with
    the call, and a traceback's frames would keep the request (MiBs of hostile body) alive until a full
    collection, which the agent's collector settings make rare."""
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return exc


def guarded(method: str, abort: Abort) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """For a unary-response handler ``fn(self, request, context, actor)``: authorize (``self.authorize``), refuse
    an undecodable or out-of-range request, and map every exception that is not gRPC's own (an abort, a
    cancellation) to a status with an ``ErrorDetail``."""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def handler(self: Authorizing, request: object, context: Ctx) -> T:
            big = method in _STREAMED or (isinstance(request, message.Message) and request.ByteSize() >= BIG_REQUEST)
            try:
                actor = await self.authorize(method, context)
                problem = None if isinstance(request, AsyncIterator) else first_problem(request)
                if problem is None:
                    return await fn(self, request, context, actor)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except GravenError as exc:
                problem = exc
            except Exception as exc:
                problem = internal(method, exc)
            finally:
                if big:
                    _trim_soon()
            request = None  # not kept alive by the abort's traceback
            await abort(context, _bare(problem))
            raise AssertionError("unreachable: abort raises")

        return handler

    return wrap


def guarded_stream(method: str, abort: Abort
                   ) -> Callable[[Callable[..., AsyncIterator[T]]], Callable[..., AsyncIterator[T]]]:
    """``guarded`` for a server-streaming handler (an async generator)."""

    def wrap(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
        @functools.wraps(fn)
        async def handler(self: Authorizing, request: object, context: Ctx) -> AsyncIterator[T]:
            try:
                actor = await self.authorize(method, context)
                problem = first_problem(request)
                if problem is None:
                    async for item in fn(self, request, context, actor):
                        yield item
                    return
            except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
                raise
            except GravenError as exc:
                problem = exc
            except Exception as exc:
                problem = internal(method, exc)
            request = None
            await abort(context, _bare(problem))

        return handler

    return wrap


async def checked_stream(requests: AsyncIterator[M]) -> AsyncIterator[M]:
    """A client-streaming request's messages, each refused like a unary request's."""
    async for msg in requests:
        problem = first_problem(msg)
        if problem is not None:
            raise problem
        yield msg


def shielded_stream(fn: Callable[[object, Ctx], AsyncIterator[object]], abort: Abort
                    ) -> Callable[[object, Ctx], AsyncIterator[object]]:
    """Another library's streaming handler (health's Watch) behind the same decoder: an undecodable body is refused
    here."""
    async def stream(request: object, context: Ctx) -> AsyncIterator[object]:
        if isinstance(request, Undecodable):
            await abort(context, request.error())
        async for item in fn(request, context):
            yield item

    return stream


def shielded(fn: Callable[[object, Ctx], Awaitable[object]], abort: Abort
             ) -> Callable[[object, Ctx], Awaitable[object]]:
    """Another library's handler (health) behind the same decoder: an undecodable body is refused here."""
    async def unary(request: object, context: Ctx) -> object:
        if isinstance(request, Undecodable):
            await abort(context, request.error())
        return await fn(request, context)

    return unary


def add_service(servicer: object, server: grpc.aio.Server, service: descriptor.ServiceDescriptor,
                classes: Callable[[descriptor.Descriptor], type[message.Message]], abort: Abort | None = None) -> None:
    """Register ``servicer``'s methods for ``service`` with decoders that never raise; with ``abort``, the
    servicer is another library's and its methods are ``shielded``."""
    handlers = {}
    for m in service.methods:
        if not hasattr(servicer, m.name):
            continue
        kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[(m.client_streaming, m.server_streaming)]
        fn = getattr(servicer, m.name)
        if abort is not None:
            fn = shielded_stream(fn, abort) if m.server_streaming else shielded(fn, abort)
        handlers[m.name] = kind(fn, request_deserializer=decoder(classes(m.input_type)),
                                response_serializer=classes(m.output_type).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
