"""etcd on a local cluster of three controlplane nodes and a worker, each in its network namespace (root):
``gravenctl bootstrap`` and its refusals, the two other controlplane nodes joining on their own as learners
and promoted, Debian's ``etcdctl`` with the certificate ``gen etcd-client`` writes, a snapshot streamed with its
checksum, an etcd killed and restarted by its node, and a member that leaves while the others keep quorum; the
witnesses of cp2 and cp3 cosigning cp1's checkpoints and catching a truncated copy of its export; two operators'
concurrent rolling upgrades, the second refused naming the holder of the etcd upgrade lock.

Everything goes through ``gravenctl`` against real agents; the etcd binary is the host's (Debian etcd-server).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from machinekit import gravenctl

pytestmark = pytest.mark.timeout(300)


def _netns_problem() -> str | None:
    from provision._cluster import netns_problem

    return netns_problem()


_PROBLEM = _netns_problem()
ETCDCTL = shutil.which("etcdctl")
requires = pytest.mark.skipif(_PROBLEM is not None or ETCDCTL is None or shutil.which("etcd") is None,
                              reason=f"needs root, `ip netns` and Debian's etcd-server/etcd-client: {_PROBLEM}")


@dataclass
class Cluster:
    name: str
    state: Path
    data: dict[str, Any]

    @property
    def cps(self) -> list[dict[str, Any]]:
        return [n for n in self.data["nodes"] if n["type"] == "controlplane"]

    @property
    def worker(self) -> dict[str, Any]:
        return next(n for n in self.data["nodes"] if n["type"] == "worker")

    def ctl(self, *args: str, node: dict[str, Any], timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return gravenctl("--gravenconfig", self.data["gravenconfig"], "--nodes", node["endpoint"], *args,
                         timeout=timeout)

    def json(self, *args: str, node: dict[str, Any], timeout: float = 90) -> Any:
        r = self.ctl(*args, "-o", "json", node=node, timeout=timeout)
        assert r.returncode == 0, f"gravenctl {' '.join(args)}: {r.stdout}\n{r.stderr}\n{self.logs()}"
        return json.loads(r.stdout)

    def status(self, node: dict[str, Any]) -> dict[str, Any]:
        rows = self.json("etcd", "status", node=node)
        row: dict[str, Any] = rows[0]
        return row

    def events(self, node: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        r = self.ctl("events", "--kind", kind, "-o", "json", node=node)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def logs(self, lines: int = 12) -> str:
        out = []
        for n in self.data["nodes"]:
            try:
                text = Path(n["log"]).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- {n['name']} ---\n" + "\n".join(text))
        return "\n".join(out)

    def host_pid(self, node: dict[str, Any], pid: int) -> int:
        """The host's pid of a process the node reports: a container machine has its own pid namespace (its PID
        1 is the agent), a process machine shares the host's."""
        pid1 = self.pid1(node)
        if pid1 is None:
            return pid
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if os.readlink(d / "ns" / "pid") != ns:
                    continue
                nspid = next(x for x in (d / "status").read_text().splitlines() if x.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if int(nspid.split()[-1]) == pid:
                return int(d.name)
        raise AssertionError(f"no process {pid} in {node['name']}'s pid namespace")

    def pid1(self, node: dict[str, Any]) -> int | None:
        """A container machine's PID 1 as the host sees it (None for a process machine)."""
        try:
            return int((Path(node["root"]) / "run" / "pid1.pid").read_text())
        except (OSError, ValueError):
            return None

    def until(self, what: Any, timeout: float = 60, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, f"not within {timeout} s: {why}\n{self.logs()}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if _PROBLEM is not None or ETCDCTL is None:
        pytest.skip(f"needs root, `ip netns` and Debian's etcd: {_PROBLEM}")
    state = tmp_path_factory.mktemp("clusters")
    name = f"etcd-{os.getpid() % 100000}"
    try:
        r = gravenctl("cluster", "create", "--name", name, "--state", str(state), "--nodes", "4", "--controlplanes",
                      "3", "--network", "netns", "--health-timeout", "10", "--timeout", "90", "--no-merge", "-o",
                      "json", timeout=240)
        assert r.returncode == 0, r.stderr
        yield Cluster(name, state, json.loads(r.stdout))
    finally:
        d = gravenctl("cluster", "destroy", "--name", name, "--state", str(state), timeout=120)
        assert d.returncode == 0, d.stderr


@requires
def test_bootstrap_join_etcdctl_snapshot_restart_leave(cluster: Cluster, tmp_path: Path) -> None:
    cp1, cp2, cp3 = cluster.cps
    # before bootstrap every controlplane node's etcd waits, and says what for
    for n in (cp1, cp2, cp3):
        assert cluster.status(n)["service"]["state"] == "waiting"
    assert any(e["payload"]["for"] == "bootstrap" for e in cluster.events(cp1, "etcd.waiting"))

    # refusals, at once and with the reason
    r = cluster.ctl("bootstrap", node=cluster.worker)
    assert r.returncode == 1 and "worker" in r.stderr, r.stderr
    t0 = time.monotonic()
    out = cluster.json("bootstrap", node=cp1, timeout=90)
    assert out["name"] == cp1["name"]
    r = cluster.ctl("bootstrap", node=cp1)
    assert r.returncode == 1 and "already running" in r.stderr, r.stderr
    refused = [e for e in cluster.events(cp1, "api.refused") if e["payload"]["method"] == "etcd.bootstrap"]
    assert refused and "already running" in refused[-1]["payload"]["reason"]

    # the two others join on their own as learners and are promoted
    def voting() -> bool:
        members = cluster.json("etcd", "members", node=cp1)["members"]
        return len(members) == 3 and not any(m["learner"] for m in members)

    cluster.until(voting, 90, "three voting members")
    elapsed = time.monotonic() - t0
    logs = cluster.ctl("logs", "etcd", "--tail", "20", "-o", "json", node=cp1)  # etcd's own lines, via the ring
    assert logs.returncode == 0, logs.stderr
    lines = [json.loads(x) for x in logs.stdout.splitlines()]
    assert lines and all("level" in x and "msg" in x for x in lines)
    print(f"\nbootstrap to three voting members: {elapsed:.1f} s")
    for n in (cp2, cp3):
        assert cluster.events(n, "etcd.joined") and cluster.events(n, "etcd.promoted")
        cluster.until(lambda n=n: cluster.status(n)["service"]["healthy"], 30, f"{n['name']} healthy")
    r = cluster.ctl("bootstrap", node=cp2)
    assert r.returncode == 1 and "already running" in r.stderr, r.stderr
    # the tables for people
    table = cluster.ctl("etcd", "members", node=cp1)
    assert table.returncode == 0 and table.stdout.startswith("ID ") and table.stdout.count(" no ") == 3, table.stdout
    table = cluster.ctl("etcd", "status", node=cp2)
    assert table.returncode == 0 and "running" in table.stdout and "yes" in table.stdout, table.stdout

    # Debian's etcdctl with the certificate gen etcd-client writes, from the cluster's secrets
    client = tmp_path / "etcd-client"
    g = gravenctl("gen", "etcd-client", "--secrets", cluster.data["state_dir"], "-o", str(client))
    assert g.returncode == 0, g.stderr
    endpoints = ",".join(f"https://{n['address']}:2379" for n in (cp1, cp2, cp3))
    base = [str(ETCDCTL), f"--cacert={client / 'ca.crt'}", f"--cert={client / 'client.crt'}",
            f"--key={client / 'client.key'}", f"--endpoints={endpoints}", "--command-timeout=10s"]
    env = {"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "")}

    def etcdctl(*args: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", cp1["netns"], *base, *args], env=env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert etcdctl("put", "/e2e/key", "value").strip() == "OK"
    assert etcdctl("get", "/e2e/key", "--print-value-only").strip() == "value"
    health = etcdctl("endpoint", "health", "-w", "json")
    assert len(json.loads(health)) == 3 and all(h["health"] for h in json.loads(health))

    # witnessed logs: cp1's checkpoints cosigned by cp2's and cp3's witnesses; a truncated copy is caught
    _witness_catches_a_truncated_log(cluster, tmp_path)
    # two operators' concurrent rolling upgrades: one takes the etcd lock, the other is refused naming the holder
    v2 = tmp_path / "v2.img"
    built = gravenctl("image", "build", "--version", "v2", "--key", cluster.data["image_key"], "-o", str(v2),
                      timeout=120)
    assert built.returncode == 0, built.stderr
    _concurrent_rolling_upgrades(cluster, v2, etcdctl)

    # a snapshot streamed from cp2, its checksum checked, written atomically
    snap = tmp_path / "etcd.snapshot"
    row = cluster.json("etcd", "snapshot", str(snap), node=cp2)
    data = snap.read_bytes()
    assert row["size"] == len(data) and hashlib.sha256(data[:-32]).hexdigest() == row["sha256"]
    assert not snap.with_name(snap.name + ".part").exists()
    st = subprocess.run([str(ETCDCTL), "snapshot", "status", str(snap), "-w", "json"], env=env,
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 0 and json.loads(st.stdout)["totalKey"] >= 1, st.stderr

    # a container machine runs the etcd of its own OS image, never the host's
    pid = cluster.status(cp2)["service"]["pid"]
    host = cluster.host_pid(cp2, pid)
    pid1 = cluster.pid1(cp2)
    if pid1 is not None:
        exe, mine = os.stat(f"/proc/{host}/exe"), os.stat(f"/proc/{pid1}/root/usr/bin/etcd")
        assert (exe.st_dev, exe.st_ino) == (mine.st_dev, mine.st_ino)
        assert exe.st_dev == os.stat(f"/proc/{pid1}/root/etc/os-release").st_dev != os.stat("/usr/bin/etcd").st_dev

    # the node restarts an etcd that dies
    os.kill(host, signal.SIGKILL)
    cluster.until(lambda: cluster.status(cp2)["service"]["pid"] not in (None, pid)
                  and cluster.status(cp2)["service"]["healthy"], 60, "cp2's etcd restarted and healthy")
    assert any(e["payload"]["code"] == -signal.SIGKILL for e in cluster.events(cp2, "etcd.exited"))

    # one controlplane node powered off: the two others keep quorum, and a second one may not go down
    off = cluster.ctl("shutdown", node=cp3)
    assert off.returncode == 0, off.stderr
    cluster.until(lambda: cluster.ctl("version", node=cp3, timeout=15).returncode != 0, 60, "cp3 powered off")
    assert etcdctl("put", "/e2e/two-of-three", "ok").strip() == "OK"
    r = cluster.ctl("reboot", "-o", "json", node=cp2)
    assert r.returncode == 1, r.stdout
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "QUORUM_AT_RISK" and err["details"]["down"] == [cp3["name"]], err
    # (v2 is a good image: the node verifies it before it asks etcd about quorum; cp2 still runs v1)
    r = cluster.ctl("upgrade", "-i", str(v2), node=cp2)
    assert r.returncode == 1 and "QUORUM_AT_RISK" in r.stderr and cp3["name"] in r.stderr, r.stderr
    assert cluster.status(cp2)["service"]["state"] == "running"  # nothing happened to them

    # the dead member is removed by id; then a graceful reset of cp2 leaves etcd before wiping
    members = cluster.json("etcd", "members", node=cp1)["members"]
    dead = next(m for m in members if m["name"] == cp3["name"])
    cluster.until(lambda: cluster.ctl("etcd", "remove-member", dead["id"], node=cp1).returncode == 0, 30,
                  "remove-member of the powered-off cp3")
    assert sorted(m["name"] for m in cluster.json("etcd", "members", node=cp1)["members"]) == sorted(
        [cp1["name"], cp2["name"]])
    r = cluster.ctl("reset", "--graceful", "--force", node=cp2)
    assert r.returncode == 0, r.stderr
    cluster.until(lambda: [m["name"] for m in cluster.json("etcd", "members", node=cp1)["members"]] == [cp1["name"]],
                  60, "cp2 left etcd on its graceful reset")

    def put_alone() -> bool:  # cp2 may have led: a put racing the new election times out once ("leader failure")
        done = subprocess.run(["ip", "netns", "exec", cp1["netns"], *base, "put", "/e2e/alone", "ok"], env=env,
                              capture_output=True, text=True, timeout=30)
        return done.returncode == 0 and done.stdout.strip() == "OK"

    cluster.until(put_alone, 30, "a put on cp1, the last member")


def _cosigned(cluster: Cluster, origin: str) -> list[dict[str, Any]]:
    doc = cluster.json("audit", "witnessed", node=cluster.cps[1])
    return [d for d in doc["cosigned"] if d["origin"] == origin]


def _witness_catches_a_truncated_log(cluster: Cluster, tmp_path: Path) -> None:
    from events import read_bundle, write_bundle

    cp1, cp2, cp3 = cluster.cps
    origin = f"graven/{cp1['name']}"
    witnesses = {f"graven-witness/{cp2['name']}", f"graven-witness/{cp3['name']}"}
    cluster.until(lambda: {d["witness"] for d in _cosigned(cluster, origin)} == witnesses, 60,
                  f"{origin} cosigned by both other controlplane nodes' witnesses")
    worker = f"graven/{cluster.worker['name']}"  # the worker publishes through cp1's API
    cluster.until(lambda: {d["witness"] for d in _cosigned(cluster, worker)} == witnesses | {
        f"graven-witness/{cp1['name']}"}, 60, f"{worker} cosigned by the three witnesses")
    started = [e["payload"]["witness"] for e in cluster.events(cp2, "witness.started")]
    assert started and started[-1] == f"graven-witness/{cp2['name']}"
    assert any(e["payload"]["origin"] == origin for e in cluster.events(cp2, "witness.adopted"))
    table = cluster.ctl("audit", "witnessed", node=cp3)
    assert table.returncode == 0 and origin in table.stdout and "graven-witness/" in table.stdout, table.stdout

    # the auditor: the witness records first, then the export
    records = tmp_path / "witnessed.json"
    w = cluster.ctl("audit", "witnessed", "-o", str(records), node=cp2)
    assert w.returncode == 0, w.stderr
    size = max(d["size"] for d in json.loads(records.read_text())["cosigned"] if d["origin"] == origin)
    bundle = tmp_path / "cp1.tar"
    e = cluster.ctl("audit", "export", "-o", str(bundle), node=cp1)
    assert e.returncode == 0, e.stderr
    ca = cluster.data["ca_cert"]
    ok = cluster.json("audit", "verify", str(bundle), "--ca", ca, "--witnessed", str(records), node=cp2)
    assert ok["verdict"] == "ok" and {w["witness"] for w in ok["witnessed"]} == witnesses, ok

    # a copy cut right before the last cosigned checkpoint verifies alone, not against the witnesses
    with bundle.open("rb") as f:
        raw = list(enumerate(read_bundle(f).events))
    cut = tmp_path / "cut.tar"
    with cut.open("wb") as f:
        write_bundle(f, raw[: size - 1])
    alone = gravenctl("audit", "verify", str(cut), "--ca", ca)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    r = cluster.ctl("audit", "verify", str(cut), "--ca", ca, "--witnessed", str(records), "-o", "json", node=cp2)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["reason"] == "truncated" and doc["seq"] == size - 1, r.stdout
    assert doc["witness"] in witnesses and doc["checkpoint"]["size"] == size and origin in doc["message"]
    live = cluster.ctl("audit", "verify", str(cut), "--ca", ca, "--witness", node=cp3)  # from etcd, now
    assert live.returncode == 1 and "(truncated)" in live.stdout and "graven-witness/" in live.stdout, live.stdout


def _concurrent_rolling_upgrades(cluster: Cluster, v2: Path, etcdctl: Any) -> None:
    import threading

    cp1, cp2, _ = cluster.cps
    first: list[subprocess.CompletedProcess[str]] = []
    alice = threading.Thread(target=lambda: first.append(cluster.ctl(
        "upgrade", "--rolling", "-i", str(v2), "--timeout", "90s", "-o", "json", node=cp1, timeout=150)))
    alice.start()
    try:
        cluster.until(lambda: cp1["name"] in etcdctl("get", "/graven/locks/upgrade", "--print-value-only"), 60,
                      "cp1 holds the upgrade lock")
        r = cluster.ctl("upgrade", "--rolling", "-i", str(v2), "--timeout", "30s", "-o", "json", node=cp2)
    finally:
        alice.join(160)
    assert r.returncode == 1, r.stdout + r.stderr
    row = json.loads(r.stdout)["nodes"][0]
    assert row["outcome"] == "failed" and "[LOCKED]" in row["message"], row
    assert f"{cp1['name']} holds the etcd upgrade lock" in row["message"], row
    refused = [e["payload"] for e in cluster.events(cp2, "api.refused") if e["payload"]["method"] == "upgrade"]
    assert refused and refused[-1]["holder"] == cp1["name"]
    assert first and first[0].returncode == 0, (first[0].stdout + first[0].stderr) if first else "no result"
    assert json.loads(first[0].stdout)["nodes"][0]["outcome"] == "upgraded"
    # cp1 gives the lock back once its etcd is healthy again on v2; cp2 was not touched
    cluster.until(lambda: etcdctl("get", "/graven/locks/upgrade", "--print-value-only").strip() == "", 60,
                  "the upgrade lock released")
    assert cluster.events(cp1, "etcd.unlocked")
