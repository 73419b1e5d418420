"""Pull the plug during upgrades: SIGKILL the agent or the supervisor at random moments (at least 20 kills), on one
machine going back and forth between a prepared v1 and v2 (16 MiB of incompressible data each, so that writing a
slot takes a while). After every kill the machine boots a slot that is good (its boot committed, META says so,
the slot holds the image the node reports), the log always verifies, and every boot after a kill begins by sealing
the dead boot's tail.

The moments: a random event of the upgrade sequence as the node streams it (verify, write, the slot written,
the bootloader, the stop) plus a few milliseconds; the new slot's boot (a new agent process) plus up to 0.6 s;
or any time within 2.5 s of ``gravenctl upgrade`` starting. ``GRAVEN_KILL_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from machinekit import PY, Images, Machine, Machines, _env, unsealed_boots

from boot import Slot
from storage import SandboxDisk

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

KILLS = 20
EVENT_POINTS = [("phase.started", "verify"), ("phase.started", "write"), ("task.started", "write_inactive_slot"),
                ("image.installed", None), ("phase.started", "bootloader"), ("task.stopped", "arm_slot"),
                ("phase.started", "stop")]


def _big_image(images: Images, version: str) -> Path:
    blob = images.dir / "blob" / version
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(os.urandom(16 << 20))
    overlay = images.dir / f"overlay-big-{version}"
    (overlay / "usr/share").mkdir(parents=True, exist_ok=True)
    target = overlay / "usr/share/blob"
    if not target.exists():
        os.link(blob, target)
    return images.build(version, overlay=overlay, name=f"{version}-big.img")


def _watch(m: Machine, since: int, kind: str, what: str | None, seen: threading.Event, stop: threading.Event) -> None:
    """Set ``seen`` when the node streams the event (``what``: its phase or task)."""
    from errors import GravenError

    try:
        with m._client(insecure=False, timeout=5) as client:
            for event in client.follow(since, deadline=time.monotonic() + 20, retry_for=1.0,
                                       on_disconnect=lambda _e: not stop.is_set()):
                p: dict[str, Any] = event.payload
                name = p.get("phase") if kind.startswith("phase.") else p.get("task")
                if event.kind == kind and what in (None, name):
                    seen.set()
                    return
                if stop.is_set():
                    return
    except GravenError:
        return


def test_sigkill_during_upgrades_always_leaves_a_good_slot_and_a_valid_log(machines: Machines, images: Images,
                                                                           tmp_path: Path) -> None:
    seed = int(os.environ.get("GRAVEN_KILL_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    v1, v2 = _big_image(images, "v1"), _big_image(images, "v2")
    m = machines.installed("kill")
    disk = SandboxDisk(m.root, run_dir=tmp_path / "probe")  # reads slot records; mounts nothing
    kills: list[str] = []
    rounds = 0
    while len(kills) < KILLS:
        rounds += 1
        assert rounds < 3 * KILLS, f"only {len(kills)} kills in {rounds} rounds (seed {seed})"
        st = m.wait_running(timeout=60)
        target = v2 if st["version"] != "v2" else v1
        moment = rng.choice(["event"] * 4 + ["boot"] * 2 + ["time"])
        seen, stop = threading.Event(), threading.Event()
        watcher = None
        if moment == "event":
            kind, what = rng.choice(EVENT_POINTS)
            moment = f"{kind} {what or ''}".strip()
            watcher = threading.Thread(target=_watch, args=(m, st["log_next_seq"], kind, what, seen, stop),
                                       daemon=True)
            watcher.start()
            time.sleep(0.1)  # the stream is open before the upload starts
        agent_before = m.agent_pid()
        upgrade = subprocess.Popen(
            [PY, "-m", "cli", "--gravenconfig", str(m.secrets.gravenconfig), "-e", m.endpoint, "upgrade",
             "--image", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        if watcher is not None:
            seen.wait(15)
            time.sleep(rng.uniform(0, 0.02))
        elif moment == "boot":  # the new slot's boot: a new agent process, killed before or after it commits
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and m.agent_pid() in (agent_before, None):
                time.sleep(0.01)
            delay = rng.uniform(0, 0.6)
            moment = f"new boot +{delay:.2f}s"
            time.sleep(delay)
        else:
            delay = rng.uniform(0.3, 2.5)
            moment = f"+{delay:.2f}s"
            time.sleep(delay)
        victim = rng.choice(("agent", "agent", "supervisor"))
        if victim == "agent":
            if not m.kill_agent():
                victim = "nothing (between boots)"
        else:
            m.kill_supervisor()
            m.start()
        stop.set()
        if not victim.startswith("nothing"):
            kills.append(f"{victim} at {moment}")
        try:
            upgrade.wait(30)
        except subprocess.TimeoutExpired:
            upgrade.kill()
            upgrade.wait()
        st = m.wait_running(timeout=60)
        env = m.meta()
        slot = Slot.parse(st["slot"])
        where = f"round {rounds}, killed {victim} at {moment} (seed {seed})"
        assert env.slot(slot).good, f"{where}: running slot {slot.value} is not good in META: {env}"
        assert env.default is slot, f"{where}: META's default is {env.default}, the node runs {slot.value}"
        info = disk.slot_info(slot)
        assert info is not None and info.ok and info.version == st["version"], f"{where}: {info} vs {st}"
        if len(kills) % 7 == 0 or len(kills) >= KILLS:
            r = m.audit_verify()
            assert r.returncode == 0, f"{where}: audit verify failed:\n{r.stdout}\n{r.stderr}"
    events = m.events()
    started = {e["boot_id"] for e in events
               if e["kind"] == "sequence.started" and e["payload"]["sequence"] == "upgrade"}
    ended = {e["boot_id"] for e in events if e["kind"] in ("sequence.stopped", "sequence.failed")
             and e["payload"]["sequence"] == "upgrade"}
    failed = [e["payload"] for e in events if e["kind"] == "boot.failed"]
    assert not unsealed_boots(events), f"a crashed boot's tail was not sealed first (seed {seed}):\n" + "\n".join(
        unsealed_boots(events))
    print(f"\n{len(kills)} kills in {rounds} rounds, seed {seed}: {len(started - ended)} upgrades cut off "
          f"mid-sequence, {len(failed)} failed boots logged, "
          f"{sum(1 for e in events if e['kind'] == 'boot.fallback')} fallbacks")
    for k in kills:
        print("  killed", k)
