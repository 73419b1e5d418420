"""Every API call timed and counted by method and gRPC status code, as a server interceptor: the handlers do not
know it is there."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import grpc

__all__ = ["CallObserver", "served_methods"]

Observe = Callable[[str, str, float], None]  # method, status code name, seconds


class _Coded(Protocol):
    """What the observer reads of a servicer context: the status code the call ended with."""

    def code(self) -> object: ...


class _Handler(Protocol):
    """grpc's ``RpcMethodHandler`` (grpc ships no types): one behaviour is set, for the call's cardinality."""

    request_deserializer: Callable[[bytes], object] | None
    response_serializer: Callable[[object], bytes] | None
    unary_unary: Unary | None
    stream_unary: Unary | None
    unary_stream: Streaming | None
    stream_stream: Streaming | None


Unary = Callable[[object, _Coded], Awaitable[object]]
Streaming = Callable[[object, _Coded], AsyncIterator[object]]


def _code(context: _Coded, failed: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if code is None or code == 0:
        return "UNKNOWN" if failed is not None and not isinstance(failed, grpc.aio.AbortError) else "OK"
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")


def served_methods() -> frozenset[str]:
    """The method names a call may be counted under; any other path a client sends is counted as ``other``, so a
    client cannot grow the metrics by inventing names."""
    from ._pb import machine_pb2

    machine = machine_pb2.DESCRIPTOR.services_by_name["MachineService"]
    return frozenset(m.name for m in machine.methods) | {"Check", "Watch", "ServerReflectionInfo"}


class CallObserver(grpc.aio.ServerInterceptor):
    def __init__(self, observe: Observe) -> None:
        self._observe = observe
        self._known = served_methods()

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
                                handler_call_details: grpc.HandlerCallDetails) -> object:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        method = method if method in self._known else "other"
        observe = self._observe

        def unary(behavior: Unary) -> Unary:
            async def timed(request: object, context: _Coded) -> object:
                start, failed = time.perf_counter(), None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    observe(method, _code(context, failed), time.perf_counter() - start)
            return timed

        def streaming(behavior: Streaming) -> Streaming:
            async def timed(request: object, context: _Coded) -> AsyncIterator[object]:
                start, failed = time.perf_counter(), None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    observe(method, _code(context, failed), time.perf_counter() - start)
            return timed

        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)
        return handler
