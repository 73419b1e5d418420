"""Witnessed logs over etcd (``specs/event-log.md`` §13): every node publishes its signed checkpoints, and each
controlplane node's witness cosigns the other nodes' checkpoints that extend those it accepted before.

- ``Publisher``: follows the node's own log; when events have waited ``CHECKPOINT_AFTER`` seconds without a
  checkpoint it asks the log for one (unsealed, reason ``witness``), so a witness sees every event soon; it
  writes the latest checkpoint to ``/graven/witness/<origin>/checkpoint`` (compare-and-swap on the key's mod
  revision) with consistency proofs from the sizes the witnesses hold and from the one it published before.
- ``Witness``: reads every published checkpoint, applies ``events._witness.WitnessRule`` against what it
  accepted before (kept in its own state file, never taken from what a log publishes), cosigns and writes
  ``/graven/witness/<origin>/cosigned/<witness name>`` (compare-and-swap again).

Events (signed, in the node's log): ``witness.started``, ``witness.adopted`` (an origin's first checkpoint),
``witness.refused`` (once per origin and reason until it accepts one of that origin again),
``witness.unpublished`` (on a change of reason). A cosignature is not an event each time: each would need a
checkpoint, which the other witnesses would cosign, whose events would need checkpoints, forever; the
cosignatures themselves are the signed record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import config
from errors import GravenError, NotFound, VerificationError, WitnessRefused
from events import (
    WITNESS_PREFIX,
    WITNESS_UNIT,
    Cosigned,
    Event,
    Kind,
    MerkleLevels,
    Published,
    WitnessRecords,
    WitnessRule,
    checkpoint_key,
    cosigned_key,
    decode_event,
    leaf_hash,
    parse_note,
    payload_of,
    witness_name,
)
from events.payloads import Checkpointed, Genesis, KeyRotated
from pki import Ed25519Signer, issue_certificate, load_certificate, load_private_key, private_key_pem
from storage import write_durably

from ._etcd_service import EtcdService
from ._identity import node_name
from ._log import NodeLog
from ._logging import AGENT

if TYPE_CHECKING:  # etcd's stubs load with the first client (storage's lazy table), not at rest
    from storage import EtcdClient, EtcdKeyValue

__all__ = ["CHECKPOINT_AFTER", "CheckpointStore", "EtcdStore", "LogFollower", "Publisher", "RemoteStore", "Witness",
           "WitnessKey", "WitnessNode", "read_witnessed"]

CHECKPOINT_AFTER = 5.0  # seconds an event waits at most for a checkpoint a witness can cosign
EVERY = 1.0  # seconds between two passes of the publisher and of the witness
RETRY_MAX = 30.0  # seconds at most between two tries of a publisher that failed
Emit = Callable[[str, dict[str, object]], None]


class _Log(Protocol):
    def read_raw(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]: ...
    def checkpoint(self, reason: str) -> Event: ...


@dataclass
class LogFollower:
    """Reads a log as it grows: its leaf hashes, origin, certificate in force, and checkpoints (size, note, cert)."""

    read_raw: Callable[[int], Iterable[tuple[int, bytes]]]
    tree: MerkleLevels = field(default_factory=lambda: MerkleLevels([]))
    origin: str = ""
    cert: bytes = b""
    last: tuple[int, str, bytes] | None = None

    def update(self) -> None:
        new: list[bytes] = []
        for seq, raw in self.read_raw(self.tree.size):
            if seq != self.tree.size + len(new):
                break
            if b"log." in raw or b"key.rotated" in raw:  # cheap filter before decoding
                ev = decode_event(raw, seq=seq)
                if ev.kind == Kind.GENESIS:
                    genesis = payload_of(ev, Genesis)
                    self.origin, self.cert = genesis.origin, genesis.cert
                elif ev.kind == Kind.KEY_ROTATED:
                    self.cert = payload_of(ev, KeyRotated).cert
                elif ev.kind == Kind.CHECKPOINT:
                    cp = payload_of(ev, Checkpointed)
                    self.last = (cp.size, cp.note, self.cert)
            new.append(leaf_hash(raw))
        self.tree.extend(new)

    @property
    def uncovered(self) -> int:
        """Events after the last checkpoint (the checkpoint itself stands at seq = its size)."""
        return self.tree.size - (self.last[0] + 1 if self.last else 0)


class Publisher:
    """Publishes this node's checkpoints to etcd."""

    def __init__(self, log: _Log, emit: Emit) -> None:
        self.log = log
        self._emit = emit
        self.follower = LogFollower(lambda start: log.read_raw(start))
        self.published = 0
        self._uncovered_since: float | None = None
        self._why = ""
        self._failures = 0
        self._retry_at = 0.0  # after a failure, the next try waits (doubling, up to RETRY_MAX)

    async def step(self, store: CheckpointStore) -> int | None:
        """One pass; the size published, if it published one. Nothing is asked of the log (no checkpoint) and
        nothing is said (no event) before the store first answered: a node with no etcd to publish to (a worker
        of a cluster without one) keeps its log as it would without witnesses."""
        f = self.follower
        await asyncio.to_thread(f.update)
        now = time.monotonic()
        if f.uncovered <= 0:
            self._uncovered_since = None
        elif self._uncovered_since is None:
            self._uncovered_since = now
        due = self._uncovered_since is not None and now - self._uncovered_since >= CHECKPOINT_AFTER
        new = f.last is not None and f.last[0] != self.published
        if not f.origin or not (due or new) or now < self._retry_at:
            return None
        try:
            sizes = await store.held_sizes(f.origin) | {self.published}
            if due:
                await asyncio.to_thread(self.log.checkpoint, "witness")
                self._uncovered_since = None
                await asyncio.to_thread(f.update)
            if f.last is None or f.last[0] == self.published:
                return None
            size, note, cert = f.last
            proofs = {s: f.tree.consistency_proof(s, size) for s in sorted(sizes) if 0 < s < size}
            await store.publish(f.origin, Published(f.origin, note, cert, proofs, time.time_ns()).to_json())
        except GravenError as exc:
            self._failures += 1
            self._retry_at = time.monotonic() + min(RETRY_MAX, EVERY * 2.0 ** self._failures)
            if exc.message != self._why and self.published:  # news only once it has published
                self._why = exc.message
                self._emit(Kind.WITNESS_UNPUBLISHED, {"size": f.last[0] if f.last else 0, "reason": exc.message})
            AGENT.debug(f"witness publisher: {exc.message}")
            return None
        self._why, self._failures, self._retry_at = "", 0, 0.0
        self.published = size
        return size


class CheckpointStore(Protocol):
    """Where a publisher writes: etcd itself (controlplane nodes), or etcd through a controlplane node's API."""

    async def held_sizes(self, origin: str) -> set[int]: ...
    async def publish(self, origin: str, value: bytes) -> None: ...


class EtcdStore:
    """``CheckpointStore`` on an etcd client: the sizes in the witnesses' records, and a compare-and-swap write."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client

    async def held_sizes(self, origin: str) -> set[int]:
        sizes = set()
        for kv in await self.client.range(f"{WITNESS_PREFIX}{origin}/cosigned/".encode()):
            with contextlib.suppress(GravenError):
                sizes.add(Cosigned.from_json(kv.value).size)
        return sizes

    async def publish(self, origin: str, value: bytes) -> None:
        key = checkpoint_key(origin)
        for _ in range(3):  # another writer of this key (this node's previous boot) may race: read and swap again
            cur = await self.client.get(key)
            if await self.client.put_if_mod_revision(key, value, cur.mod_revision if cur else 0):
                return
        raise VerificationError(f"the checkpoint key {key.decode()} changed under this node three times in a row")


class RemoteStore:
    """``CheckpointStore`` through a controlplane node's API (a worker has no etcd certificate): the etcd query
    ``witnessed`` and the etcd action ``publish-checkpoint``, with a client certificate from the machine CA."""

    def __init__(self, endpoint: str, ca_pem: bytes, crt_pem: bytes, key_pem: bytes) -> None:
        self.endpoint = endpoint
        self._tls = (ca_pem, crt_pem, key_pem)

    def _call(self, method: str, action: str, args: dict[str, object]) -> object:
        from api import GravenClient
        from api import machine_pb2 as pb

        with GravenClient(self.endpoint, *self._tls, timeout=10.0) as client:
            resp = client._unary(method, pb.EtcdRequest(action=action, args_json=json.dumps(args)), pb.EtcdResponse)
        return json.loads(resp.json) if resp.json else {}

    async def held_sizes(self, origin: str) -> set[int]:
        doc = await asyncio.to_thread(self._call, "EtcdQuery", "witnessed", {"origin": origin})
        records = WitnessRecords.from_json(doc, f"the witness records of {self.endpoint}").only(origin)
        return {size for d in records.cosigned if isinstance(size := d.get("size"), int)}

    async def publish(self, origin: str, value: bytes) -> None:
        await asyncio.to_thread(self._call, "EtcdManage", "publish-checkpoint", {"value": value.decode()})


class WitnessKey:
    """The witness's own Ed25519 key and its certificate (``OU=graven-witness``, CN = node name) from the machine
    CA, kept under ``folder`` (EPHEMERAL: a reset makes a new witness, which adopts every log afresh)."""

    def __init__(self, folder: Path, node: str, ca_pem: bytes, ca_key_pem: bytes | None) -> None:
        self.folder = folder
        key_path, cert_path = folder / "key.pem", folder / "cert.der"
        if key_path.exists() and cert_path.exists():
            key = load_private_key(key_path.read_bytes())
            cert_der = cert_path.read_bytes()
        else:
            if ca_key_pem is None:
                raise VerificationError("machine.ca.key is not set: this node cannot certify a witness key")
            key = Ed25519PrivateKey.generate()
            ca_cert = load_certificate(ca_pem)
            cert = issue_certificate(load_private_key(ca_key_pem), ca_cert, key.public_key(), cn=node,
                                     unit=WITNESS_UNIT)
            cert_der = cert.public_bytes(serialization.Encoding.DER)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_durably(key_path, private_key_pem(key), mode=0o600)
            write_durably(cert_path, cert_der)
        self.signer = Ed25519Signer(key)
        self.cert_der = cert_der
        self.name = witness_name(load_certificate(cert_der))


class Witness:
    """Cosigns the checkpoints other nodes publish, by the witness rule."""

    def __init__(self, key: WitnessKey, ca_pem: bytes, emit: Emit, *, own_origin: str) -> None:
        self.key = key
        self.rule = WitnessRule(load_certificate(ca_pem))
        self._emit = emit
        self.own_origin = own_origin
        self._state_path = key.folder / "state.json"
        self.held: dict[str, Cosigned] = _load_state(self._state_path)
        self._refused: set[tuple[str, str]] = set()  # (origin, reason) said since the origin's last acceptance

    async def step(self, client: EtcdClient) -> list[str]:
        """One pass over every published checkpoint; the origins cosigned (or cosigned again) in it."""
        kvs = await client.range(WITNESS_PREFIX.encode())
        mine = {kv.key: kv for kv in kvs if kv.key.endswith(f"/cosigned/{self.key.name}".encode())}
        done = []
        for kv in kvs:
            if not kv.key.endswith(b"/checkpoint"):
                continue
            try:
                pub = Published.from_json(kv.value)
            except GravenError:
                continue
            if pub.origin == self.own_origin or kv.key != checkpoint_key(pub.origin):
                continue
            entry = await self._consider(pub)
            if entry is None:
                continue
            key = cosigned_key(entry.origin, self.key.name)
            current = mine.get(key)
            if current is not None and current.value == entry.to_json():
                continue
            if await client.put_if_mod_revision(key, entry.to_json(), _rev(current)):
                done.append(entry.origin)
        return done

    async def forget(self, origin: str) -> Cosigned | None:
        """Drop what this witness holds for ``origin`` (an operator's decision: the node was reset and its new log
        is to be adopted on first use); what it held, or None."""
        held = self.held.pop(origin, None)
        self._refused = {r for r in self._refused if r[0] != origin}
        if held is not None:
            await asyncio.to_thread(_save_state, self._state_path, self.held)
        return held

    async def _consider(self, pub: Published) -> Cosigned | None:
        """What this witness holds for ``pub``'s origin after seeing it (None: nothing to write)."""
        before = self.held.get(pub.origin)
        try:
            cp, _ = parse_note(pub.note)
            if before is not None and (cp.size, cp.root) == (before.size, before.root):
                return before
            held, _ = self.rule.accept(pub.note, pub.cert, before.held() if before else None, pub.proofs,
                                       name=self.key.name, signer=self.key.signer, timestamp=int(time.time()))
        except (WitnessRefused, VerificationError) as exc:
            reason = exc.reason if isinstance(exc, WitnessRefused) else "malformed"
            size = exc.details.get("size", -1)
            size = size if isinstance(size, int) else -1
            if (pub.origin, reason) not in self._refused:  # a log that keeps growing wrong: said once, not each time
                self._refused.add((pub.origin, reason))
                self._emit(Kind.WITNESS_REFUSED, {"origin": pub.origin, "size": size, "reason": reason,
                                                  "message": exc.message, "code": exc.code.name,
                                                  "witnessed_size": before.size if before else None})
            return before
        entry = Cosigned.of(held, self.key.name, self.key.cert_der, pub.cert)
        self.held[pub.origin] = entry
        self._refused = {r for r in self._refused if r[0] != pub.origin}
        await asyncio.to_thread(_save_state, self._state_path, self.held)
        if before is None:
            self._emit(Kind.WITNESS_ADOPTED, {"origin": held.origin, "size": held.size, "root": held.root,
                                              "witness": self.key.name})
        return entry


def _rev(kv: EtcdKeyValue | None) -> int:
    return kv.mod_revision if kv is not None else 0


def _load_state(path: Path) -> dict[str, Cosigned]:
    try:
        doc = json.loads(path.read_text())
        return {str(o): Cosigned.from_json(v) for o, v in doc.items()}
    except (OSError, ValueError, GravenError):
        return {}


def _save_state(path: Path, held: dict[str, Cosigned]) -> None:
    write_durably(path, json.dumps({o: e.to_dict() for o, e in sorted(held.items())}, sort_keys=True).encode())


def read_witnessed(kvs: list[EtcdKeyValue]) -> dict[str, object]:
    """The witness records under ``/graven/witness/`` as ``gravenctl audit witnessed`` writes them."""
    return WitnessRecords.of((kv.key, kv.value) for kv in kvs).to_json()


class WitnessNode:
    """What the agent holds: the publisher (every node with etcd) and the witness (controlplane nodes)."""

    def __init__(self, emit: Emit, log: NodeLog) -> None:
        self._emit = emit
        self.log = log
        self.publisher: Publisher | None = None
        self.witness: Witness | None = None
        self._task: asyncio.Task[None] | None = None
        self._remote = False

    async def start_on(self, svc: EtcdService, cfg: config.MachineConfig | None, ephemeral: Path) -> None:
        """Start beside the node's etcd service (a node without one neither publishes nor witnesses)."""
        if cfg is None:
            return
        await self.start(svc.local_client, lambda: svc.healthy, folder=ephemeral / "witness", node=svc.s.name,
                         ca_pem=cfg.machine.ca.crt_pem(), ca_key_pem=cfg.machine.ca.key_pem())

    async def start_remote(self, cfg: config.MachineConfig | None) -> None:
        """A worker (no etcd of its own): publish through the controlplane endpoint of its config
        (``cluster.endpoint``), with a client certificate it issues itself from the machine CA."""
        ca_key = cfg.machine.ca.key_pem() if cfg is not None else None
        if cfg is None or cfg.machine.type != "worker" or ca_key is None or self._task is not None:
            return
        from api import issue_client_certificate

        ca_pem = cfg.machine.ca.crt_pem()
        crt, key = issue_client_certificate(load_private_key(ca_key), load_certificate(ca_pem), cn=node_name(cfg),
                                            roles=("os:admin",))
        store = RemoteStore(cfg.cluster.endpoint, ca_pem, crt, key)
        self.publisher = publisher = Publisher(self.log, self._emit)

        async def run() -> None:
            while True:
                try:
                    await publisher.step(store)
                except Exception as exc:  # a bug must not stop publishing for the rest of the boot: say it, go on
                    AGENT.warning(f"witness publisher: {exc!r}")
                await asyncio.sleep(EVERY)

        self._remote = True
        self._task = asyncio.create_task(run())

    async def start(self, client: Callable[[], EtcdClient], healthy: Callable[[], bool], *, folder: Path,
                    node: str, ca_pem: bytes, ca_key_pem: bytes | None) -> None:
        """Publish and witness through the etcd ``client`` (made anew for each run) once ``healthy``."""
        self.publisher = Publisher(self.log, self._emit)
        await asyncio.to_thread(self.publisher.follower.update)
        try:
            key = await asyncio.to_thread(WitnessKey, folder, node, ca_pem, ca_key_pem)
        except GravenError as exc:
            self._emit(Kind.WITNESS_UNPUBLISHED, {"size": 0, "reason": f"no witness on this node: {exc.message}"})
        else:
            self.witness = Witness(key, ca_pem, self._emit, own_origin=self.publisher.follower.origin)
            self._emit(Kind.WITNESS_STARTED, {"witness": key.name, "key_id": key.signer.key_id,
                                              "holds": sorted(self.witness.held)})
        self._task = asyncio.create_task(self._run(client, healthy))

    async def _run(self, client: Callable[[], EtcdClient], healthy: Callable[[], bool]) -> None:
        while True:
            if not healthy():
                await asyncio.sleep(EVERY)
                continue
            try:
                async with client() as c:
                    while healthy():
                        if self.publisher is not None:
                            await self.publisher.step(EtcdStore(c))
                        if self.witness is not None:
                            await self.witness.step(c)
                        await asyncio.sleep(EVERY)
            except GravenError as exc:  # etcd unreachable for a moment: the next pass tries again
                AGENT.debug(f"witness: {exc.message}")
            except Exception as exc:  # a bug must not stop witnessing for the rest of the boot: say it, go on
                AGENT.warning(f"witness: {exc!r}")
            await asyncio.sleep(EVERY)

    async def forget(self, origin: str, actor: str) -> dict[str, object]:
        """``gravenctl etcd witness-forget ORIGIN``: this node's witness drops its state for ``origin`` (a signed
        ``witness.forgotten`` event), so that the next checkpoint of that origin is adopted on first use."""
        if self.witness is None:
            raise NotFound("this node runs no witness (only controlplane nodes with etcd do)")
        held = await self.witness.forget(origin)
        if held is None:
            raise NotFound(f"this node's witness holds nothing for {origin}", origin=origin)
        out = {"origin": origin, "witness": self.witness.key.name, "size": held.size, "root": held.root.hex(),
               "actor": actor}
        self._emit(Kind.WITNESS_FORGOTTEN, out)
        return out

    async def stop(self, *, remote_only: bool = False) -> None:
        """Stop publishing and witnessing (``remote_only``: only a worker's publishing, which the API carries)."""
        if remote_only and not self._remote:
            return
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
