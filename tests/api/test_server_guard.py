"""The real server (``api._server.Server``) over TCP: bodies that are not their message, for every method of
every service it serves, are INVALID_ARGUMENT with an ErrorDetail; a bug in a handler is INTERNAL, not UNKNOWN."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2

from api._pb import machine_pb2 as pb
from api._rbac import MAINTENANCE_METHODS
from api._server import Server

GARBAGE = b"\xff\xff\xff\xff"


class MaintenanceNode:  # a node in maintenance mode: every caller may ask, only ApplyConfiguration is served
    maintenance = True

    async def apply_config(self, *args: Any) -> Any:
        raise ZeroDivisionError("a bug")


def _detail(exc: grpc.aio.AioRpcError) -> int | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            detail = pb.ErrorDetail()
            status_pb2.Status.FromString(value).details[0].Unpack(detail)
            return detail.code
    return None


async def _call(ch: grpc.aio.Channel, path: str, body: bytes, server_streaming: bool, client_streaming: bool
                ) -> grpc.aio.AioRpcError:
    try:
        if client_streaming:
            await ch.stream_unary(path)(iter([body]), timeout=5)
        elif server_streaming:
            async for _ in ch.unary_stream(path)(body, timeout=5):
                pass
        else:
            await ch.unary_unary(path)(body, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"{path} accepted {body!r}")


async def _every_method() -> list[tuple[str, grpc.StatusCode, int | None]]:
    node: Any = MaintenanceNode()
    server = Server(node, "127.0.0.1:0", grpc.local_server_credentials())
    await server.start()
    out = []
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", grpc.local_channel_credentials()) as ch:
            services = [pb.DESCRIPTOR.services_by_name["MachineService"],
                        health_pb2.DESCRIPTOR.services_by_name["Health"]]
            for service in services:
                for m in service.methods:
                    exc = await _call(ch, f"/{service.full_name}/{m.name}", GARBAGE, m.server_streaming,
                                      m.client_streaming)
                    out.append((m.name, exc.code(), _detail(exc)))
            exc = await _call(ch, "/graven.machine.v1.MachineService/ApplyConfiguration",
                              pb.ApplyConfigurationRequest(data=b"x").SerializeToString(), False, False)
            out.append(("bug", exc.code(), _detail(exc)))
    finally:
        await server.stop(0)
    return out


def test_every_method_of_every_service_refuses_garbage_and_a_bug_is_internal() -> None:
    results = asyncio.run(_every_method())
    *refusals, bug = results
    assert len(refusals) > 20
    # in maintenance mode only some methods are served: the others are refused before their body is read
    want = {name: (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
            if name in MAINTENANCE_METHODS or name in ("Check", "Watch", "List")
            else (grpc.StatusCode.PERMISSION_DENIED, pb.PERMISSION_DENIED) for name, _, _ in refusals}
    assert {name: (code, detail) for name, code, detail in refusals} == want
    assert bug[1:] == (grpc.StatusCode.INTERNAL, pb.INVARIANT)


if __name__ == "__main__":
    pytest.main([__file__])
