from __future__ import annotations

import pytest

import config
from config import Action, ApplyMode, plan_apply
from errors import InvalidRequest


def patched(cfg: config.MachineConfig, **paths: object) -> config.MachineConfig:
    ops = [{"op": "replace", "path": "/" + p.replace("__", "/"), "value": v} for p, v in paths.items()]
    return config.apply_patch(cfg, config.load_patch(ops))


@pytest.fixture
def live(cfg):
    return patched(cfg, machine__network__hostname="node2")


@pytest.fixture
def needs_reboot(cfg):
    return patched(cfg, machine__install__image="graven-v2.img", machine__network__hostname="node2")


def test_needs_reboot_table():
    for path in ("machine.type", "machine.install", "machine.install.image", "machine.install.trustedKeys",
                 "machine.ca.key", "cluster.name"):  # fmt: skip
        assert config.needs_reboot(path), path
    for path in ("machine.network.hostname", "machine.network.interfaces[0].mtu", "machine.audit.sinks",
                 "machine.certSANs", "cluster.endpoint", "machine.typeface"):  # fmt: skip
        assert not config.needs_reboot(path), path


def test_auto_applies_live_changes_live(cfg, live):
    plan = plan_apply(cfg, cfg, None, live, "auto")
    assert plan.action is Action.LIVE and not plan.reboot
    assert (plan.active, plan.persisted, plan.staged) == (live, live, None)
    assert [c.path for c in plan.changes] == ["machine.network.hostname"]
    assert plan.reboot_fields == () and plan.digest == config.digest(live)


def test_auto_reboots_when_a_field_needs_it(cfg, needs_reboot):
    plan = plan_apply(cfg, cfg, None, needs_reboot, ApplyMode.AUTO)
    assert plan.action is Action.REBOOT and plan.reboot
    assert plan.reboot_fields == ("machine.install.image",)
    assert (plan.active, plan.persisted, plan.staged) == (cfg, needs_reboot, None)


def test_no_reboot_refuses_naming_the_fields(cfg, needs_reboot, live):
    with pytest.raises(InvalidRequest) as info:
        plan_apply(cfg, cfg, None, needs_reboot, "no-reboot")
    assert "machine.install.image" in str(info.value)
    assert info.value.details["fields"] == ["machine.install.image"]
    assert plan_apply(cfg, cfg, None, live, "no-reboot").action is Action.LIVE


def test_reboot_mode_always_reboots(cfg, live):
    plan = plan_apply(cfg, cfg, None, live, "reboot")
    assert plan.action is Action.REBOOT and plan.reboot and plan.persisted == live and plan.active == cfg


def test_staged_changes_only_the_next_boot(cfg, needs_reboot):
    plan = plan_apply(cfg, cfg, None, needs_reboot, "staged")
    assert plan.action is Action.STAGE and not plan.reboot
    assert (plan.active, plan.persisted, plan.staged) == (cfg, cfg, needs_reboot)
    assert config.boot_config(plan.persisted, plan.staged) == needs_reboot
    assert config.boot_config(cfg, None) == cfg
    again = plan_apply(plan.active, plan.persisted, plan.staged, needs_reboot, "staged")
    assert again.action is Action.NONE and again.staged == needs_reboot and again.warnings == ()


def test_restaging_and_superseding_warn(cfg, live, needs_reboot):
    restage = plan_apply(cfg, cfg, needs_reboot, live, "staged")
    assert restage.staged == live and "replaces the config staged before" in restage.warnings[0]
    supersede = plan_apply(cfg, cfg, needs_reboot, live, "auto")
    assert supersede.staged is None and "dropped" in supersede.warnings[0]


def test_try_applies_without_persisting(cfg, live, needs_reboot):
    plan = plan_apply(cfg, cfg, None, live, "try", try_timeout=30)
    assert plan.action is Action.TRY and not plan.reboot
    assert (plan.active, plan.persisted, plan.revert_to, plan.try_timeout) == (live, cfg, cfg, 30)
    confirmed = config.confirm_try(plan.active, plan.persisted, plan.staged)
    assert confirmed.persisted == live and confirmed.active == live and confirmed.action is Action.LIVE
    assert config.confirm_try(live, cfg, needs_reboot).staged == needs_reboot
    reverted = config.revert_try(plan.active, plan.persisted, plan.staged, plan.revert_to)
    assert reverted.active == cfg and reverted.persisted == cfg
    assert [c.path for c in reverted.changes] == ["machine.network.hostname"]
    with pytest.raises(InvalidRequest, match=r"machine\.install\.image"):
        plan_apply(cfg, cfg, None, needs_reboot, "try")
    with pytest.raises(InvalidRequest, match="revert to"):
        plan_apply(None, None, None, live, "try")
    with pytest.raises(InvalidRequest, match="positive"):
        plan_apply(cfg, cfg, None, live, "try", try_timeout=0)


def test_dry_run_changes_nothing_but_plans_and_refuses_the_same(cfg, needs_reboot):
    staged = plan_apply(cfg, cfg, None, needs_reboot, "auto", dry_run=True)
    assert staged.dry_run and staged.action is Action.REBOOT and staged.reboot
    assert (staged.active, staged.persisted, staged.staged) == (cfg, cfg, None)
    assert staged.changes == tuple(config.diff(cfg, needs_reboot))
    with pytest.raises(InvalidRequest):
        plan_apply(cfg, cfg, None, needs_reboot, "no-reboot", dry_run=True)


def test_nothing_to_do(cfg):
    plan = plan_apply(cfg, cfg, None, cfg, "auto")
    assert plan.action is Action.NONE and plan.changes == ()
    assert plan_apply(cfg, cfg, None, cfg, "staged").action is Action.NONE


def test_reapplying_the_running_config_cancels_a_pending_one(cfg, needs_reboot):
    plan = plan_apply(cfg, needs_reboot, None, cfg, "auto")
    assert plan.action is Action.LIVE and plan.changes == () and plan.persisted == cfg


def test_maintenance_applies_live(cfg):
    plan = plan_apply(None, None, None, cfg, "auto")
    assert plan.action is Action.LIVE and plan.reboot_fields == ()
    assert {c.path for c in plan.changes} == {"version", "machine", "cluster"}
    assert plan.active == plan.persisted == cfg


def test_custom_reboot_rule(cfg, live):
    plan = plan_apply(cfg, cfg, None, live, "auto", reboot_required_fn=lambda p: p.startswith("machine.network"))
    assert plan.action is Action.REBOOT and plan.reboot_fields == ("machine.network.hostname",)


def test_unknown_mode(cfg):
    with pytest.raises(InvalidRequest, match="unknown apply mode"):
        plan_apply(cfg, cfg, None, cfg, "sometimes")


def test_event_payload_has_diff_and_digest_and_no_secret(cfg):
    other = patched(cfg, machine__ca__key=None)
    plan = plan_apply(cfg, cfg, None, other, "auto")
    payload = plan.event_payload()
    assert payload["digest"] == config.digest(other) and payload["action"] == "reboot"
    assert payload["changes"] == [c.to_dict() for c in plan.changes]
    assert payload["reboot_fields"] == ["machine.ca.key"]
    assert cfg.machine.ca.key not in repr(payload)
    import msgspec

    msgspec.msgpack.encode(payload)  # plain data, fit for an event
