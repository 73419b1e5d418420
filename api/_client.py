"""``GravenClient``: a synchronous client of ``graven.machine.v1.MachineService`` over mutual TLS.

Every RPC error is translated in one place, ``map_rpc_error``: a ``google.rpc.Status`` whose details hold an
``ErrorDetail`` becomes the ``GravenError`` of that stable code; a node that cannot be reached becomes
``Unavailable`` naming it; a TLS handshake that fails is probed once more with Python's ``ssl`` so the error
says which side refused which certificate.

``GravenClient.insecure(endpoint)`` is for maintenance mode: it fetches the node's self-signed certificate,
prints its SHA-256 fingerprint and pins it as the only root (trust on first use); gRPC cannot skip verification.

``follow(since)`` yields every event from ``since`` on exactly once and in order, reconnecting (with backoff)
across a node's reboot and resuming from the last seq it saw.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # before grpc loads: its C core would log every TLS failure

import contextlib
import json
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, TextIO, TypeVar

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message
from google.rpc import status_pb2

from errors import (
    Cancelled,
    GravenError,
    InvalidRequest,
    InvariantViolation,
    Locked,
    NotFound,
    PermissionDenied,
    TooLarge,
    TransitionRejected,
    Unavailable,
    UntrustedKey,
    error_for_code,
)
from events import Event, decode_event

from ._client_tls import cert_names, probe_tls
from ._clientconfig import Context, endpoint_target, split_endpoint
from ._pb import machine_pb2 as pb
from ._pb import machine_pb2_grpc as pb_grpc
from ._replies import Applied, ConfigDocument, FallbackInfo, SequenceInfo, StatusInfo, VersionInfo

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_TIMEOUT",
    "MODES",
    "Accepted",
    "GravenClient",
    "client_version",
    "map_rpc_error",
]

DEFAULT_TIMEOUT = 20.0  # seconds per unary call
UPLOAD_TIMEOUT = 600.0
CHUNK_SIZE = 1 << 20
MAX_MESSAGE = 64 << 20
R = TypeVar("R", bound=Message)  # a reply message of the generated stub
_BACKOFF_MIN, _BACKOFF_MAX = 0.2, 2.0

_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),  # notice a node that vanished without closing the connection
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),  # a rebooted node is reached again within ~2 s
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.enable_retries", 0),
]

MODES: dict[str, pb.ApplyMode] = {"auto": pb.AUTO, "no-reboot": pb.NO_REBOOT, "reboot": pb.REBOOT, "staged": pb.STAGED,
                         "try": pb.TRY}
_MODE_NAMES = {v: k for k, v in MODES.items()}


def client_version() -> str:
    """The version of this gravenctl's own code (``dev`` from a checkout)."""
    try:
        from image import running_version
    except ImportError:  # pragma: no cover - the image package is part of every install
        return "dev"
    try:
        return running_version()
    except RuntimeError:
        return "unknown"


@dataclass(frozen=True)
class Accepted:
    """A lifecycle request the node recorded (at ``seq``) and will run as ``sequence``."""

    node: str
    sequence: str
    seq: int
    actor: str
    roles: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# -- error mapping: the one place --------------------------------------------------------------------------
_DETAILS_KEY = "grpc-status-details-bin"
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED}
_BY_STATUS: dict[grpc.StatusCode, type[GravenError]] = {
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidRequest,
    grpc.StatusCode.UNIMPLEMENTED: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: TransitionRejected,
    grpc.StatusCode.ABORTED: Locked,
    grpc.StatusCode.CANCELLED: Cancelled,
}
_TOO_BIG = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")  # gRPC's own refusal of a message by size
_TLS_HINTS = ("handshake", "ssl", "tls", "socket closed", "certificate", "peer name")


def error_detail(exc: grpc.RpcError) -> pb.ErrorDetail | None:
    """The ``ErrorDetail`` inside the ``google.rpc.Status`` trailer of a failed call, if any."""
    trailers = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    for key, value in trailers or ():
        if key != _DETAILS_KEY:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed trailer is no reason to lose the error itself
            return None
        for any_msg in status.details:
            detail = pb.ErrorDetail()
            if any_msg.Is(pb.ErrorDetail.DESCRIPTOR) and any_msg.Unpack(detail):
                return detail
    return None


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    if isinstance(exc, grpc.Call):
        return exc.code(), exc.details() or ""
    return None, str(exc)


def _short(message: str) -> str:
    """gRPC's connection errors repeat themselves; keep the last, most specific clause."""
    text = message.replace("failed to connect to all addresses; last error: ", "")
    return text if len(text) <= 200 else text[:199] + "…"


def map_rpc_error(exc: grpc.RpcError, node: str, method: str,
                  diagnose: Callable[[], GravenError | None] | None = None) -> GravenError:
    """Translate a failed call into the ``GravenError`` it stands for."""
    code, message = _status(exc)
    detail = error_detail(exc)
    if detail is not None:
        try:
            details: object = json.loads(detail.details_json) if detail.details_json else {}
        except ValueError:
            details = {"details": detail.details_json}
        if not isinstance(details, dict):
            details = {"details": details}
        details.setdefault("node", node)
        return error_for_code(int(detail.code), detail.message or message, details)
    if code == grpc.StatusCode.UNAVAILABLE and diagnose is not None and any(h in message.lower() for h in _TLS_HINTS):
        refused = diagnose()
        if refused is not None:
            return refused
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (m := _TOO_BIG.search(message)):
        return TooLarge(f"{method} on {node}: the message of {m[1]} bytes is larger than the node takes ({m[2]}; "
                        "limit message_bytes)", limit="message_bytes", value=int(m[1]), max=int(m[2]), node=node)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"node {node} did not answer {method} in time", node=node, method=method)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"node {node} is not reachable: {_short(message)}", node=node, method=method)
    cls = _BY_STATUS.get(code, GravenError) if code is not None else GravenError
    status = code.name if code is not None else "UNKNOWN"
    return cls(f"{method} on {node} failed: {message or status}", node=node, method=method, grpc_status=status)


def _retryable(exc: grpc.RpcError, error: GravenError) -> bool:
    code, _ = _status(exc)
    return isinstance(error, Unavailable) or (error_detail(exc) is None and code in _RETRYABLE)


# -- TLS diagnosis ---------------------------------------------------------------------------------------
def _normalize_fingerprint(text: str) -> str:
    t = text.strip().lower()
    t = t.removeprefix("sha256:")
    return t.replace(":", "")


def _pin_name(cert: x509.Certificate) -> str:
    """The name to expect from a pinned certificate: its first SAN, else its common name."""
    names = cert_names(cert)
    if names:
        return names[0]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else "graven"


# -- the client ------------------------------------------------------------------------------------------
class GravenClient:
    """One node's API. Unary calls return plain dicts (or ``Accepted``); errors are ``GravenError``s."""

    def __init__(self, endpoint: str, ca_pem: bytes, crt_pem: bytes | None = None, key_pem: bytes | None = None,
                 *, timeout: float = DEFAULT_TIMEOUT, server_name: str | None = None) -> None:
        self.endpoint = endpoint
        self.target = endpoint_target(endpoint)
        self.timeout = timeout
        self.fingerprint: str | None = None
        self._tls = (ca_pem, crt_pem, key_pem, server_name)
        options = list(_CHANNEL_OPTIONS)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        creds = grpc.ssl_channel_credentials(ca_pem, key_pem, crt_pem)
        self._channel = grpc.secure_channel(self.target, creds, options)
        self._stub = pb_grpc.MachineServiceStub(self._channel)

    @classmethod
    def from_context(cls, ctx: Context, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT) -> GravenClient:
        return cls(endpoint, ctx.ca, ctx.crt or None, ctx.key or None, timeout=timeout)

    @classmethod
    def insecure(cls, endpoint: str, *, fingerprint: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 out: TextIO | None = None, quiet: bool = False) -> GravenClient:
        """Maintenance mode: trust the certificate the node shows now (or only the one with ``fingerprint``).

        Its fingerprint is written to ``out`` (default stderr) unless ``quiet``."""
        host, port = split_endpoint(endpoint)
        try:
            pem = ssl.get_server_certificate((host, port), timeout=min(timeout, 10.0)).encode("ascii")
        except (OSError, ssl.SSLError) as exc:
            raise Unavailable(f"node {endpoint} is not reachable: cannot fetch its certificate: {exc}",
                              node=endpoint) from exc
        cert = x509.load_pem_x509_certificate(pem)
        from ._pki import fingerprint as sha256_fingerprint

        seen = sha256_fingerprint(cert)
        if fingerprint is not None and _normalize_fingerprint(fingerprint) != seen:
            raise UntrustedKey(f"node {endpoint} presents certificate {seen}, not the expected {fingerprint}",
                               node=endpoint, fingerprint=seen)
        if not quiet:
            (out or sys.stderr).write(f"{endpoint}: server certificate SHA-256 {seen} "
                                      "(trusted for this connection only)\n")
        client = cls(endpoint, pem, None, None, timeout=timeout, server_name=_pin_name(cert))
        client.fingerprint = seen
        return client

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GravenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GravenClient({self.endpoint!r})"

    # -- plumbing --------------------------------------------------------------------------------------
    def _diagnose(self) -> GravenError | None:
        ca, crt, key, name = self._tls
        return probe_tls(self.endpoint, ca, crt, key, name)

    def _error(self, exc: grpc.RpcError, method: str) -> GravenError:
        return map_rpc_error(exc, self.endpoint, method, self._diagnose)

    def _unary(self, method: str, request: Message, reply: type[R], timeout: float | None = None) -> R:
        """Call the unary RPC ``method``; its reply, checked to be a ``reply`` (the stub is generated untyped)."""
        try:
            out: object = getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise self._error(exc, method) from exc
        if not isinstance(out, reply):
            raise InvariantViolation(f"{method} on {self.endpoint}: the reply is a {type(out).__name__}, not a "
                                     f"{reply.__name__}", method=method)
        return out

    def _accepted(self, resp: pb.SequenceAccepted) -> Accepted:
        return Accepted(self.endpoint, resp.sequence, resp.seq, resp.actor.id, tuple(resp.actor.roles))

    # -- reads -----------------------------------------------------------------------------------------
    def version(self) -> VersionInfo:
        r = self._unary("Version", pb.Empty(), pb.VersionResponse)
        return {"version": r.version, "image_digest": r.image_digest, "slot": r.slot, "boot_id": r.boot_id,
                "node": r.node, "kernel": r.kernel, "os_image": r.os_image, "provisioner": r.provisioner}

    def status(self) -> StatusInfo:
        r = self._unary("MachineStatus", pb.Empty(), pb.MachineStatusResponse)
        seq: SequenceInfo | None = None
        if r.HasField("sequence"):
            seq = {"name": r.sequence.name, "actor": {"id": r.sequence.actor.id, "roles": list(r.sequence.actor.roles)},
                   "started_seq": r.sequence.started_seq}
        fallback: FallbackInfo | None = None
        if r.HasField("last_fallback"):
            f = r.last_fallback
            fallback = {"slot": f.from_slot, "from_slot": f.from_slot, "to_slot": f.to_slot, "reason": f.reason,
                        "seq": f.seq}
        try:
            details = json.loads(r.details_json) if r.details_json else {}
        except ValueError:
            details = {"raw": r.details_json}
        if not isinstance(details, dict):
            details = {"raw": details}
        return {"node": r.node, "stage": r.stage, "ready": r.ready, "slot": r.slot, "version": r.version,
                "sequence": seq, "last_fallback": fallback, "boot_id": r.boot_id, "log_next_seq": r.log_next_seq,
                "config_digest": r.config_digest or None, "staged_config_digest": r.staged_config_digest or None,
                "details": details}

    def get_configuration(self) -> ConfigDocument:
        r = self._unary("GetConfiguration", pb.Empty(), pb.GetConfigurationResponse)
        return {"data": r.data.decode("utf-8", "replace"), "digest": r.digest, "redacted": r.redacted}

    def boot_trace(self, *, boot: int = -1, boot_id: str = "", fmt: str = "json") -> bytes:
        r = self._unary("BootTrace", pb.BootTraceRequest(boot=boot, boot_id=boot_id, format=fmt),
                        pb.BootTraceResponse)
        return bytes(r.data)

    def resources(self, kind: str) -> list[dict[str, object]]:
        """``processes`` or ``mounts``, as the node sees them from inside."""
        r = self._unary("Resources", pb.ResourcesRequest(kind=kind), pb.ResourcesResponse)
        return _json_rows(r.json)

    def network(self, what: str) -> list[dict[str, object]]:
        r = self._unary("Network", pb.NetworkRequest(what=what), pb.NetworkResponse)
        return _json_rows(r.json)

    # -- changes ---------------------------------------------------------------------------------------
    def apply_configuration(self, data: bytes, *, mode: str = "auto", dry_run: bool = False,
                            try_timeout: float | None = None) -> Applied:
        if mode not in MODES:
            raise InvalidRequest(f"unknown apply mode {mode!r} (modes: {', '.join(MODES)})")
        req = pb.ApplyConfigurationRequest(data=data, mode=MODES[mode], dry_run=dry_run,
                                           try_timeout_seconds=int(try_timeout or 0))
        r = self._unary("ApplyConfiguration", req, pb.ApplyConfigurationResponse)
        try:
            diff = json.loads(r.diff_json) if r.diff_json else []
        except ValueError:
            diff = [{"raw": r.diff_json}]
        diff = [c if isinstance(c, dict) else {"raw": c} for c in (diff if isinstance(diff, list) else [diff])]
        return {"node": self.endpoint, "mode": _MODE_NAMES.get(r.mode, str(r.mode)), "dry_run": dry_run,
                "diff": diff, "digest": r.digest, "seq": r.seq if not dry_run else None,
                "reboot_required": r.reboot_required, "warnings": list(r.warnings)}

    def upgrade(self, image: str | os.PathLike[str], *, stage: bool = False,
                progress: Callable[[int, int], None] | None = None, timeout: float | None = None,
                force: bool = False) -> Accepted:
        """Upgrade from an image file (streamed in 1 MiB chunks; ``progress(sent, total)``) or a URL; ``force``:
        even if it leaves etcd without quorum."""
        text = os.fspath(image)
        if "://" in text:
            req = pb.UpgradeRequest(url=text, stage=stage, force=force)
            return self._accepted(self._call_upgrade(iter([req]), timeout))
        with contextlib.ExitStack() as stack:
            try:
                f = stack.enter_context(open(text, "rb"))
                size = os.fstat(f.fileno()).st_size
            except FileNotFoundError:
                raise NotFound(f"image {text}: no such file", path=text) from None
            except OSError as exc:
                raise InvalidRequest(f"image {text}: cannot read: {exc.strerror}", path=text) from None
            return self._accepted(self._call_upgrade(self._chunks(f, size, stage, progress, force), timeout))

    @staticmethod
    def _chunks(f: IO[bytes], size: int, stage: bool,
                progress: Callable[[int, int], None] | None, force: bool = False) -> Iterator[pb.UpgradeRequest]:
        """The image in 1 MiB messages; the first carries the options (an empty file still sends one)."""
        sent = 0
        while True:
            data = f.read(CHUNK_SIZE)
            if sent and not data:
                return
            first = sent == 0
            sent += len(data)
            yield pb.UpgradeRequest(chunk=data, stage=stage, total_size=size, force=force) if first else \
                pb.UpgradeRequest(chunk=data)
            if progress is not None:
                progress(sent, size)
            if not data:
                return

    def _call_upgrade(self, requests: Iterator[pb.UpgradeRequest], timeout: float | None) -> pb.SequenceAccepted:
        try:
            resp: pb.SequenceAccepted = self._stub.Upgrade(requests, timeout=timeout or UPLOAD_TIMEOUT)
        except grpc.RpcError as exc:
            raise self._error(exc, "Upgrade") from exc
        return resp

    def rollback(self) -> Accepted:
        return self._accepted(self._unary("Rollback", pb.RollbackRequest(), pb.SequenceAccepted))

    def reset(self, *, wipe: Sequence[str] = (), graceful: bool = True, reboot: bool = False,
              force: bool = False) -> Accepted:
        req = pb.ResetRequest(wipe=list(wipe), graceful=graceful, reboot=reboot, force=force)
        return self._accepted(self._unary("Reset", req, pb.SequenceAccepted))

    def reboot(self, *, force: bool = False) -> Accepted:
        return self._accepted(self._unary("Reboot", pb.RebootRequest(force=force), pb.SequenceAccepted))

    def shutdown(self, *, force: bool = False) -> Accepted:
        return self._accepted(self._unary("Shutdown", pb.ShutdownRequest(force=force), pb.SequenceAccepted))

    def generate_client_configuration(self, roles: Sequence[str], ttl_seconds: int, name: str = "") -> dict[str, bytes]:
        r = self._unary("GenerateClientConfiguration",
                        pb.ConfigNewRequest(roles=list(roles), ttl_seconds=ttl_seconds, name=name),
                        pb.ConfigNewResponse)
        return {"ca": bytes(r.ca_crt), "crt": bytes(r.crt), "key": bytes(r.key)}

    # -- streams ---------------------------------------------------------------------------------------
    def audit_export(self, out: IO[bytes], *, from_seq: int = 0, to_seq: int = -1,
                     progress: Callable[[int], None] | None = None, timeout: float | None = None) -> int:
        """Write the node's audit bundle for ``from_seq..to_seq`` to ``out``; returns the bytes written."""
        call = self._stub.AuditExport(pb.AuditExportRequest(from_seq=from_seq, to_seq=to_seq),
                                      timeout=timeout or UPLOAD_TIMEOUT)
        written = 0
        try:
            for chunk in call:
                out.write(chunk.data)
                written += len(chunk.data)
                if progress is not None:
                    progress(written)
        except grpc.RpcError as exc:
            raise self._error(exc, "AuditExport") from exc
        finally:
            call.cancel()
        return written

    def events(self, *, since: int = 0, tail: int | None = None, follow: bool = False, kinds: Sequence[str] = (),
               actor: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        """One Events stream, decoded; it ends when the node ends it (no reconnection: see ``follow``)."""
        req = pb.EventsRequest(since_seq=-1 if tail is not None else since, tail_events=tail or 0, follow=follow,
                               kinds=list(kinds), actor=actor or "")
        if timeout is None:
            timeout = None if follow else UPLOAD_TIMEOUT
        call = self._stub.Events(req, timeout=timeout)
        try:
            for batch in call:
                for raw in batch.raw:
                    yield decode_event(bytes(raw))
        except grpc.RpcError as exc:
            raise self._error(exc, "Events") from exc
        finally:
            call.cancel()

    def logs(self, service: str = "agent", *, since: int = 0, tail: int | None = None, follow: bool = False,
             retry_for: float = 600.0, sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[int, bytes]]:
        """(position, JSON line) of one service's log from ``since`` (or the last ``tail``); with ``follow``, a
        lost stream is reopened from the next position not yet seen, so a node's restart loses no line."""
        next_pos, use_tail, down_since = since, tail is not None, None
        while True:
            req = pb.LogsRequest(service=service, since=-1 if use_tail else next_pos,
                                 tail=(tail or 0) if use_tail else 0, follow=follow)
            call = self._stub.Logs(req, timeout=None if follow else UPLOAD_TIMEOUT)
            try:
                for batch in call:
                    use_tail, down_since = False, None
                    for i, line in enumerate(batch.lines):
                        pos = batch.first_position + i
                        if pos >= next_pos:
                            next_pos = pos + 1
                            yield pos, bytes(line)
                    next_pos = max(next_pos, batch.next_position)
                if not follow:
                    return
            except grpc.RpcError as exc:
                error = self._error(exc, "Logs")
                if not follow or not _retryable(exc, error):
                    raise error from exc
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > retry_for:
                    raise error from exc
            finally:
                call.cancel()
            sleep(_BACKOFF_MAX)

    def dmesg(self, *, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
        """The kernel's records (JSON lines) of a node with a kernel of its own."""
        call = self._stub.Dmesg(pb.DmesgRequest(tail=tail or 0, follow=follow),
                                timeout=None if follow else UPLOAD_TIMEOUT)
        try:
            for batch in call:
                yield from (bytes(line) for line in batch.lines)
        except grpc.RpcError as exc:
            raise self._error(exc, "Dmesg") from exc
        finally:
            call.cancel()

    def follow(self, since: int = 0, *, tail: int | None = None, kinds: Sequence[str] = (), actor: str | None = None,
               deadline: float | None = None, retry_for: float = 600.0,
               on_disconnect: Callable[[GravenError], bool] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[Event]:
        """Every event from ``since`` (or the last ``tail``) on, each seq exactly once, in order, forever.

        A lost stream is reopened from the next seq not yet seen, with backoff; ``on_disconnect(error)``
        is told of each loss and may return False to end the generator. The generator ends at ``deadline``
        (``time.monotonic()``); it raises ``Unavailable`` once the node stayed unreachable ``retry_for``
        seconds, and any other error at once.
        """
        next_seq = since
        use_tail = tail is not None
        down_since: float | None = None
        backoff = _BACKOFF_MIN
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            req = pb.EventsRequest(since_seq=-1 if use_tail else next_seq, tail_events=(tail or 0) if use_tail else 0,
                                   follow=True, kinds=list(kinds), actor=actor or "")
            opened = time.monotonic()
            got_batch = False
            call = self._stub.Events(req, timeout=remaining)
            try:
                for batch in call:
                    got_batch, use_tail = True, False
                    for raw in batch.raw:
                        event = decode_event(bytes(raw))
                        if event.seq < next_seq:
                            continue  # already seen before the reconnection
                        next_seq = event.seq + 1
                        yield event
                    next_seq = max(next_seq, batch.next_seq)
                error: GravenError = Unavailable(f"node {self.endpoint} ended the event stream", node=self.endpoint)
            except grpc.RpcError as exc:
                code, _ = _status(exc)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None \
                        and time.monotonic() >= deadline - 0.01:
                    return
                error = self._error(exc, "Events")
                if not _retryable(exc, error):
                    raise error from exc
            finally:
                call.cancel()
            if on_disconnect is not None and not on_disconnect(error):
                return
            now = time.monotonic()
            if got_batch or now - opened > 5.0:
                down_since, backoff = None, _BACKOFF_MIN
            down_since = down_since or now
            if now - down_since > retry_for:
                raise Unavailable(f"node {self.endpoint} stayed unreachable for {retry_for:.0f}s "
                                  f"(waiting for seq {next_seq}): {error.message}", node=self.endpoint, seq=next_seq)
            wait = backoff if deadline is None else min(backoff, max(0.0, deadline - now))
            sleep(wait)
            backoff = min(backoff * 2, _BACKOFF_MAX)


def _json_rows(text: str) -> list[dict[str, object]]:
    """A table's rows sent as JSON (a list of objects); anything else in it is dropped."""
    data = json.loads(text) if text else []
    return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []
