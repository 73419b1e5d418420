"""A fake node for the client's tests: a real grpc server over real (mutual) TLS, serving a ``MemoryEventLog``
signed by the cluster's CA, with certificates made by ``gravenctl gen config`` (see ``conftest.py``).

- ``FakeNode(secrets).start()``: mutual TLS on 127.0.0.1 and a free port (``maintenance=True``: self-signed,
  no client certificate); ``node.restart()`` stops it and serves again on the same port with a new boot id,
  as a reboot does.
- ``node.fail(method, code, message, **details)``: calls of ``method`` abort with a ``google.rpc.Status``
  carrying an ``ErrorDetail``.
- ``node.scripts[method] = fn(node, request_seq)``: what the node does (in a thread) after accepting a request;
  ``run_sequence`` and ``boot`` append the events a sequence or a boot would.
"""

from __future__ import annotations

import fnmatch
import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from api import _clientconfig
from api._pb import machine_pb2 as pb
from api._pb import machine_pb2_grpc as pbg
from api._pki import ClusterSecrets, issue_client_certificate, issue_server_certificate, self_signed_certificate
from errors import Code
from events import Actor, Kind, MemoryEventLog
from events._bundle import write_bundle
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate

ADMIN = Actor("admin", ("os:admin",))


@dataclass
class Cluster:
    dir: Path
    secrets: ClusterSecrets
    config_path: Path

    @property
    def client_config(self) -> _clientconfig.ClientConfig:
        return _clientconfig.load(self.config_path)

    @property
    def context(self) -> _clientconfig.Context:
        return self.client_config.current()[1]


def new_log(secrets: ClusterSecrets, boot_id: str = "boot-0") -> MemoryEventLog:
    signer = Ed25519Signer.generate()
    cert = issue_certificate(secrets.ca_key, secrets.ca_cert, signer.private_key.public_key(), cn="node1",
                             unit=LOG_KEY_UNIT)
    return MemoryEventLog(signer, cert.public_bytes(serialization.Encoding.DER), origin="graven/node1",
                          boot_id=boot_id, checkpoint_every=10_000)


def _abort(context: grpc.ServicerContext, status: grpc.StatusCode, code: Code, message: str,
           details: dict[str, Any]) -> None:
    detail = pb.ErrorDetail(code=int(code), message=message, details_json=json.dumps(details))
    packed = any_pb2.Any()
    packed.Pack(detail)
    context.abort_with_status(rpc_status.to_status(
        status_pb2.Status(code=status.value[0], message=message, details=[packed])))


class FakeServicer(pbg.MachineServiceServicer):
    def __init__(self, node: FakeNode) -> None:
        self.node = node

    def _check(self, method: str, context: grpc.ServicerContext) -> None:
        self.node.calls.append(method)
        failure = self.node.failures.get(method)
        if failure is not None:
            failure(context)

    def _actor(self, context: grpc.ServicerContext) -> Actor:
        subject = (context.auth_context().get("x509_subject") or [b""])[0].decode()
        pairs = [p.split("=", 1) for p in subject.split(",") if "=" in p]
        return Actor(next((v for k, v in pairs if k == "CN"), "anonymous"), tuple(v for k, v in pairs if k == "O"))

    def Version(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.VersionResponse:
        self._check("Version", context)
        return pb.VersionResponse(version=self.node.version, image_digest="ab" * 32, slot=self.node.slot,
                                  boot_id=self.node.log.boot_id, node="node1", kernel="6.1.0-test",
                                  os_image="Graven v1", provisioner="container")

    def Resources(self, request: pb.ResourcesRequest, context: grpc.ServicerContext) -> pb.ResourcesResponse:
        self._check("Resources", context)
        rows = {"processes": [
            {"pid": 1, "ppid": 0, "state": "S", "threads": 9, "rss_bytes": 60 << 20, "cpu_seconds": 1.5,
             "command": "/usr/bin/python3.11 -S -P -m node agent --root /machine"},
            {"pid": 7, "ppid": 1, "state": "S", "threads": 1, "rss_bytes": 2 << 20, "cpu_seconds": 9.0,
             "command": "etcd"}],
            "mounts": [{"mountpoint": "/", "fstype": "squashfs", "source": "/dev/loop3", "read_only": True,
                        "options": "ro,nodev"},
                       {"mountpoint": "/tmp", "fstype": "tmpfs", "source": "tmpfs", "read_only": False,
                        "options": "rw"}]}
        if request.kind not in rows:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown resource {request.kind!r}")
        return pb.ResourcesResponse(json=json.dumps(rows[request.kind]))

    def MachineStatus(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.MachineStatusResponse:
        self._check("MachineStatus", context)
        return self.node.status

    def ApplyConfiguration(self, request: pb.ApplyConfigurationRequest,
                           context: grpc.ServicerContext) -> pb.ApplyConfigurationResponse:
        self._check("ApplyConfiguration", context)
        self.node.applied.append(request)
        diff = [{"op": "replace", "path": "machine.network.hostname", "old": "a", "new": "b"}]
        seq = 0 if request.dry_run else self.node.log.append(Kind.CONFIG_APPLIED, {"digest": "d"}, ADMIN).seq
        mode = pb.NO_REBOOT if request.mode == pb.AUTO else request.mode
        return pb.ApplyConfigurationResponse(mode=mode, diff_json=json.dumps(diff), digest="f" * 64, seq=seq,
                                             warnings=["no audit sink"])

    def GetConfiguration(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.GetConfigurationResponse:
        self._check("GetConfiguration", context)
        return pb.GetConfigurationResponse(data=b"version: v1alpha1\n", digest="f" * 64, redacted=True)

    def _accept(self, method: str, sequence: str, context: grpc.ServicerContext) -> pb.SequenceAccepted:
        actor = self._actor(context)
        event = self.node.log.append(Kind.API_REQUEST, {"method": method, "args": {}}, actor)
        script = self.node.scripts.get(method)
        if script is not None:
            threading.Thread(target=script, args=(self.node, event.seq), daemon=True).start()
        return pb.SequenceAccepted(sequence=sequence, seq=event.seq, actor=pb.Actor(id=actor.id, roles=actor.roles))

    def Upgrade(self, request_iterator: Iterator[pb.UpgradeRequest],
                context: grpc.ServicerContext) -> pb.SequenceAccepted:
        self._check("Upgrade", context)
        msgs = list(request_iterator)
        self.node.upgrade_messages = msgs
        return self._accept("Upgrade", "stage-upgrade" if msgs and msgs[0].stage else "upgrade", context)

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> pb.SequenceAccepted:
        self._check("Rollback", context)
        return self._accept("Rollback", "rollback", context)

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.SequenceAccepted:
        self._check("Reset", context)
        self.node.reset_requests.append(request)
        return self._accept("Reset", "reset", context)

    def Reboot(self, request: pb.RebootRequest, context: grpc.ServicerContext) -> pb.SequenceAccepted:
        self._check("Reboot", context)
        return self._accept("Reboot", "reboot", context)

    def Shutdown(self, request: pb.ShutdownRequest, context: grpc.ServicerContext) -> pb.SequenceAccepted:
        self._check("Shutdown", context)
        return self._accept("Shutdown", "shutdown", context)

    def Events(self, request: pb.EventsRequest, context: grpc.ServicerContext) -> Iterator[pb.EventBatch]:
        self._check("Events", context)
        log = self.node.log
        nxt = max(0, log.next_seq() - request.tail_events) if request.since_seq < 0 else request.since_seq
        while context.is_active() and not self.node.stopping.is_set():
            items = list(log.read_raw(nxt))[: self.node.batch]
            if items:
                raws = [raw for seq, raw in items if self._wanted(log, seq, request)]
                nxt = items[-1][0] + 1
                yield pb.EventBatch(raw=raws, next_seq=nxt)
            elif not request.follow:
                return
            else:
                log.wait_for(nxt, timeout=0.05)

    @staticmethod
    def _wanted(log: MemoryEventLog, seq: int, request: pb.EventsRequest) -> bool:
        event = next(log.read(seq, seq + 1))
        if request.kinds and not any(fnmatch.fnmatchcase(event.kind, k) for k in request.kinds):
            return False
        if request.actor:
            names = [event.actor.id, *event.actor.roles]
            return any(fnmatch.fnmatchcase(n, request.actor) for n in names)
        return True

    def AuditExport(self, request: pb.AuditExportRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:
        self._check("AuditExport", context)
        buf = io.BytesIO()
        write_bundle(buf, list(self.node.log.read_raw()), start=request.from_seq,
                     end=None if request.to_seq < 0 else request.to_seq)
        data = buf.getvalue()
        for i in range(0, len(data), 64 * 1024):
            yield pb.Chunk(data=data[i:i + 64 * 1024])

    def BootTrace(self, request: pb.BootTraceRequest, context: grpc.ServicerContext) -> pb.BootTraceResponse:
        self._check("BootTrace", context)
        return pb.BootTraceResponse(data=b"{}")

    def GenerateClientConfiguration(self, request: pb.ConfigNewRequest,
                                    context: grpc.ServicerContext) -> pb.ConfigNewResponse:
        self._check("GenerateClientConfiguration", context)
        if "os:admin" not in self._actor(context).roles:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, Code.PERMISSION_DENIED,
                   "GenerateClientConfiguration needs os:admin", {"method": "GenerateClientConfiguration"})
        import datetime as dt

        s = self.node.secrets
        crt, key = issue_client_certificate(s.ca_key, s.ca_cert, cn=request.name or "client", roles=request.roles,
                                            ttl=dt.timedelta(seconds=request.ttl_seconds))
        return pb.ConfigNewResponse(ca_crt=s.ca_crt_pem, crt=crt, key=key)


class FakeNode:
    """A grpc server on 127.0.0.1; mutual TLS from the cluster's CA, or maintenance (self-signed, no client cert)."""

    def __init__(self, secrets: ClusterSecrets, *, maintenance: bool = False) -> None:
        self.secrets = secrets
        self.maintenance = maintenance
        self.log = new_log(secrets)
        self.boots = 0
        self.version = "v1"
        self.slot = "A"
        self.batch = 64
        self.status = pb.MachineStatusResponse(stage="running", ready=True, slot="A", version="v1", node="node1")
        self.failures: dict[str, Callable[[grpc.ServicerContext], None]] = {}
        self.scripts: dict[str, Callable[[FakeNode, int], None]] = {}
        self.calls: list[str] = []
        self.applied: list[pb.ApplyConfigurationRequest] = []
        self.reset_requests: list[pb.ResetRequest] = []
        self.upgrade_messages: list[pb.UpgradeRequest] = []
        self.stopping = threading.Event()
        self.port = 0
        self._server: grpc.Server | None = None
        if maintenance:
            self.crt, self.key = self_signed_certificate("graven-maintenance")
        else:
            self.crt, self.key = issue_server_certificate(secrets.ca_key, secrets.ca_cert, cn="node1",
                                                          sans=["127.0.0.1", "localhost"])

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self, method: str, code: Code, message: str, status: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
             **details: Any) -> None:
        self.failures[method] = lambda ctx: _abort(ctx, status, code, message, details)

    def start(self) -> FakeNode:
        self.stopping.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pbg.add_MachineServiceServicer_to_server(FakeServicer(self), server)
        ca = self.secrets.ca_crt_pem
        creds = grpc.ssl_server_credentials([(self.key, self.crt)], root_certificates=None if self.maintenance else ca,
                                            require_client_auth=not self.maintenance)
        port = server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        assert port, f"cannot bind 127.0.0.1:{self.port}"
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def restart(self, *, down_for: float = 0.3, during: Callable[[], None] | None = None) -> None:
        """Stop, run ``during`` (the node's next boot writing events before it serves), and serve again."""
        import time

        self.stop()
        time.sleep(down_for)
        self.boots += 1
        self.log.boot_id = f"boot-{self.boots}"
        if during is not None:
            during()
        self.start()


def run_sequence(node: FakeNode, name: str, phases: list[tuple[str, list[str]]], request_seq: int,
                 fail_task: str | None = None) -> bool:
    """Append the events of one sequence run; with ``fail_task``, that task fails and so does the sequence."""
    log = node.log
    log.append(Kind.SEQUENCE_STARTED, {"sequence": name, "phases": [p for p, _ in phases], "request": request_seq},
               ADMIN)
    for i, (phase, tasks) in enumerate(phases):
        log.append(Kind.PHASE_STARTED, {"sequence": name, "phase": phase, "index": i, "count": len(phases)})
        for task in tasks:
            log.append(Kind.TASK_STARTED, {"sequence": name, "phase": phase, "task": task})
            if task == fail_task:
                err = {"sequence": name, "phase": phase, "task": task, "duration_ns": 1, "error": "it broke",
                       "code": "BAD_IMAGE"}
                log.append(Kind.TASK_FAILED, {**err, "fatal": True})
                log.append(Kind.PHASE_FAILED, err)
                log.append(Kind.SEQUENCE_FAILED, {**err, "outcome": "failed"})
                return False
            log.append(Kind.TASK_STOPPED, {"sequence": name, "phase": phase, "task": task, "duration_ns": 1,
                                           "outcome": "ok"})
        log.append(Kind.PHASE_STOPPED, {"sequence": name, "phase": phase, "duration_ns": 1, "outcome": "ok"})
    log.append(Kind.SEQUENCE_STOPPED, {"sequence": name, "outcome": "ok", "duration_ns": 1})
    return True


BOOT_PHASES = [("image", ["measure_image"]), ("network", ["configure_links"]), ("services", ["start_api"]),
               ("ready", ["wait_healthy"]), ("commit", ["commit_boot"])]


def boot(node: FakeNode, slot: str, version: str, *, fail_task: str | None = None) -> None:
    node.log.append(Kind.BOOT_STARTED, {"boot_id": node.log.boot_id, "slot": slot, "version": version,
                                        "image_digest": "ab" * 32, "boot_number": node.boots})
    run_sequence(node, "boot", BOOT_PHASES, -1, fail_task=fail_task)
    if fail_task is None:
        node.log.append(Kind.BOOT_COMMITTED, {"slot": slot})
        node.slot, node.version = slot, version
