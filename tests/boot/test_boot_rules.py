"""The boot rule book (``boot``), as the bootloader uses it: boot counting, fallback, commit, arm, revert."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boot import (
    BootEnv,
    Slot,
    SlotBoot,
    arm,
    bootable_slots,
    choose_slot,
    install_target,
    mark_bad,
    mark_good,
    revert,
    rollback,
)
from errors import NotFound
from storage import slot_label


def installed(slot: Slot = Slot.A) -> BootEnv:
    """A disk whose ``slot`` booted good once."""
    env, _ = arm(BootEnv(), slot)
    env = choose_slot(env).env
    env, _ = mark_good(env, slot)
    return env


def test_slot_other_and_parse():
    assert Slot.A.other is Slot.B and Slot.B.other is Slot.A
    assert Slot.parse("boot-b") is Slot.B and Slot.parse("a") is Slot.A
    assert slot_label(Slot.A) == "BOOT-A" and slot_label(Slot.B) == "BOOT-B"
    with pytest.raises(ValueError, match="unknown slot"):
        Slot.parse("C")


def test_empty_disk_boots_nothing():
    choice = choose_slot(BootEnv())
    assert choice.slot is None
    assert choice.events[0].kind == "boot.none" and "no image installed" in choice.events[0].payload["reason"]
    assert choice.env.seq == 1


def test_first_install_trial_then_commit():
    env, events = arm(BootEnv(), Slot.A, tries=3)
    assert env.default is Slot.A and env.fallback is None and env.a == SlotBoot(3, False)
    assert events[0].kind == "boot.armed"
    choice = choose_slot(env)
    assert choice.slot is Slot.A and choice.env.a.tries_left == 2
    assert [e.kind for e in choice.events] == ["boot.selected"]
    env, events = mark_good(choice.env, Slot.A)
    assert env.a.good and events[0].kind == "boot.committed"
    for _ in range(5):  # a good slot spends no tries
        choice = choose_slot(env)
        assert choice.slot is Slot.A and choice.env.a == env.a
        env = choice.env


def test_upgrade_that_never_commits_falls_back_after_its_tries():
    env, _ = arm(installed(Slot.A), Slot.B, tries=3)
    assert env.default is Slot.B and env.fallback is Slot.A
    chosen = []
    for _ in range(6):
        choice = choose_slot(env)
        chosen.append(choice.slot)
        env = choice.env
        if any(e.kind == "boot.fallback" for e in choice.events):
            fallback = next(e for e in choice.events if e.kind == "boot.fallback")
            assert fallback.payload["from_slot"] == "B" and fallback.payload["to_slot"] == "A"
            assert "ran out of boot tries" in fallback.payload["reason"]
    assert chosen == [Slot.B, Slot.B, Slot.B, Slot.A, Slot.A, Slot.A]
    assert env.default is Slot.A and env.fallback is None
    assert env.last_fallback_reason and "slot B" in env.last_fallback_reason
    assert env.last_fallback_seq is not None and env.last_fallback_seq <= env.seq
    assert env.b == SlotBoot(0, False)


def test_commit_clears_fallback_and_keeps_old_slot_good_for_rollback():
    env, _ = arm(installed(Slot.A), Slot.B)
    env = choose_slot(env).env
    env, _ = mark_good(env, Slot.B)
    assert env.fallback is None and env.a.good and env.b.good
    env, events = revert(env)
    # A is good: the bootloader never falls back from it, so no fallback is named (as after a commit; the
    # agent's rollback and the bootloader's used to disagree here, the one rule book says this)
    assert env.default is Slot.A and env.fallback is None
    assert events[0].payload == {"from_slot": "B", "to_slot": "A"}
    assert choose_slot(env).slot is Slot.A


def test_revert_needs_a_good_other_slot():
    with pytest.raises(NotFound, match="no slot is installed"):
        revert(BootEnv())
    with pytest.raises(NotFound, match="cannot roll back to slot B"):
        revert(installed(Slot.A))
    env, _ = arm(installed(Slot.A), Slot.B)  # B armed, running B on trial; A was invalidated meanwhile
    env, _ = mark_bad(env, Slot.A)
    with pytest.raises(NotFound, match="cannot roll back to slot A"):
        revert(env, current=Slot.B)


def test_mark_bad_takes_slot_out_of_service():
    env, _ = arm(installed(Slot.A), Slot.B)
    env, events = mark_bad(env, Slot.B)
    assert env.default is Slot.A and env.b == SlotBoot(0, False)
    assert events[0].kind == "slot.invalidated"
    env, _ = mark_bad(env, Slot.A)
    assert env.default is None and bootable_slots(env) == ()
    assert choose_slot(env).slot is None


def test_rollback_is_revert_from_the_running_slot():
    env, _ = arm(installed(Slot.A), Slot.B)
    env = mark_good(choose_slot(env).env, Slot.B)[0]  # B booted good; A still good
    for running, env_or_none in ((None, env), (Slot.B, None)):
        with pytest.raises(NotFound, match="runs no slot of the disk"):
            rollback(env_or_none, running)
    assert rollback(env, Slot.B) == revert(env, Slot.B) and rollback(env, Slot.B)[0].default is Slot.A
    with pytest.raises(NotFound, match="cannot roll back to slot A: slot A holds no image that booted good"):
        rollback(mark_bad(env, Slot.A)[0], Slot.B)


def test_install_target_is_never_the_running_slot():
    assert install_target(None) is Slot.A and install_target(BootEnv()) is Slot.A  # a fresh disk: A
    assert install_target(installed(Slot.A)) is Slot.B and install_target(installed(Slot.B)) is Slot.A
    staged, _ = arm(installed(Slot.A), Slot.B)  # B staged (the default) while A still runs: A is not the target
    assert install_target(staged, Slot.A) is Slot.B
    assert install_target(None, Slot.B) is Slot.A


def test_arm_needs_a_try():
    with pytest.raises(ValueError):
        arm(BootEnv(), Slot.A, tries=0)


# -- properties -------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(tries=st.integers(1, 8), first_good=st.booleans(), boots=st.integers(1, 20))
def test_a_slot_that_never_commits_is_booted_at_most_tries_times(tries: int, first_good: bool, boots: int):
    env = installed(Slot.A) if first_good else BootEnv()
    env, _ = arm(env, Slot.B, tries=tries)
    picks = []
    for _ in range(boots):
        choice = choose_slot(env)
        picks.append(choice.slot)
        env = choice.env
    assert picks.count(Slot.B) == min(tries, boots)
    assert picks[: min(tries, boots)] == [Slot.B] * min(tries, boots)
    after = picks[tries:]
    assert all(p is (Slot.A if first_good else None) for p in after)


_ops = st.lists(
    st.one_of(
        st.just(("boot",)),
        st.just(("commit",)),
        st.tuples(st.just("arm"), st.sampled_from(list(Slot)), st.integers(1, 4)),
        st.tuples(st.just("bad"), st.sampled_from(list(Slot))),
        st.just(("revert",)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops)
def test_bootloader_invariants(ops: list[tuple]):
    """Across any sequence of boots, commits, arms, invalidations and rollbacks:

    seq grows by one per change; tries never go negative; a chosen slot was bootable; a good default is
    always chosen (a good slot is never abandoned by the bootloader); a slot with a good slot beside it is
    always booted; a slot is tried at most ``tries`` times per arming.
    """
    env = BootEnv()
    running: Slot | None = None
    tries_since_arm: dict[Slot, int] = {Slot.A: 0, Slot.B: 0}
    budget: dict[Slot, int] = {Slot.A: 0, Slot.B: 0}
    for op in ops:
        before = env
        if op[0] == "boot":
            choice = choose_slot(env)
            env, running = choice.env, choice.slot
            if before.default is not None and before.slot(before.default).good:
                assert running is before.default
            if any(before.slot(s).good for s in Slot):
                assert running is not None
            if running is not None:
                assert before.slot(running).bootable
                if not before.slot(running).good:
                    tries_since_arm[running] += 1
                    assert tries_since_arm[running] <= budget[running]
        elif op[0] == "commit":
            if running is None:
                continue
            env, _ = mark_good(env, running)
            running = None
        elif op[0] == "arm":
            env, _ = arm(env, op[1], op[2])
            tries_since_arm[op[1]], budget[op[1]] = 0, op[2]
            running = None
        elif op[0] == "bad":
            env, _ = mark_bad(env, op[1])
            running = None
        else:
            try:
                env, _ = revert(env)
            except NotFound:
                continue
        assert env.seq == before.seq + 1
        assert env.a.tries_left >= 0 and env.b.tries_left >= 0
        if env.default is not None:
            assert env.fallback is not env.default
