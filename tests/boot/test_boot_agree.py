"""The bootloader (the machine supervisor, once per boot) and the agent (its sequences: install, upgrade, commit,
rollback) change one boot environment through one rule book. Over random interleavings of what both sides do,
what the agent can see and report (the next slot, the fallback, whether a rollback is possible) is what the
bootloader then does, and every environment either side writes reaches the other through META unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from boot import (
    BootEnv,
    Slot,
    arm,
    choose_slot,
    fallback_of,
    installed,
    mark_bad,
    mark_good,
    next_slot,
    revert,
)
from errors import NotFound
from storage._meta import CopyStatus, decode_copy, encode_copy

_slots = st.sampled_from(list(Slot))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("boot"), st.booleans()),  # the supervisor boots; the chosen image may fail to verify
        st.just(("commit",)),  # the agent's boot sequence reached its health checks
        st.tuples(st.just("upgrade"), st.integers(1, 4)),  # the agent writes the other slot and arms it
        st.just(("rollback",)),
        st.tuples(st.just("install"), st.integers(1, 4)),
        st.tuples(st.just("bad"), _slots),
    ),
    max_size=50,
)


def _through_meta(env: BootEnv) -> BootEnv:
    """What the other side reads back of what one side wrote: the META copy's bytes, decoded."""
    read = decode_copy(encode_copy(env))
    assert read.status is CopyStatus.OK and read.env == env
    return read.env


def _bootloader_would(env: BootEnv, boots: int) -> list[Slot | None]:
    picks = []
    for _ in range(boots):
        choice = choose_slot(env)
        picks.append(choice.slot)
        env = choice.env
    return picks


def _agrees(env: BootEnv) -> None:
    """What the agent reports of ``env`` is what the bootloader does with it."""
    choice = choose_slot(env)
    assert choice.slot is next_slot(env), "the next slot the agent reports is the one the bootloader boots"
    assert env.fallback is fallback_of(env), "the stored fallback is the one the rules derive"
    if env.default is None:
        return
    state = env.slot(env.default)
    if state.good:  # a good default is booted for ever: no fallback to report
        assert env.fallback is None
        assert _bootloader_would(env, 4) == [env.default] * 4
    elif state.tries_left > 0:  # on trial: its tries, then the reported fallback (or nothing)
        picks = _bootloader_would(env, state.tries_left + 1)
        assert picks[:-1] == [env.default] * state.tries_left
        assert picks[-1] is env.fallback
    else:  # spent: the next boot is already the fallback
        assert choice.slot is env.fallback


@settings(max_examples=400, deadline=None)
@given(ops=_ops)
def test_the_bootloader_and_the_agent_never_disagree(ops: list[tuple]) -> None:
    env = BootEnv()
    running: Slot | None = None
    for op in ops:
        before = env
        if op[0] == "boot":
            choice = choose_slot(env)
            env, running = choice.env, choice.slot
            if running is not None and op[1]:  # its image does not verify: the supervisor takes it out, picks again
                env, _ = mark_bad(env, running)
                choice = choose_slot(env)
                env, running = choice.env, choice.slot
        elif op[0] == "commit":
            if running is None:
                continue
            env, _ = mark_good(env, running)
        elif op[0] == "upgrade":
            if running is None:
                continue
            target = running.other
            env, _ = mark_bad(env, target)  # out of service before the write
            env = _through_meta(env)
            assert next_slot(env) is not target and fallback_of(env) is not target  # never boots a half-write
            env, _ = arm(env, target, op[1])
            assert env.default is target and env.slot(target).tries_left == op[1]
            assert env.fallback is (running if env.slot(running).bootable else None)
        elif op[0] == "rollback":
            if running is None:
                continue
            allowed = env.slot(running.other).good  # the agent's precheck (service, sequencer)
            try:
                env, _ = revert(env, running)
            except NotFound:
                assert not allowed
                continue
            assert allowed and env.default is running.other and env.fallback is None
        elif op[0] == "install":
            env, running = installed(env, Slot.A, op[1]), None
            assert env.default is Slot.A and env.fallback is None
        else:
            env, _ = mark_bad(env, op[1])
            assert not env.slot(op[1]).bootable and env.default is not op[1]
        assert env.seq > before.seq, "META takes only a newer environment"
        env = _through_meta(env)
        _agrees(env)


@settings(max_examples=200, deadline=None)
@given(a_good=st.booleans(), a_tries=st.integers(0, 3), b_good=st.booleans(), b_tries=st.integers(0, 3),
       default=st.one_of(st.none(), _slots))
def test_any_stored_environment_is_read_alike(a_good: bool, a_tries: int, b_good: bool, b_tries: int,
                                              default: Slot | None) -> None:
    """Even an environment written before the rules derived the fallback (META of an older agent): after the
    next change by either side, both read the same next slot."""
    from boot import SlotBoot

    env = BootEnv(seq=5, default=default, fallback=default.other if default else None,
                  a=SlotBoot(0 if a_good else a_tries, a_good), b=SlotBoot(0 if b_good else b_tries, b_good))
    assert choose_slot(env).slot is next_slot(env)
    _agrees(choose_slot(env).env)


def test_the_twins_disagreed_here() -> None:
    """The cases where the agent's old rules and the bootloader's differed, as the one rule book decides them."""
    fresh = installed(BootEnv(), Slot.A)  # A on trial, B empty
    armed, _ = arm(fresh, Slot.B)
    assert armed.fallback is Slot.A  # A still has tries: the bootloader would go there
    spent, _ = mark_bad(fresh, Slot.A)
    armed, _ = arm(spent, Slot.B)
    assert armed.fallback is None and _bootloader_would(armed, 4) == [Slot.B, Slot.B, Slot.B, None]
    good, _ = mark_good(choose_slot(installed(BootEnv(), Slot.A)).env, Slot.A)
    up, _ = arm(good, Slot.B)
    up, _ = mark_good(choose_slot(up).env, Slot.B)
    back, _ = revert(up, Slot.B)
    assert back.default is Slot.A and back.fallback is None and next_slot(back) is Slot.A
