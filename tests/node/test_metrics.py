"""The metrics are a projection of the log: folded at scrape time, from where the last scrape stopped, they agree
with a plain count over the log however the scrapes fall between the appends."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from events import Kind, MemoryEventLog
from node._metrics import NodeMetrics, NodeView

SEQUENCES = ("boot", "upgrade", "reboot")
EVENT = st.one_of(
    st.tuples(st.just(Kind.SEQUENCE_STOPPED), st.fixed_dictionaries(
        {"sequence": st.sampled_from(SEQUENCES), "outcome": st.sampled_from(("ok", "cancelled")),
         "duration_ns": st.integers(0, 10**11)})),
    st.tuples(st.just(Kind.SEQUENCE_FAILED), st.fixed_dictionaries(
        {"sequence": st.sampled_from(SEQUENCES), "outcome": st.just("failed"), "duration_ns": st.integers(0, 10**9),
         "error": st.just("x"), "code": st.just("UNAVAILABLE")})),
    st.tuples(st.just(Kind.BOOT_STARTED), st.fixed_dictionaries({"slot": st.sampled_from(("A", "B", None))})),
    st.tuples(st.just(Kind.BOOT_FAILED), st.fixed_dictionaries({"slot": st.sampled_from(("A", "B"))})),
    st.tuples(st.just(Kind.BOOT_FALLBACK), st.fixed_dictionaries({"from_slot": st.just("B"), "to_slot": st.just("A")})),
    st.tuples(st.just(Kind.CONFIG_APPLIED), st.fixed_dictionaries(
        {"mode": st.sampled_from(("no-reboot", "reboot", "try")), "digest": st.just("d")})),
    st.tuples(st.just(Kind.API_DENIED), st.fixed_dictionaries({"method": st.sampled_from(("Reset", "Upgrade"))})),
    st.tuples(st.just(Kind.TASK_STOPPED), st.fixed_dictionaries(
        {"sequence": st.just("boot"), "phase": st.just("p"), "task": st.sampled_from(("t1", "t2")),
         "outcome": st.just("ok"), "duration_ns": st.integers(0, 10**9)})),
)


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metrics_of(log: MemoryEventLog, stage: str = "running") -> NodeMetrics:
    return NodeMetrics(read_raw=log.read_raw,
                       view=lambda: NodeView(stage=stage, boot_id=log.boot_id, next_seq=log.next_seq(),
                                             log_bytes=123))


def count(events: list[tuple[str, dict[str, Any]]], kind: str, **labels: Any) -> int:
    return sum(1 for k, p in events if k == kind and all(p.get(key) == v for key, v in labels.items()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_scrapes_anywhere_between_appends_agree_with_a_count_over_the_log(pki: Any, events: list[Any],
                                                                          cuts: list[int]) -> None:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/t", boot_id="b", checkpoint_every=7)
    metrics = metrics_of(log)
    for i, (kind, payload) in enumerate(events):
        if i in cuts:
            metrics.sync()  # a scrape in the middle: the next one folds only what came after
        log.append(kind, payload)
    got = samples(metrics)
    for seq in SEQUENCES:
        for outcome in ("ok", "cancelled", "failed"):
            want = count(events, Kind.SEQUENCE_STOPPED, sequence=seq, outcome=outcome) + count(
                events, Kind.SEQUENCE_FAILED, sequence=seq, outcome=outcome)
            assert got.get(("graven_sequences_total", (("outcome", outcome), ("sequence", seq))), 0) == want
    for slot in ("A", "B"):
        assert got.get(("graven_boots_total", (("slot", slot),)), 0) == count(events, Kind.BOOT_STARTED, slot=slot)
        assert got.get(("graven_boots_failed_total", (("slot", slot),)), 0) == count(events, Kind.BOOT_FAILED,
                                                                                     slot=slot)
    assert got.get(("graven_boots_total", (("slot", "none"),)), 0) == count(events, Kind.BOOT_STARTED, slot=None)
    for mode in ("no-reboot", "reboot", "try"):
        assert got.get(("graven_config_applies_total", (("mode", mode),)), 0) == count(events, Kind.CONFIG_APPLIED,
                                                                                       mode=mode)
    all_events = list(log.read())
    assert sum(v for (name, _), v in got.items() if name == "graven_log_events_total") == len(all_events)
    checkpoints = sum(1 for e in all_events if e.kind == Kind.CHECKPOINT)
    assert sum(v for (n, _), v in got.items() if n == "graven_log_checkpoints_total") == checkpoints
    assert got[("graven_log_next_seq", ())] == log.next_seq()
    durations = [p["duration_ns"] for k, p in events if k in (Kind.SEQUENCE_STOPPED, Kind.SEQUENCE_FAILED)]
    total = sum(v for (n, _), v in got.items() if n == "graven_sequence_duration_seconds_sum")
    assert abs(total - sum(durations) / 1e9) < 1e-6


def test_stage_readiness_image_and_calls(pki: Any) -> None:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/t", boot_id="boot-1")
    metrics = metrics_of(log)
    metrics.set_image(version="v2", slot="B", digest="abc")
    metrics.observe_call("Version", "OK", 0.002)
    metrics.observe_call("Upgrade", "INVALID_ARGUMENT", 0.2)
    metrics.observe_append(0.001)
    got = samples(metrics)
    assert got[("graven_stage", (("stage", "running"),))] == 1
    assert got[("graven_stage", (("stage", "maintenance"),))] == 0
    assert got[("graven_ready", ())] == 0  # running, but this boot is not committed yet
    log.append(Kind.BOOT_COMMITTED, {"slot": "B"})
    got = samples(metrics)
    assert got[("graven_ready", ())] == 1
    assert got[("graven_image_info", (("digest", "abc"), ("slot", "B"), ("version", "v2")))] == 1
    assert got[("graven_api_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "Upgrade")))] == 1
    assert got[("graven_api_request_duration_seconds_count", (("method", "Version"),))] == 1
    assert got[("graven_log_append_seconds_count", ())] == 1
    assert got[("graven_log_size_bytes", ())] == 123


def test_names_follow_prometheus_conventions(pki: Any) -> None:
    log = MemoryEventLog(pki.signer, pki.cert_der, origin="graven/t", boot_id="b")
    text = generate_latest(metrics_of(log).registry).decode()
    names = {fam.name for fam in text_string_to_metric_families(text)}
    assert all(n.startswith("graven_") for n in names)
    for fam in text_string_to_metric_families(text):
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name
        labels = {k for s in fam.samples for k in s.labels}
        assert not labels & {"seq", "boot_id", "serial", "subject"}, fam.name
