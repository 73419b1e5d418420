"""Prometheus metrics of a node.

Most of them are a projection of the signed log: sequences, phases and tasks with their outcomes and durations,
boots, failed boots and fallbacks by slot, config applies by mode, denials, checkpoints. They are folded from
the log at scrape time, from where the last scrape stopped, so they agree with the log by construction and
cost the append path nothing; after an agent restart the fold starts again at seq 0 and counts the log's whole
life. Only what the log does not hold is counted by the process itself: append latency and API calls.

No label takes an unbounded value: no seq, boot id or client serial (``api._calls`` bounds the method names).
"""

from __future__ import annotations

import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.metrics_core import Metric

from errors import Unavailable
from events import Event, Kind, decode_event, read_payload
from events.payloads import (
    ApiDenied,
    ApiRefused,
    BootFailed,
    BootFallback,
    BootStarted,
    Checkpointed,
    ConfigApplied,
    PhaseFailed,
    PhaseStopped,
    SequenceFailed,
    SequenceStopped,
    TaskFailed,
    TaskStopped,
)
from fsm import Stage

__all__ = ["MetricsEndpoint", "NodeMetrics", "NodeView"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
APPEND_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
STAGES = tuple(stage.value for stage in Stage)


@dataclass(frozen=True)
class NodeView:
    """What a scrape reads from the live node besides its log."""

    stage: str
    boot_id: str
    next_seq: int
    log_bytes: int  # the log's files on EPHEMERAL


class _SyncedRegistry(CollectorRegistry):
    """A registry that brings the projection up to date before every collection."""

    def __init__(self, before: Callable[[], None]) -> None:
        super().__init__(auto_describe=True)
        self._before = before

    def collect(self) -> Iterable[Metric]:
        self._before()
        return super().collect()


class NodeMetrics:
    def __init__(self, *, read_raw: Callable[[int], Iterator[tuple[int, bytes]]],
                 view: Callable[[], NodeView]) -> None:
        self._read_raw, self._view = read_raw, view
        self._next = 0
        self._committed: set[str] = set()  # boot ids with a boot.committed
        self._lock = threading.Lock()
        self.registry = _SyncedRegistry(self.sync)
        r = self.registry
        self.events = Counter("graven_log_events", "Events in the signed log, by kind.", ["kind"], registry=r)
        self.event_bytes = Counter("graven_log_event_bytes", "Bytes of the encoded, signed events in the log.",
                                   registry=r)
        self.checkpoints = Counter("graven_log_checkpoints", "Signed Merkle checkpoints in the log.", ["sealed"],
                                   registry=r)
        self.next_seq = Gauge("graven_log_next_seq", "The seq the next event will take.", registry=r)
        self.log_size = Gauge("graven_log_size_bytes", "Size of the log's files on EPHEMERAL.", registry=r)
        self.append = Histogram("graven_log_append_seconds", "Time from submitting an event to its being durable.",
                                buckets=APPEND_BUCKETS, registry=r)
        self.sequences = Counter("graven_sequences", "Sequences that ended, by outcome.", ["sequence", "outcome"],
                                 registry=r)
        self.sequence_seconds = Histogram("graven_sequence_duration_seconds", "Duration of ended sequences.",
                                          ["sequence"], buckets=DURATION_BUCKETS, registry=r)
        self.phases = Counter("graven_phases", "Phases that ended, by outcome.", ["sequence", "phase", "outcome"],
                              registry=r)
        self.phase_seconds = Histogram("graven_phase_duration_seconds", "Duration of ended phases.",
                                       ["sequence", "phase"], buckets=DURATION_BUCKETS, registry=r)
        self.tasks = Counter("graven_tasks", "Tasks that ended, by outcome.", ["sequence", "task", "outcome"],
                             registry=r)
        self.task_seconds = Histogram("graven_task_duration_seconds", "Duration of ended tasks.",
                                      ["sequence", "task"], buckets=DURATION_BUCKETS, registry=r)
        self.boots = Counter("graven_boots", "Boots started, by slot.", ["slot"], registry=r)
        self.boots_failed = Counter("graven_boots_failed", "Boots that failed before they were committed, by slot.",
                                    ["slot"], registry=r)
        self.fallbacks = Counter("graven_boot_fallbacks", "Fallbacks of the bootloader to the other slot.",
                                 ["from_slot", "to_slot"], registry=r)
        self.config_applies = Counter("graven_config_applies", "Machine configs applied, by mode.", ["mode"],
                                      registry=r)
        self.config_reverts = Counter("graven_config_reverts", "Configs on trial reverted.", registry=r)
        self.denials = Counter("graven_api_denials", "API calls denied by role.", ["method"], registry=r)
        self.refusals = Counter("graven_api_refusals", "API requests recorded, then refused.", ["method", "code"],
                                registry=r)
        self.calls = Counter("graven_api_requests", "API calls served, by method and gRPC status code.",
                             ["method", "code"], registry=r)
        self.call_seconds = Histogram("graven_api_request_duration_seconds", "Time to serve an API call.",
                                      ["method"], buckets=API_BUCKETS, registry=r)
        self.stage = Gauge("graven_stage", "1 for the node's current stage.", ["stage"], registry=r)
        self.ready = Gauge("graven_ready", "1 when the node runs a committed boot.", registry=r)
        self.image = Info("graven_image", "The image the node runs.", registry=r)

    # -- what the process sees ------------------------------------------------------------------------------
    def set_image(self, *, version: str, slot: str, digest: str) -> None:
        self.image.info({"version": version, "slot": slot or "none", "digest": digest})

    def observe_append(self, seconds: float) -> None:
        self.append.observe(seconds)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.call_seconds.labels(method).observe(seconds)

    # -- the projection of the log ----------------------------------------------------------------------------
    def sync(self) -> None:
        with self._lock:
            for seq, raw in self._read_raw(self._next):
                self._fold(decode_event(raw, seq=seq), len(raw))
                self._next = seq + 1
            view = self._view()
        self.next_seq.set(view.next_seq)
        self.log_size.set(view.log_bytes)
        for stage in {*STAGES, view.stage}:
            self.stage.labels(stage).set(1 if stage == view.stage else 0)
        self.ready.set(1 if view.stage == Stage.RUNNING.value and view.boot_id in self._committed else 0)

    def _fold(self, event: Event, size: int) -> None:
        kind = event.kind
        self.events.labels(kind).inc()
        self.event_bytes.inc(size)
        if kind == Kind.BOOT_COMMITTED:
            self._committed.add(event.boot_id)
        elif kind == Kind.CONFIG_REVERTED:
            self.config_reverts.inc()
        elif kind in _READ:  # the payload only of the kinds a metric reads (a scrape folds every new event)
            self._count(read_payload(event))

    def _count(self, p: object) -> None:
        match p:
            case Checkpointed():
                self.checkpoints.labels(str(p.sealed).lower()).inc()
            case BootStarted():
                self.boots.labels(_slot(p.slot)).inc()
            case BootFailed():
                self.boots_failed.labels(_slot(p.slot)).inc()
            case BootFallback():
                self.fallbacks.labels(_slot(p.from_slot), _slot(p.to_slot)).inc()
            case SequenceStopped() | SequenceFailed():
                self.sequences.labels(_s(p.sequence), _s(p.outcome)).inc()
                self.sequence_seconds.labels(_s(p.sequence)).observe(_seconds(p.duration_ns))
            case PhaseStopped() | PhaseFailed():
                outcome = "failed" if isinstance(p, PhaseFailed) else _s(p.outcome)
                self.phases.labels(_s(p.sequence), _s(p.phase), outcome).inc()
                self.phase_seconds.labels(_s(p.sequence), _s(p.phase)).observe(_seconds(p.duration_ns))
            case TaskStopped() | TaskFailed():
                outcome = "failed" if isinstance(p, TaskFailed) else _s(p.outcome)
                self.tasks.labels(_s(p.sequence), _s(p.task), outcome).inc()
                self.task_seconds.labels(_s(p.sequence), _s(p.task)).observe(_seconds(p.duration_ns))
            case ConfigApplied():
                self.config_applies.labels(_s(p.mode)).inc()
            case ApiDenied():
                self.denials.labels(_s(p.method)).inc()
            case ApiRefused():
                self.refusals.labels(_s(p.method), _s(p.code)).inc()


_READ = frozenset({Kind.CHECKPOINT, Kind.BOOT_STARTED, Kind.BOOT_FAILED, Kind.BOOT_FALLBACK, Kind.SEQUENCE_STOPPED,
                   Kind.SEQUENCE_FAILED, Kind.PHASE_STOPPED, Kind.PHASE_FAILED, Kind.TASK_STOPPED, Kind.TASK_FAILED,
                   Kind.CONFIG_APPLIED, Kind.API_DENIED, Kind.API_REFUSED})


def _s(value: str | None) -> str:
    return value or "none"


def _slot(value: str | None) -> str:
    return value if value in ("A", "B") else "none"


def _seconds(ns: int) -> float:
    return ns / 1e9 if ns >= 0 else 0.0


class MetricsEndpoint:
    """The Prometheus text format over HTTPS on ``host:port``; the client must present a certificate from the
    machine CA (any role). A scrape without one fails in the TLS handshake."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, *, ca_pem: bytes, cert_pem: bytes,
                 key_pem: bytes) -> None:
        self.address = f"{host}:{port}"
        with tempfile.TemporaryDirectory(prefix="graven-metrics-") as tmp:  # ssl loads PEMs only from files
            files = {}
            for name, data in (("ca.crt", ca_pem), ("tls.crt", cert_pem), ("tls.key", key_pem)):
                path = Path(tmp) / name
                path.write_bytes(data)
                path.chmod(0o600)
                files[name] = str(path)
            try:
                self._server, self._thread = start_http_server(
                    port, host, registry, certfile=files["tls.crt"], keyfile=files["tls.key"],
                    client_cafile=files["ca.crt"], client_auth_required=True,
                    tls_min_version=ssl.TLSVersion.TLSv1_2)
            except OSError as exc:
                raise Unavailable(f"metrics cannot listen on {self.address}: {exc.strerror or exc}",
                                  service="metrics") from exc

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
