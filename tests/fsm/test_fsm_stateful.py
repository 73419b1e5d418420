"""The stage is a fold over the log: after every random trigger, live stage == replay(log).stage."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from errors import TransitionRejected
from events import Actor, Kind, MemoryEventLog, replay
from fsm import NodeFSM, Stage, Trigger
from pki import LOG_KEY_UNIT, Ed25519Signer, issue_certificate, make_ca

_CA_KEY, _CA = make_ca("stateful-ca")
_SIGNER = Ed25519Signer.generate()
_CERT = issue_certificate(_CA_KEY, _CA, _SIGNER.private_key.public_key(), cn="n", unit=LOG_KEY_UNIT).public_bytes(
    serialization.Encoding.DER
)
ACTORS = st.sampled_from([Actor("node"), Actor("alice", ("os:admin",)), Actor("bob", ("os:operator",))])


class StageIsAFold(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = MemoryEventLog(_SIGNER, _CERT, checkpoint_every=7)
        self.fsm = NodeFSM(self.log)
        self.boots = 0

    @rule(trigger=st.sampled_from(list(Trigger)), actor=ACTORS)
    def fire(self, trigger: Trigger, actor: Actor) -> None:
        allowed = self.fsm.can(trigger)
        before, seq = self.fsm.stage, self.log.next_seq()
        try:
            moved = self.fsm.fire(trigger, actor=actor)
        except TransitionRejected as exc:
            assert not allowed
            assert exc.details == {"stage": before.value, "trigger": trigger.value,
                                   "allowed": sorted(t.value for t in self.fsm.allowed())}
            assert self.fsm.stage is before and self.log.next_seq() == seq
            return
        assert allowed and moved.src is before and moved.dst is self.fsm.stage
        assert moved.durable.result().actor == actor

    @precondition(lambda self: self.fsm.stage in (Stage.REBOOTING, Stage.STOPPED))
    @rule()
    def next_boot(self) -> None:
        self.boots += 1
        self.log.boot_id = f"boot-{self.boots}"
        self.log.append(Kind.BOOT_STARTED, {"slot": "A", "version": "1", "boot_number": self.boots})
        self.fsm = NodeFSM(self.log)

    @rule()
    def seal(self) -> None:
        self.log.seal("test")

    @invariant()
    def live_stage_is_the_fold_of_the_log(self) -> None:
        assert replay(self.log.read()).stage == self.fsm.stage.value


TestStageIsAFold = StageIsAFold.TestCase
TestStageIsAFold.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
