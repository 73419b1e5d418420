"""Load generator: write a real signed log of N varied events through the node's own append path.

    python bench/hammer.py --events N --out DIR [--appenders K] [--checkpoint-every C] [--seed S]

Writes ``DIR/log`` (the LMDB log), ``DIR/ca.pem`` (the CA certificate: all an auditor needs), and for further
experiments ``DIR/ca-key.pem`` and ``DIR/log-key.pem`` (the log key in force at the end), both mode 0600.

The history is a node's: boots (bootloader selection, measured image, fallbacks), FSM transitions, boot and
upgrade sequences with their phases and concurrent tasks (some failing), configuration applied with diffs by
operators, denied API calls; each boot reopens the log under a new boot id and ends with a sealed checkpoint,
and the log key is rotated once, half-way. Events go through ``LmdbEventLog.append_async`` from K asyncio
tasks that keep up to K appends in flight, in the order the history gives them.

    # then, for instance
    gravenctl audit verify DIR/log --ca DIR/ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Pki, key_pem, write_private

from events import NODE, Actor, Kind
from pki import private_key_pem
from storage import LmdbEventLog, LogReader

BOOTLOADER = Actor("bootloader")
OPERATORS = [Actor("alice@example.com", ("os:admin",)), Actor("ci-deployer", ("os:operator",)),
             Actor("bob@example.com", ("os:admin",))]
READERS = [Actor("grafana", ("os:reader",)), Actor("carol@example.com", ("os:reader",))]
BOOT_PHASES = {"image": ["measure"], "network": ["links", "addresses", "routes", "hostname"],
               "services": ["api", "health", "time-sync"], "ready": ["health-checks"], "commit": ["mark-good"]}
UPGRADE_PHASES = {"verify": ["fetch", "verify-image"], "write": ["write-slot"], "bootloader": ["arm-slot"],
                  "stop": ["stop-services", "seal-log"]}
CONFIG_PATHS = ["/machine/network/hostname", "/machine/network/interfaces/0/mtu", "/machine/audit/checkpointEvery",
                "/machine/network/interfaces/0/addresses/1", "/machine/install/image", "/machine/certSANs/2"]
DENIED = ["Reset", "Upgrade", "ApplyConfiguration", "Reboot", "Shutdown", "Rollback"]

Step = tuple[str, dict[str, Any], Actor]


def _digest(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(16)).hexdigest()


class History:
    """A plausible node history, boot after boot; ``boot()`` yields one boot's events in causal order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.slot = "A"
        self.versions = {"A": "v1.0.0", "B": None}
        self.boot_number = 0
        self.config_version = 1
        self.config = _digest(rng)
        self.minor = 0

    def _sequence(self, name: str, phases: dict[str, list[str]], actor: Actor) -> Iterator[Step]:
        r = self.rng
        yield Kind.SEQUENCE_STARTED, {"sequence": name, "phases": list(phases), "request": str(uuid.UUID(
            int=r.getrandbits(128)))}, actor
        total = 0
        for index, (phase, tasks) in enumerate(phases.items()):
            yield Kind.PHASE_STARTED, {"sequence": name, "phase": phase, "index": index, "count": len(phases)}, NODE
            for task in tasks:
                yield Kind.TASK_STARTED, {"sequence": name, "phase": phase, "task": task}, NODE
            took = 0
            for task in tasks:
                d = int(r.lognormvariate(16, 1.5))
                took = max(took, d)
                if r.random() < 0.01:
                    yield Kind.TASK_FAILED, {"sequence": name, "phase": phase, "task": task, "duration_ns": d,
                                             "error": "link eth1 has no carrier", "code": "UNAVAILABLE",
                                             "fatal": False}, NODE
                else:
                    yield Kind.TASK_STOPPED, {"sequence": name, "phase": phase, "task": task, "duration_ns": d,
                                              "outcome": "ok"}, NODE
            total += took
            yield Kind.PHASE_STOPPED, {"sequence": name, "phase": phase, "duration_ns": took, "outcome": "ok"}, NODE
        yield Kind.SEQUENCE_STOPPED, {"sequence": name, "outcome": "ok", "duration_ns": total}, NODE

    def _config(self) -> Step:
        r = self.rng
        diff = [{"op": r.choice(["replace", "add", "remove"]), "path": r.choice(CONFIG_PATHS),
                 "value": r.choice([1500, 9000, f"node-{r.randrange(100)}", "10.0.0.7/24", 512, None])}
                for _ in range(r.randint(1, 4))]
        self.config_version += 1
        self.config = _digest(r)
        mode = r.choices(["auto", "no-reboot", "try", "staged"], [6, 3, 1, 1])[0]
        kind = Kind.CONFIG_STAGED if mode == "staged" else Kind.CONFIG_APPLIED
        payload: dict[str, Any] = {"digest": self.config, "diff": diff}
        if kind == Kind.CONFIG_APPLIED:
            payload |= {"mode": mode, "version": self.config_version}
        return kind, payload, r.choice(OPERATORS)

    def _denied(self) -> Step:
        who = self.rng.choice(READERS)
        return Kind.API_DENIED, {"method": self.rng.choice(DENIED), "subject": who.id, "roles": list(who.roles),
                                 "reason": "role os:reader may not call this method"}, who

    def boot(self, boot_id: str, size: int) -> Iterator[Step]:
        """About ``size`` events of one boot; the caller seals the log after them (reboot)."""
        r = self.rng
        tries = r.randint(1, 3)
        yield Kind.BOOT_SELECTED, {"slot": self.slot, "tries_left": tries, "reason": "default"}, BOOTLOADER
        if self.versions["B" if self.slot == "A" else "A"] and r.random() < 0.05:
            other = "B" if self.slot == "A" else "A"
            yield Kind.BOOT_FALLBACK, {"from_slot": self.slot, "to_slot": other, "reason": "tries exhausted"}, \
                BOOTLOADER
            self.slot = other
        version = self.versions[self.slot] or "v1.0.0"
        digest = hashlib.sha256(version.encode()).hexdigest()
        yield Kind.BOOT_STARTED, {"boot_id": boot_id, "slot": self.slot, "version": version, "image_digest": digest,
                                  "boot_number": self.boot_number}, NODE
        yield Kind.IMAGE_MEASURED, {"slot": self.slot, "version": version, "digest": digest}, BOOTLOADER
        self.boot_number += 1
        yield Kind.FSM_TRANSITION, {"trigger": "boot", "src": "initializing", "dst": "booting"}, NODE
        yield from self._sequence("boot", BOOT_PHASES, NODE)
        yield Kind.BOOT_COMMITTED, {"slot": self.slot}, NODE
        yield Kind.FSM_TRANSITION, {"trigger": "booted", "src": "booting", "dst": "running"}, NODE
        n = 40
        while n < size - 30:  # the running node: operators and readers
            step = self._config() if r.random() < 0.6 else self._denied()
            yield step
            n += 1
            if step[0] == Kind.CONFIG_APPLIED and r.random() < 0.2:
                yield from self._sequence("apply-config", {"apply": ["network", "services"]}, step[2])
                n += 10
        if r.random() < 0.3:  # an upgrade ends this boot
            target = "B" if self.slot == "A" else "A"
            self.minor += 1
            self.versions[target] = f"v1.{self.minor}.0"
            admin = r.choice(OPERATORS)
            yield Kind.FSM_TRANSITION, {"trigger": "upgrade", "src": "running", "dst": "upgrading"}, admin
            yield from self._sequence("upgrade", UPGRADE_PHASES, admin)
            yield Kind.IMAGE_INSTALLED, {"slot": target, "version": self.versions[target],
                                         "digest": hashlib.sha256(str(self.versions[target]).encode()).hexdigest(),
                                         "key_id": "image-key-1"}, admin
            self.slot = target
        yield Kind.FSM_TRANSITION, {"trigger": "reboot", "src": "running", "dst": "rebooting"}, NODE


@dataclass
class Result:
    events: int  # events in the log (appended + genesis, checkpoints, rotation)
    appended: int
    seconds: float
    boots: int
    path: Path

    @property
    def appends_per_s(self) -> float:
        return self.appended / self.seconds


async def _append_all(log: LmdbEventLog, steps: Iterator[Step], appenders: int, budget: int) -> int:
    """K tasks, each taking the next step and awaiting its durability: up to K appends in flight, in order."""
    count = 0

    async def worker() -> None:
        nonlocal count
        while count < budget:  # no await between the check, taking the step and queueing it: order is kept
            step = next(steps, None)
            if step is None:
                return
            count += 1
            await log.append_async(*step)

    await asyncio.gather(*(worker() for _ in range(appenders)))
    return count


def write_log(out: Path, events: int, *, appenders: int = 16, checkpoint_every: int = 1024, seed: int = 1,
              boot_size: tuple[int, int] = (1_000, 5_000), pki: Pki | None = None, quiet: bool = True) -> Result:
    """Append ``events`` events (genesis, checkpoints, seals and the rotation come on top); boots are
    ``boot_size`` events long, give or take, the last one cut where the budget ends."""
    rng = random.Random(seed)
    pki = pki or Pki.new()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "log"
    if path.exists():
        shutil.rmtree(path)
    (out / "ca.pem").write_bytes(pki.ca_pem())
    write_private(out / "ca-key.pem", private_key_pem(pki.ca_key))
    signer, cert = pki.log_key()
    history = History(rng)
    appended, boots, rotated = 0, 0, False
    origin = f"graven/{uuid.UUID(int=rng.getrandbits(128))}"
    t0 = time.perf_counter()
    while appended < events:
        boot_id = str(uuid.UUID(int=rng.getrandbits(128)))
        with LmdbEventLog(path, signer, boot_id=boot_id, origin=origin, cert_der=cert,
                          checkpoint_every=checkpoint_every) as log:
            steps = history.boot(boot_id, rng.randint(*boot_size))
            if not rotated and appended >= events // 2:  # the key rotation, half-way through the history
                signer, cert = pki.log_key()
                log.rotate(signer, cert)
                rotated = True
            appended += asyncio.run(_append_all(log, steps, appenders, events - appended))
            log.seal("reboot")
            boots += 1
            if not quiet:
                print(f"  boot {boots}: {appended}/{events} events", file=sys.stderr)
    seconds = time.perf_counter() - t0
    write_private(out / "log-key.pem", key_pem(signer))
    with LogReader(path) as reader:
        total = reader.next_seq()
    return Result(total, appended, seconds, boots, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, required=True, help="events to append (N)")
    ap.add_argument("--out", type=Path, required=True, help="output directory (DIR/log, DIR/ca.pem)")
    ap.add_argument("--appenders", type=int, default=16, help="concurrent asyncio appenders (default 16)")
    ap.add_argument("--checkpoint-every", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.events < 1 or args.appenders < 1:
        ap.error("--events and --appenders must be at least 1")
    res = write_log(args.out, args.events, appenders=args.appenders, checkpoint_every=args.checkpoint_every,
                    seed=args.seed, quiet=not args.verbose)
    print(f"{res.appended} events appended ({res.events} in the log with genesis, checkpoints and the rotation) "
          f"over {res.boots} boots by {args.appenders} appenders in {res.seconds:.2f} s: "
          f"{res.appends_per_s:,.0f} durable signed appends/s")
    print(f"log: {res.path}\nCA:  {args.out / 'ca.pem'}  (keys for experiments: ca-key.pem, log-key.pem, 0600)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
