"""The gRPC server: ``graven.machine.v1.MachineService`` over TCP with mutual TLS, health and reflection.

The servicer authenticates (client certificate → actor and roles), authorizes (``_rbac.RULES``), records
denials as events, maps Graven errors to ``google.rpc.Status`` with an ``ErrorDetail``, and maps proto messages to
the service's typed commands and its typed replies back (``service``). Everything else is the node's: it
implements ``NodeApi``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import io
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import msgspec
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf import descriptor, message
from grpc_health.v1 import health, health_pb2

from config import ApplyMode
from config.limits import LIMITS
from errors import GravenError, InvalidRequest, NotFound, PermissionDenied, TooLarge
from events import Actor, decode_event
from pki import cert_subject
from service import (
    WIPE_ALL,
    Accepted,
    Applied,
    ApplyConfig,
    Command,
    Reboot,
    Reset,
    Rollback,
    Shutdown,
    Status,
    Upgrade,
    VersionInfo,
)

from ._calls import CallObserver, Observe
from ._guard import Ctx, add_service, checked_stream, guarded, guarded_stream
from ._memory import trim_when_grown
from ._pb import machine_pb2 as pb
from ._pb import machine_pb2_grpc as pb_grpc
from ._rbac import ADMIN, MAINTENANCE_METHODS, allowed
from ._status import error_status
from ._upload import Upload

__all__ = ["NodeApi", "Server"]

EVENTS_PER_MESSAGE = 512
LOG_LINES_PER_MESSAGE = 500
class NodeApi(Protocol):
    """What the agent offers the API."""

    @property
    def maintenance(self) -> bool: ...

    @property
    def spool_dir(self) -> Path: ...

    def version(self) -> VersionInfo: ...

    def status(self) -> Status: ...

    async def apply_config(self, cmd: ApplyConfig, actor: Actor) -> Applied: ...

    def get_config(self, redact: bool) -> tuple[bytes, str]: ...

    async def request(self, cmd: Command, actor: Actor) -> Accepted: ...

    async def record_denied(self, method: str, actor: Actor, reason: str) -> None: ...

    def read_raw(self, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]: ...

    def next_seq(self) -> int: ...

    def wait_for(self, seq: int, timeout: float) -> bool: ...

    def boot_trace(self, boot: int, boot_id: str, fmt: str) -> bytes: ...

    def client_config(self, roles: list[str], ttl_seconds: int, name: str) -> tuple[bytes, bytes, bytes]: ...

    def network(self, what: str) -> Rows: ...

    def resources(self, kind: str) -> Rows: ...

    async def etcd_action(self, action: str, args: dict[str, object], actor: Actor, *,
                          manage: bool) -> dict[str, object]: ...

    async def etcd_snapshot(self) -> Path: ...

    async def etcd_recover(self, snapshot: Path, actor: Actor) -> dict[str, object]: ...
    @property
    def logs(self) -> LogSource: ...

    def kernel_log(self, tail: int | None, follow: bool) -> Generator[bytes | None, None, None]: ...


class LogSource(Protocol):
    """The node's service logs (``storage.LogRing``)."""

    def services(self) -> list[str]: ...

    def next_position(self, service: str) -> int: ...

    def read(self, service: str, start: int, limit: int = 500) -> list[tuple[int, bytes]]: ...

    def wait_for(self, service: str, position: int, timeout: float) -> bool: ...


Rows = list[dict[str, object]]  # a table's rows, sent as JSON


def caller(context: Ctx) -> tuple[Actor | None, bool]:
    """The client certificate's subject and roles, and whether it may be used as a client certificate."""
    pems: list[bytes] = list(context.auth_context().get("x509_pem_cert") or [])
    if not pems:
        return None, False
    return _identify(pems[0])


@functools.lru_cache(maxsize=256)
def _identify(pem: bytes) -> tuple[Actor, bool]:
    """Parsing a certificate costs more than the call it comes with: a connection's certificate is parsed once."""
    cert = x509.load_pem_x509_certificate(pem)
    cn, orgs = cert_subject(cert)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_ok = ExtendedKeyUsageOID.CLIENT_AUTH in eku
    except x509.ExtensionNotFound:
        client_ok = False
    return Actor(cn, orgs), client_ok


T = TypeVar("T")
Handler = Callable[..., Awaitable[T]]


async def _abort(context: Ctx, exc: GravenError) -> None:
    await context.abort_with_status(error_status(exc))


def rpc(method: str) -> Callable[[Handler[T]], Handler[T]]:
    """Authenticate, authorize, check the request and translate errors for one RPC; the handler gets the actor."""
    return guarded(method, _abort)


class MachineServicer(pb_grpc.MachineServiceServicer):
    def __init__(self, node: NodeApi) -> None:
        self.node = node

    async def authorize(self, method: str, context: Ctx) -> Actor:
        """The caller, or ``PermissionDenied`` (recorded as ``api.denied`` when a certificate was presented)."""
        if self.node.maintenance:
            if method not in MAINTENANCE_METHODS:
                raise PermissionDenied(f"{method} is not available in maintenance mode; apply a config first")
            return Actor("maintenance", ())
        actor, client_ok = caller(context)
        if actor is None:
            raise PermissionDenied("a client certificate is required")
        reason = ""
        if not client_ok:
            reason = "certificate is not valid for client authentication"
        elif not allowed(method, actor.roles):
            reason = f"roles {list(actor.roles) or '[]'} may not call {method}"
        if reason:
            await self.node.record_denied(method, actor, reason)
            raise PermissionDenied(f"{actor.id}: {reason}", method=method)
        return actor

    @rpc("Version")
    async def Version(self, request: pb.Empty, context: Ctx, actor: Actor) -> pb.VersionResponse:
        v = self.node.version()
        return pb.VersionResponse(version=v.version, image_digest=v.image_digest, slot=v.slot, boot_id=v.boot_id,
                                  node=v.node, kernel=v.kernel, os_image=v.os_image, provisioner=v.provisioner)

    @rpc("MachineStatus")
    async def MachineStatus(self, request: pb.Empty, context: Ctx, actor: Actor) -> pb.MachineStatusResponse:
        s = self.node.status()
        resp = pb.MachineStatusResponse(
            stage=s.stage, ready=s.ready, slot=s.slot or "", version=s.version, boot_id=s.boot_id,
            log_next_seq=s.log_next_seq, config_digest=s.config_digest or "",
            staged_config_digest=s.staged_config_digest or "", node=s.node,
            details_json=msgspec.json.encode(s.details, enc_hook=str).decode())
        if s.sequence is not None:
            q = s.sequence
            resp.sequence.CopyFrom(pb.RunningSequence(name=q.name.value, actor=pb.Actor(id=q.actor),
                                                      started_seq=q.started_seq))
        if s.last_fallback is not None:
            f = s.last_fallback
            resp.last_fallback.CopyFrom(pb.Fallback(from_slot=f.from_slot, to_slot=f.to_slot, reason=f.reason,
                                                    seq=f.seq))
        return resp

    @rpc("ApplyConfiguration")
    async def ApplyConfiguration(self, request: pb.ApplyConfigurationRequest, context: Ctx,
                                 actor: Actor) -> pb.ApplyConfigurationResponse:
        cmd = ApplyConfig(data=request.data, mode=ApplyMode(pb.ApplyMode.Name(request.mode).lower().replace("_", "-")),
                          dry_run=request.dry_run, try_timeout=float(request.try_timeout_seconds or 60))
        out = await self.node.apply_config(cmd, actor)
        return pb.ApplyConfigurationResponse(
            mode=out.mode.value.upper().replace("-", "_"), diff_json=json.dumps([c.to_dict() for c in out.changes]),
            digest=out.digest, seq=out.seq, reboot_required=out.reboot_required, warnings=list(out.warnings))

    @rpc("GetConfiguration")
    async def GetConfiguration(self, request: pb.Empty, context: Ctx, actor: Actor) -> pb.GetConfigurationResponse:
        redact = ADMIN not in actor.roles
        data, digest = self.node.get_config(redact)
        return pb.GetConfigurationResponse(data=data, digest=digest, redacted=redact)

    async def _sequence(self, cmd: Command, actor: Actor) -> pb.SequenceAccepted:
        out = await self.node.request(cmd, actor)
        return pb.SequenceAccepted(sequence=out.sequence.value, seq=out.seq,
                                   actor=pb.Actor(id=actor.id, roles=list(actor.roles)))

    @rpc("Upgrade")
    async def Upgrade(self, request_iterator: AsyncIterator[pb.UpgradeRequest], context: Ctx,
                      actor: Actor) -> pb.SequenceAccepted:
        upload = Upload(self.node.spool_dir)
        try:
            await upload.receive(checked_stream(request_iterator))
            # the node verifies the image before it accepts: a refused upload is deleted here, at once
            return await self._sequence(Upgrade(source=upload.source, stage=upload.stage, force=upload.force),
                                        actor)
        except BaseException:
            upload.discard()
            raise

    @rpc("Rollback")
    async def Rollback(self, request: pb.RollbackRequest, context: Ctx, actor: Actor) -> pb.SequenceAccepted:
        return await self._sequence(Rollback(), actor)

    @rpc("Reset")
    async def Reset(self, request: pb.ResetRequest, context: Ctx, actor: Actor) -> pb.SequenceAccepted:
        cmd = Reset(wipe=tuple(request.wipe) or WIPE_ALL, graceful=request.graceful, reboot=request.reboot,
                    force=request.force)
        return await self._sequence(cmd, actor)

    @rpc("Reboot")
    async def Reboot(self, request: pb.RebootRequest, context: Ctx, actor: Actor) -> pb.SequenceAccepted:
        return await self._sequence(Reboot(force=request.force), actor)

    @rpc("Shutdown")
    async def Shutdown(self, request: pb.ShutdownRequest, context: Ctx, actor: Actor) -> pb.SequenceAccepted:
        return await self._sequence(Shutdown(force=request.force), actor)

    @guarded_stream("Events", _abort)
    async def Events(self, request: pb.EventsRequest, context: Ctx, actor: Actor) -> AsyncIterator[pb.EventBatch]:
        node, loop = self.node, asyncio.get_running_loop()
        start = request.since_seq
        if start < -1:
            raise InvalidRequest(f"since_seq {start} is out of range: a seq (0 or more), or -1 with tail_events "
                                 f"for the last N events", field="since_seq", value=start)
        if request.tail_events or start < 0:
            start = max(0, node.next_seq() - (request.tail_events or 0))
        kinds, actor_glob = list(request.kinds), request.actor
        while True:
            raws = await loop.run_in_executor(None, _read_batch, node, start)
            if raws:
                start = raws[-1][0] + 1
                kept = [r for _, r in raws if _wanted(r, kinds, actor_glob)] if kinds or actor_glob else \
                    [r for _, r in raws]
                yield pb.EventBatch(raw=kept, next_seq=start)
                continue
            if not request.follow:
                return
            await loop.run_in_executor(None, node.wait_for, start, 1.0)

    @guarded_stream("Logs", _abort)
    async def Logs(self, request: pb.LogsRequest, context: Ctx, actor: Actor) -> AsyncIterator[pb.LogBatch]:
        ring, loop = self.node.logs, asyncio.get_running_loop()
        service = request.service or "agent"
        if service not in ring.services() and service != "agent":
            known = ", ".join(ring.services()) or "none yet"
            raise NotFound(f"no service {service!r} on this node (services with logs: {known})")
        if request.since < -1:
            raise InvalidRequest(f"since must be a position (>= 0) or -1 with tail, not {request.since}",
                                 field="since", value=request.since)
        start = request.since
        if request.tail or start < 0:
            start = max(0, ring.next_position(service) - request.tail)
        while True:
            lines = await loop.run_in_executor(None, ring.read, service, start, LOG_LINES_PER_MESSAGE)
            if lines:
                yield pb.LogBatch(lines=[line for _, line in lines], first_position=lines[0][0],
                                  next_position=lines[-1][0] + 1)
                start = lines[-1][0] + 1
                continue
            if not request.follow:
                return
            await loop.run_in_executor(None, ring.wait_for, service, start, 1.0)

    @guarded_stream("Dmesg", _abort)
    async def Dmesg(self, request: pb.DmesgRequest, context: Ctx, actor: Actor) -> AsyncIterator[pb.LogBatch]:
        loop = asyncio.get_running_loop()
        records = self.node.kernel_log(request.tail or None, request.follow)
        position = 0
        try:
            while True:
                lines, more = await loop.run_in_executor(None, _next_lines, records)
                if lines:
                    yield pb.LogBatch(lines=lines, first_position=position, next_position=position + len(lines))
                    position += len(lines)
                if not more:
                    return
        finally:
            records.close()

    @guarded_stream("AuditExport", _abort)
    async def AuditExport(self, request: pb.AuditExportRequest, context: Ctx, actor: Actor
                          ) -> AsyncIterator[pb.Chunk]:
        if request.to_seq < -1 or 0 <= request.to_seq < request.from_seq:
            raise InvalidRequest(f"to_seq {request.to_seq} is out of range: a seq from from_seq "
                                 f"({request.from_seq}) on, or -1 for the last", field="to_seq", value=request.to_seq)
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, self._bundle_bytes, request)
        for i in range(0, len(data), 1 << 20):
            yield pb.Chunk(data=data[i: i + (1 << 20)])

    def _bundle_bytes(self, request: pb.AuditExportRequest) -> bytes:
        from events import write_bundle  # tarfile and the bundle code load on the first export only

        buf = io.BytesIO()
        raw = list(self.node.read_raw(0))
        write_bundle(buf, raw, start=request.from_seq, end=None if request.to_seq < 0 else request.to_seq)
        return buf.getvalue()

    @rpc("BootTrace")
    async def BootTrace(self, request: pb.BootTraceRequest, context: Ctx, actor: Actor) -> pb.BootTraceResponse:
        if request.boot < -1:
            raise InvalidRequest(f"boot {request.boot} is out of range: an index from 0, or -1 for the last",
                                 field="boot", value=request.boot)
        if request.format not in ("", "json", "chrome", "svg"):
            raise InvalidRequest(f"format {request.format!r} is not one of json, chrome, svg", field="format")
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, self.node.boot_trace, request.boot, request.boot_id,
                                          request.format or "json")
        return pb.BootTraceResponse(data=data)

    @rpc("GenerateClientConfiguration")
    async def GenerateClientConfiguration(self, request: pb.ConfigNewRequest, context: Ctx,
                                          actor: Actor) -> pb.ConfigNewResponse:
        ca, crt, key = self.node.client_config(list(request.roles) or ["os:admin"], request.ttl_seconds or 86400,
                                               request.name or "client")
        return pb.ConfigNewResponse(ca_crt=ca, crt=crt, key=key)

    @rpc("Network")
    async def Network(self, request: pb.NetworkRequest, context: Ctx, actor: Actor) -> pb.NetworkResponse:
        return pb.NetworkResponse(json=json.dumps(self.node.network(request.what), default=str))

    @rpc("Resources")
    async def Resources(self, request: pb.ResourcesRequest, context: Ctx, actor: Actor) -> pb.ResourcesResponse:
        rows = await asyncio.to_thread(self.node.resources, request.kind)
        return pb.ResourcesResponse(json=json.dumps(rows, default=str))

    @rpc("EtcdQuery")
    async def EtcdQuery(self, request: pb.EtcdRequest, context: Ctx, actor: Actor) -> pb.EtcdResponse:
        out = await self.node.etcd_action(request.action, _json_args(request.args_json), actor, manage=False)
        return pb.EtcdResponse(json=json.dumps(out, default=str))

    @rpc("EtcdManage")
    async def EtcdManage(self, request: pb.EtcdRequest, context: Ctx, actor: Actor) -> pb.EtcdResponse:
        out = await self.node.etcd_action(request.action, _json_args(request.args_json), actor, manage=True)
        return pb.EtcdResponse(json=json.dumps(out, default=str))

    @guarded_stream("EtcdSnapshot", _abort)
    async def EtcdSnapshot(self, request: pb.EtcdRequest, context: Ctx, actor: Actor) -> AsyncIterator[pb.Chunk]:
        path = await self.node.etcd_snapshot()
        try:
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    yield pb.Chunk(data=chunk)
        finally:
            path.unlink(missing_ok=True)

    @rpc("EtcdRecover")
    async def EtcdRecover(self, request_iterator: AsyncIterator[pb.Chunk], context: Ctx,
                          actor: Actor) -> pb.EtcdResponse:
        self.node.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.node.spool_dir, prefix="etcd-recover-", suffix=".snapshot",
                                         delete=False) as f:
            spool = Path(f.name)
        try:
            with spool.open("wb") as out:
                size = 0
                async for msg in checked_stream(request_iterator):
                    size += len(msg.data)
                    if size > LIMITS.upload_bytes:
                        raise TooLarge(f"the snapshot upload passed {LIMITS.upload_bytes} bytes (limit upload_bytes)",
                                       limit="upload_bytes", value=size, max=LIMITS.upload_bytes)
                    out.write(msg.data)
            out_json = await self.node.etcd_recover(spool, actor)
        finally:
            spool.unlink(missing_ok=True)
        return pb.EtcdResponse(json=json.dumps(out_json, default=str))


def _json_args(text: str) -> dict[str, object]:
    if not text:
        return {}
    try:
        args = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"args_json is not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InvalidRequest(f"args_json must be a JSON object, not {type(args).__name__}")
    return args


def _read_batch(node: NodeApi, start: int) -> list[tuple[int, bytes]]:
    out = []
    for item in node.read_raw(start):
        out.append(item)
        if len(out) >= EVENTS_PER_MESSAGE:
            break
    return out


def _next_lines(records: Iterator[bytes | None]) -> tuple[list[bytes], bool]:
    """The records ready now (up to a message's worth), and whether the stream goes on."""
    lines: list[bytes] = []
    for line in records:
        if line is None:
            return lines, True
        lines.append(line)
        if len(lines) >= LOG_LINES_PER_MESSAGE:
            return lines, True
    return lines, False


def _wanted(raw: bytes, kinds: list[str], actor_glob: str) -> bool:
    ev = decode_event(raw)
    if kinds and not any(fnmatch.fnmatchcase(ev.kind, k) for k in kinds):
        return False
    return not actor_glob or fnmatch.fnmatchcase(ev.actor.id, actor_glob) or any(
        fnmatch.fnmatchcase(r, actor_glob) for r in ev.actor.roles)


REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
# v1 is v1alpha under a new package name, message for message: what current grpcurl asks first
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class _GenericHandler(Protocol):
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> object: ...


class _LazyReflection:  # a grpc.GenericRpcHandler: grpc asks only for its ``service`` method
    """Server reflection (what grpcurl asks), v1 and v1alpha, loaded by its first call: its descriptor modules
    would cost every agent at rest about 1 MiB, and most nodes are never asked."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._handlers: dict[str, _GenericHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> object:
        method = handler_call_details.method
        name = next((n for n in (REFLECTION_V1, REFLECTION) if method.startswith(f"/{n}/")), None)
        if name is None:
            return None
        if name not in self._handlers:
            from grpc_reflection.v1alpha import reflection, reflection_pb2

            servicer = reflection.aio.ReflectionServicer(self._names)
            self._handlers[name] = grpc.method_handlers_generic_handler(name, {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    servicer.ServerReflectionInfo,
                    request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                    response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)})
        return self._handlers[name].service(handler_call_details)


def _message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    cls = getattr(pb, desc.name)
    if not (isinstance(cls, type) and issubclass(cls, message.Message)):
        raise TypeError(f"machine_pb2.{desc.name} is not a message class")
    return cls


_trimmer: asyncio.Task[None] | None = None


class Server:
    """The aio gRPC server on one address, with health and reflection."""

    def __init__(self, node: NodeApi, address: str, credentials: grpc.ServerCredentials, *,
                 observe: Observe | None = None) -> None:
        self.address = address
        self.server = grpc.aio.server(interceptors=[CallObserver(observe)] if observe else None, options=[
            ("grpc.so_reuseport", 0),
            # a larger message is refused by gRPC before it is read into memory (limit message_bytes)
            ("grpc.max_receive_message_length", LIMITS.message_bytes),
            # clients ping idle streams (events -f, --wait) every 30 s; allow it
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ])
        add_service(MachineServicer(node), self.server, pb.DESCRIPTOR.services_by_name["MachineService"],
                    _message_class)
        self.health = health.aio.HealthServicer()
        add_service(self.health, self.server, health_pb2.DESCRIPTOR.services_by_name["Health"],
                    lambda desc: getattr(health_pb2, desc.name), abort=_abort)
        names = (pb.DESCRIPTOR.services_by_name["MachineService"].full_name, health.SERVICE_NAME, REFLECTION_V1,
                 REFLECTION)
        self.server.add_generic_rpc_handlers((_LazyReflection(names),))
        self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise GravenError(f"cannot listen on {address}")

    async def start(self) -> None:
        await self.server.start()
        global _trimmer
        if _trimmer is None or _trimmer.done():  # one per process, however many servers
            _trimmer = asyncio.get_running_loop().create_task(trim_when_grown())
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("graven.machine.v1.MachineService", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
