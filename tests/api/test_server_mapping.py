"""``api._server`` maps proto messages to the service's typed commands and its typed replies back, and nothing
else: the servicer in process, a caller with a real client certificate, a node that records what it is asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import pytest
from fakenode import Cluster

from api._pb import machine_pb2 as pb
from api._pki import issue_client_certificate
from api._server import MachineServicer
from config import ApplyMode, Change
from events import Actor
from sequencer import SequenceName
from service import (
    WIPE_ALL,
    Accepted,
    Applied,
    ApplyConfig,
    Command,
    Fallback,
    Reboot,
    Reset,
    Rollback,
    RunningSequence,
    Shutdown,
    Status,
    StatusDetails,
    Upgrade,
    VersionInfo,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Ctx:
    """A servicer context with the caller's certificate; an abort raises."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        return {"x509_pem_cert": [self.pem]}

    async def abort_with_status(self, status: Any) -> None:
        raise AssertionError(f"aborted: {status}")


class TypedNode:
    maintenance = False

    def __init__(self) -> None:
        self.asked: list[object] = []

    def version(self) -> VersionInfo:
        return VersionInfo(version="v2", image_digest="ab" * 32, slot="B", boot_id="b1", node="n1", kernel="6.1",
                           os_image="Graven v2", provisioner="container")

    def status(self) -> Status:
        return Status(
            stage="upgrading", ready=False, slot=None, version="v2", boot_id="b1", log_next_seq=42,
            config_digest="sha256:c", staged_config_digest=None, node="n1",
            sequence=RunningSequence(name=SequenceName.UPGRADE, actor="alice[os:admin]", started_seq=40),
            last_fallback=Fallback(from_slot="B", to_slot="A", reason="3 tries", seq=7),
            details=StatusDetails(slots={"A": {"good": True}}, last_sequence=None, durable_log=True, boots=3,
                                  try_config=None, network_platform="sandbox"))

    async def apply_config(self, cmd: ApplyConfig, actor: Actor) -> Applied:
        self.asked.append(cmd)
        return Applied(mode=ApplyMode.NO_REBOOT, changes=(Change(path="machine.network.hostname", op="replace",
                                                                 old="a", new="b"),),
                       digest="sha256:d", seq=9, warnings=("w",))

    async def request(self, cmd: Command, actor: Actor) -> Accepted:
        self.asked.append(cmd)
        return Accepted(sequence=cmd.sequence, seq=11)

    async def record_denied(self, method: str, actor: Actor, reason: str) -> None:
        raise AssertionError(f"denied {method}: {reason}")


@pytest.fixture
def admin(cluster: Cluster) -> Ctx:
    crt, _ = issue_client_certificate(cluster.secrets.ca_key, cluster.secrets.ca_cert, cn="alice",
                                      roles=["os:admin"])
    return Ctx(crt)


def test_status_and_version_are_the_records_field_for_field(admin: Ctx) -> None:
    servicer = MachineServicer(TypedNode())
    st = run(servicer.MachineStatus(pb.Empty(), admin))
    assert (st.stage, st.ready, st.slot, st.version, st.boot_id, st.log_next_seq, st.config_digest,
            st.staged_config_digest, st.node) == ("upgrading", False, "", "v2", "b1", 42, "sha256:c", "", "n1")
    assert (st.sequence.name, st.sequence.actor.id, st.sequence.started_seq) == ("upgrade", "alice[os:admin]", 40)
    assert (st.last_fallback.from_slot, st.last_fallback.to_slot, st.last_fallback.reason,
            st.last_fallback.seq) == ("B", "A", "3 tries", 7)
    assert json.loads(st.details_json) == {"slots": {"A": {"good": True}}, "last_sequence": None,
                                           "durable_log": True, "boots": 3, "try_config": None,
                                           "network_platform": "sandbox", "drift": None, "drift_error": None}
    v = run(servicer.Version(pb.Empty(), admin))
    assert (v.version, v.slot, v.node, v.kernel, v.os_image, v.provisioner) == ("v2", "B", "n1", "6.1", "Graven v2",
                                                                                 "container")


@pytest.mark.parametrize(("mode", "wanted"), [(pb.AUTO, ApplyMode.AUTO), (pb.NO_REBOOT, ApplyMode.NO_REBOOT),
                                              (pb.REBOOT, ApplyMode.REBOOT), (pb.STAGED, ApplyMode.STAGED),
                                              (pb.TRY, ApplyMode.TRY)])
def test_apply_configuration_becomes_an_apply_config_command(admin: Ctx, mode: int, wanted: ApplyMode) -> None:
    node = TypedNode()
    servicer = MachineServicer(node)
    out = run(servicer.ApplyConfiguration(pb.ApplyConfigurationRequest(data=b"x: 1", mode=mode, dry_run=True,
                                                                       try_timeout_seconds=30), admin))
    assert node.asked == [ApplyConfig(data=b"x: 1", mode=wanted, dry_run=True, try_timeout=30.0)]
    assert out.mode == pb.NO_REBOOT and out.digest == "sha256:d" and out.seq == 9 and list(out.warnings) == ["w"]
    assert json.loads(out.diff_json) == [{"path": "machine.network.hostname", "op": "replace", "old": "a",
                                          "new": "b"}]
    run(servicer.ApplyConfiguration(pb.ApplyConfigurationRequest(data=b"x: 1"), admin))
    assert node.asked[-1] == ApplyConfig(data=b"x: 1", try_timeout=60.0)  # no timeout given: the default


def test_sequence_rpcs_become_typed_commands(admin: Ctx) -> None:
    node = TypedNode()
    servicer = MachineServicer(node)
    accepted = run(servicer.Reset(pb.ResetRequest(), admin))
    assert (accepted.sequence, accepted.seq, accepted.actor.id) == ("reset", 11, "alice")
    run(servicer.Reset(pb.ResetRequest(wipe=["STATE"], graceful=True, reboot=True, force=True), admin))
    run(servicer.Reboot(pb.RebootRequest(force=True), admin))
    run(servicer.Shutdown(pb.ShutdownRequest(), admin))
    run(servicer.Rollback(pb.RollbackRequest(), admin))
    assert node.asked == [Reset(wipe=WIPE_ALL), Reset(wipe=("STATE",), graceful=True, reboot=True, force=True),
                          Reboot(force=True), Shutdown(), Rollback()]
    assert Upgrade(source="x.img", stage=True).sequence is SequenceName.STAGE_UPGRADE
