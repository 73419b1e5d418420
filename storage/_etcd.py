"""The etcd adapter: a thin asyncio client over ``grpc.aio`` with mutual TLS, behind the ``EtcdPort``.

The generated stubs come from the ``etcd3-async-client`` wheel (``etcd.api.etcdserverpb``): they cover etcd's
whole v3 API and load with our grpcio and protobuf, which the other PyPI clients do not (see
``shared/research/etcd.md``); its own high-level client has no client certificates, so it is not used.

One channel per endpoint. A call goes to the endpoints in order and moves to the next one when an endpoint cannot
be reached (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) or says it cannot serve now ("etcdserver: unhealthy
cluster", "no leader"), so a cluster with a member down still answers; calls about
one member (``status``) go to that member only. gRPC errors become Graven errors naming the endpoint and etcd's
message: unreachable is ``Unavailable``, everything etcd refuses is ``EtcdRefused`` (an ``OperationalError``
whose ``details['etcd']`` is etcd's own message, e.g. "etcdserver: unhealthy cluster").
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar

import grpc
from etcd.api.etcdserverpb import rpc_pb2 as pb
from etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

from errors import InvalidRequest, OperationalError, Unavailable, VerificationError

__all__ = [
    "EtcdClient",
    "EtcdPort",
    "EtcdRefused",
    "EtcdTLS",
    "KeyValue",
    "Member",
    "MemberStatus",
    "SnapshotCheck",
    "prefix_end",
]

T = TypeVar("T")
_FAILOVER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_SHA256_LEN = 32


class EtcdRefused(OperationalError):
    """etcd answered and refused; ``details['etcd']`` is its message, ``details['status']`` the gRPC code."""


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """PEM bytes: the etcd CA, and a certificate and key it issued with clientAuth."""

    ca: bytes
    cert: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str  # empty until a learner that was added has started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        return bool(self.name)

    def to_dict(self) -> dict[str, object]:
        return {"id": f"{self.id:016x}", "name": self.name, "peer_urls": list(self.peer_urls),
                "client_urls": list(self.client_urls), "learner": self.is_learner}


@dataclass(frozen=True, slots=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader: int
    version: str
    db_size: int
    db_size_in_use: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    is_learner: bool
    errors: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "member_id": f"{self.member_id:016x}", "leader": f"{self.leader:016x}",
                "version": self.version, "db_size": self.db_size, "db_size_in_use": self.db_size_in_use,
                "raft_index": self.raft_index, "raft_term": self.raft_term,
                "raft_applied_index": self.raft_applied_index, "learner": self.is_learner,
                "errors": list(self.errors)}


class EtcdPort(Protocol):
    """What Graven asks of etcd."""

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int: ...
    async def get(self, key: bytes, *, serializable: bool = False) -> KeyValue | None: ...
    async def range(self, prefix: bytes) -> list[KeyValue]: ...
    async def delete(self, key: bytes, *, prefix: bool = False) -> int: ...
    async def put_if_mod_revision(self, key: bytes, value: bytes, mod_revision: int, *, lease: int = 0) -> bool: ...
    async def delete_if_mod_revision(self, key: bytes, mod_revision: int) -> bool: ...
    async def lease_grant(self, ttl: int) -> int: ...
    async def lease_keepalive(self, lease: int) -> int: ...
    async def lease_revoke(self, lease: int) -> None: ...
    async def members(self) -> list[Member]: ...
    async def member_add_learner(self, peer_urls: Sequence[str]) -> Member: ...
    async def member_promote(self, member_id: int) -> list[Member]: ...
    async def member_remove(self, member_id: int) -> list[Member]: ...
    async def move_leader(self, endpoint: str, target_id: int) -> None: ...
    async def status(self, endpoint: str) -> MemberStatus: ...
    async def snapshot(self, out: BinaryIO, *, progress: Callable[[int], None] | None = None) -> tuple[int, str]: ...
    async def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's convention)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _endpoint_target(endpoint: str) -> str:
    e = endpoint.strip()
    for scheme in ("https://", "http://"):
        if e.startswith(scheme):
            e = e[len(scheme):]
    e = e.rstrip("/")
    if not e:
        raise InvalidRequest(f"etcd endpoint {endpoint!r} is empty")
    return e if ":" in e.rsplit("]", 1)[-1] else f"{e}:2379"


class SnapshotCheck:
    """The SHA-256 trailer of an etcd snapshot stream, checked over chunks of any size."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._tail = b""
        self.size = 0

    def update(self, blob: bytes) -> None:
        self.size += len(blob)
        both = self._tail + blob
        self._digest.update(both[:-_SHA256_LEN])
        self._tail = both[-_SHA256_LEN:]

    def verify(self) -> str:
        """The database's SHA-256 (hex) when the trailer matches it; else a ``VerificationError``."""
        if self.size < _SHA256_LEN or self._digest.digest() != self._tail:
            raise VerificationError(f"etcd snapshot checksum does not match ({self.size} bytes received)",
                                    size=self.size)
        return self._digest.hexdigest()


class _PbKeyValue(Protocol):
    """What is read of etcd's ``mvccpb.KeyValue`` (the generated etcd stubs have no types)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class _PbMember(Protocol):
    """What is read of etcd's ``etcdserverpb.Member``."""

    ID: int
    name: str
    peerURLs: Iterable[str]
    clientURLs: Iterable[str]
    isLearner: bool


def _kv(kv: _PbKeyValue) -> KeyValue:
    return KeyValue(bytes(kv.key), bytes(kv.value), int(kv.create_revision), int(kv.mod_revision),
                    int(kv.version), int(kv.lease))


def _member(m: _PbMember) -> Member:
    return Member(int(m.ID), str(m.name), tuple(m.peerURLs), tuple(m.clientURLs), bool(m.isLearner))


class EtcdClient:
    """``EtcdPort`` over gRPC with mutual TLS. Create it inside the event loop that will use it."""

    def __init__(self, endpoints: Sequence[str], tls: EtcdTLS, *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise InvalidRequest("no etcd endpoint given")
        self.endpoints = [_endpoint_target(e) for e in endpoints]
        self.timeout = timeout
        creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
        self._channels = {e: grpc.aio.secure_channel(e, creds) for e in dict.fromkeys(self.endpoints)}

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _error(self, endpoint: str, exc: grpc.aio.AioRpcError) -> OperationalError:
        code = exc.code()
        detail = exc.details() or code.name.lower()
        if code in _FAILOVER and not detail.startswith("etcdserver:"):
            return Unavailable(f"etcd at {endpoint} is unreachable: {detail}", endpoint=endpoint,
                               status=code.name)
        return EtcdRefused(f"etcd at {endpoint} refused: {detail}", endpoint=endpoint, etcd=detail,
                           status=code.name)

    async def _one(self, endpoint: str, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        target = _endpoint_target(endpoint)
        channel = self._channels.get(target)
        if channel is None:
            raise InvalidRequest(f"{endpoint} is not one of this client's endpoints ({', '.join(self.endpoints)})",
                                 endpoint=endpoint)
        try:
            return await call(channel)
        except grpc.aio.AioRpcError as exc:
            raise self._error(target, exc) from None

    async def _any(self, call: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        errors: list[str] = []
        refused: EtcdRefused | None = None
        for endpoint, channel in self._channels.items():
            try:
                return await call(channel)
            except grpc.aio.AioRpcError as exc:
                err = self._error(endpoint, exc)
                if exc.code() not in _FAILOVER:
                    raise err from None
                if isinstance(err, EtcdRefused):  # "unhealthy cluster", "no leader": another member may do
                    refused = err
                errors.append(err.message)
        if refused is not None:
            raise refused
        raise Unavailable("no etcd endpoint answered: " + "; ".join(errors), endpoints=list(self._channels))

    # -- keys ---------------------------------------------------------------------------------------------------
    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Store ``value`` at ``key``; the store's revision after the write."""
        req = pb.PutRequest(key=key, value=value, lease=lease)
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).Put(req, timeout=self.timeout))
        return int(resp.header.revision)

    async def get(self, key: bytes, *, serializable: bool = False) -> KeyValue | None:
        """The key's value (``None`` when absent); linearizable (a quorum read) unless ``serializable``."""
        req = pb.RangeRequest(key=key, serializable=serializable)
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).Range(req, timeout=self.timeout))
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: bytes) -> list[KeyValue]:
        """Every key starting with ``prefix``, in key order."""
        req = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).Range(req, timeout=self.timeout))
        return [_kv(kv) for kv in resp.kvs]

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it); how many were deleted."""
        req = pb.DeleteRangeRequest(key=key, range_end=prefix_end(key) if prefix else b"")
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).DeleteRange(req, timeout=self.timeout))
        return int(resp.deleted)

    async def put_if_mod_revision(self, key: bytes, value: bytes, mod_revision: int, *, lease: int = 0) -> bool:
        """Compare-and-swap: write only if the key's mod revision is ``mod_revision`` (0: the key is absent)."""
        cmp = pb.Compare(key=key, result=pb.Compare.EQUAL, target=pb.Compare.MOD, mod_revision=mod_revision)
        req = pb.TxnRequest(compare=[cmp],
                            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))])
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).Txn(req, timeout=self.timeout))
        return bool(resp.succeeded)

    async def delete_if_mod_revision(self, key: bytes, mod_revision: int) -> bool:
        """Delete ``key`` only if its mod revision is still ``mod_revision`` (nobody wrote it since it was read)."""
        cmp = pb.Compare(key=key, result=pb.Compare.EQUAL, target=pb.Compare.MOD, mod_revision=mod_revision)
        req = pb.TxnRequest(compare=[cmp], success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))])
        resp = await self._any(lambda ch: pb_grpc.KVStub(ch).Txn(req, timeout=self.timeout))
        return bool(resp.succeeded)

    # -- leases -------------------------------------------------------------------------------------------------
    async def lease_grant(self, ttl: int) -> int:
        if ttl <= 0:
            raise InvalidRequest(f"lease TTL must be positive, not {ttl}")
        resp = await self._any(lambda ch: pb_grpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=ttl),
                                                                            timeout=self.timeout))
        if resp.error:
            raise EtcdRefused(f"etcd refused a lease: {resp.error}", etcd=resp.error)
        return int(resp.ID)

    async def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; its TTL in seconds afterwards (0 or less: it has expired)."""

        async def call(ch: grpc.aio.Channel) -> int:
            stream = pb_grpc.LeaseStub(ch).LeaseKeepAlive(timeout=self.timeout)
            await stream.write(pb.LeaseKeepAliveRequest(ID=lease))
            await stream.done_writing()
            resp = await stream.read()
            stream.cancel()
            return 0 if resp is grpc.aio.EOF else int(resp.TTL)

        return await self._any(call)

    async def lease_revoke(self, lease: int) -> None:
        await self._any(lambda ch: pb_grpc.LeaseStub(ch).LeaseRevoke(pb.LeaseRevokeRequest(ID=lease),
                                                                     timeout=self.timeout))

    # -- membership ---------------------------------------------------------------------------------------------
    async def members(self) -> list[Member]:
        resp = await self._any(lambda ch: pb_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(),
                                                                             timeout=self.timeout))
        return sorted((_member(m) for m in resp.members), key=lambda m: (m.name or "~", m.id))

    async def member_add_learner(self, peer_urls: Sequence[str]) -> Member:
        """Add a non-voting member that will join at ``peer_urls``."""
        req = pb.MemberAddRequest(peerURLs=list(peer_urls), isLearner=True)
        resp = await self._any(lambda ch: pb_grpc.ClusterStub(ch).MemberAdd(req, timeout=self.timeout))
        return _member(resp.member)

    async def member_promote(self, member_id: int) -> list[Member]:
        """Make a learner that is in sync a voting member (etcd refuses while it lags); the members after."""
        req = pb.MemberPromoteRequest(ID=member_id)
        resp = await self._any(lambda ch: pb_grpc.ClusterStub(ch).MemberPromote(req, timeout=self.timeout))
        return [_member(m) for m in resp.members]

    async def member_remove(self, member_id: int) -> list[Member]:
        req = pb.MemberRemoveRequest(ID=member_id)
        resp = await self._any(lambda ch: pb_grpc.ClusterStub(ch).MemberRemove(req, timeout=self.timeout))
        return [_member(m) for m in resp.members]

    async def move_leader(self, endpoint: str, target_id: int) -> None:
        """Ask the leader (at ``endpoint``) to hand leadership to ``target_id``."""
        req = pb.MoveLeaderRequest(targetID=target_id)
        await self._one(endpoint, lambda ch: pb_grpc.MaintenanceStub(ch).MoveLeader(req, timeout=self.timeout))

    # -- maintenance --------------------------------------------------------------------------------------------
    async def status(self, endpoint: str) -> MemberStatus:
        """The status of the member at ``endpoint`` (one of the client's endpoints)."""
        resp = await self._one(endpoint, lambda ch: pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(),
                                                                                       timeout=self.timeout))
        return MemberStatus(
            endpoint=_endpoint_target(endpoint), member_id=int(resp.header.member_id), leader=int(resp.leader),
            version=str(resp.version), db_size=int(resp.dbSize), db_size_in_use=int(resp.dbSizeInUse),
            raft_index=int(resp.raftIndex), raft_term=int(resp.raftTerm),
            raft_applied_index=int(resp.raftAppliedIndex), is_learner=bool(resp.isLearner),
            errors=tuple(resp.errors))

    async def snapshot(self, out: BinaryIO, *, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
        """Stream a snapshot of the backend into ``out``; (bytes written, sha256 hex of the database).

        etcd ends the stream with the SHA-256 of the database before it; the bytes are written as they come (as
        ``etcdctl snapshot save`` writes them, trailer included, so ``etcdctl snapshot restore`` accepts the
        file) and the trailer is checked at the end: a mismatch is a ``VerificationError``.
        """

        async def call(ch: grpc.aio.Channel) -> tuple[int, str]:
            check = SnapshotCheck()
            try:
                async for resp in pb_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest()):
                    blob = bytes(resp.blob)
                    out.write(blob)
                    check.update(blob)
                    if progress is not None:
                        progress(check.size)
            except grpc.aio.AioRpcError as exc:
                if not check.size:
                    raise  # nothing written yet: the next endpoint may serve it
                raise Unavailable(f"etcd snapshot stream broke after {check.size} bytes: {exc.details()}",
                                  size=check.size) from None
            return check.size, check.verify()

        return await self._any(call)
