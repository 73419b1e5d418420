"""Boot tracing from a log: the boots, where a failed one failed, offsets, the critical path, and renderers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec
import pytest
from seqkit import history, run, sleeper

import config
from errors import NotFound
from events import Event, MemoryEventLog
from sequencer import SEQUENCES, Phase, SequenceName
from sequencer.trace import list_boots, render_chrome, render_json, render_svg, render_table, trace_boot

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def events(pki: Any, make_config: Any) -> list[Event]:
    log = MemoryEventLog(pki.signer, pki.cert_der, boot_id="boot-ok", checkpoint_every=40)

    def set_boot(boot_id: str) -> MemoryEventLog:
        log.boot_id = boot_id
        return log

    cfg = config.dump_yaml(make_config(install_image=None)).encode()
    run(history(log, cfg, set_boot))
    return list(log.read())


def test_boots_are_listed_with_slot_version_outcome_and_where_they_failed(events: list[Event]) -> None:
    boots = list_boots(events)
    assert [b.boot_id for b in boots] == ["boot-ok", "boot-failed", "boot-crashed", "boot-last"]
    assert [b.outcome for b in boots] == ["rebooted", "failed", "failed", "running"]
    assert [b.index for b in boots] == [0, 1, 2, 3]
    assert boots[0].slot == "A" and boots[0].version == "v1" and boots[0].sequences == ("initialize", "boot", "reboot")
    failed = boots[1].failure
    assert failed is not None
    assert (failed.sequence, failed.phase, failed.task, failed.code) == ("boot", "network", "configure_links",
                                                                         "UNAVAILABLE")
    assert "no carrier" in failed.error
    crashed = boots[2].failure
    assert crashed is not None and (crashed.sequence, crashed.phase, crashed.task) == ("initialize", "meta",
                                                                                       "load_boot_env")
    assert "stopped without a reboot" in crashed.error
    assert all(b.duration_ns >= 0 for b in boots)
    assert boots[0].first_seq == 0 and boots[1].first_seq == boots[0].last_seq + 1


def test_select_a_boot_by_number_or_id(events: list[Event]) -> None:
    assert trace_boot(events).boot.boot_id == "boot-last"
    assert trace_boot(events, index=-3).boot.boot_id == "boot-failed"
    assert trace_boot(events, index=0).boot.boot_id == "boot-ok"
    assert trace_boot(events, boot_id="boot-cr").boot.boot_id == "boot-crashed"
    with pytest.raises(NotFound):
        trace_boot(events, index=4)
    with pytest.raises(NotFound):
        trace_boot(events, boot_id="boot-")  # more than one
    with pytest.raises(NotFound):
        trace_boot([], index=0)


def test_spans_offsets_durations_and_failures(events: list[Event]) -> None:
    trace = trace_boot(events, boot_id="boot-failed")
    by_name = {(s.kind, s.name): s for s in trace.spans}
    boot, network = by_name[("sequence", "boot")], by_name[("phase", "network")]
    assert boot.outcome == network.outcome == by_name[("task", "configure_links")].outcome == "failed"
    assert by_name[("task", "set_hostname")].outcome in ("ok", "cancelled")
    assert boot.start_ns <= network.start_ns <= network.end_ns <= boot.end_ns + 1_000_000
    assert ("phase", "services") not in by_name  # it never ran
    assert trace.spans == tuple(sorted(trace.spans, key=lambda s: s.seq))
    lanes = sorted(s.lane for s in trace.spans if s.kind == "task" and s.phase == "network")
    assert lanes == [0, 1, 2]
    assert "FAILED at boot / network / configure_links" in render_table(trace)
    unfinished = trace_boot(events, boot_id="boot-crashed").spans
    assert {s.outcome for s in unfinished} == {"unfinished"}


def test_critical_path_is_the_longest_task_of_each_phase(make_node: Any) -> None:
    node = make_node()
    table = dict(SEQUENCES)
    table[SequenceName.BOOT] = replace(SEQUENCES[SequenceName.BOOT], done=None, phases=(
        Phase("one", (sleeper("short", 0.005), sleeper("long", 0.04), sleeper("mid", 0.02))),
        Phase("two", (sleeper("only", 0.01),)),
    ))  # fmt: skip
    node.seq.sequences = table
    assert run(node.seq.run(SequenceName.BOOT)).ok
    trace = trace_boot(list(node.log.read()))
    assert [s.name for s in trace.critical_path] == ["long", "only"]
    assert trace.critical_ns >= 50_000_000
    assert trace.total_ns >= trace.critical_ns
    long = next(s for s in trace.spans if s.name == "long")
    assert 40_000_000 <= long.duration_ns < 200_000_000
    lines = render_table(trace).splitlines()
    assert any("long" in line and line.rstrip().endswith("*") for line in lines)
    assert not any("short" in line and line.rstrip().endswith("*") for line in lines)


def test_json_and_chrome_render_every_span(events: list[Event]) -> None:
    trace = trace_boot(events, index=0)
    doc = json.loads(json.dumps(render_json(trace)))
    assert doc["boot"]["boot_id"] == "boot-ok" and len(doc["spans"]) == len(trace.spans)
    assert doc["critical_path"] and doc["total_ns"] == trace.total_ns
    chrome = json.loads(json.dumps(render_chrome(trace)))
    complete = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(trace.spans)
    names = {(e["name"], e["args"].get("name")) for e in chrome["traceEvents"] if e["ph"] == "M"}
    assert ("process_name", "initialize") in names and ("process_name", "reboot") in names
    assert ("thread_name", "phases") in names
    for e in complete:
        assert isinstance(e["ts"], float | int) and isinstance(e["dur"], float | int) and e["dur"] >= 0
        assert e["tid"] == (0 if e["cat"] != "task" else e["tid"]) and e["pid"] >= 1
    network_tasks = [e for e in complete if e["cat"] == "task" and e["args"]["seq"] in
                     {s.seq for s in trace.spans if s.phase == "network" and s.kind == "task"}]
    assert len({e["tid"] for e in network_tasks}) == 3, "concurrent tasks get their own lanes"


def test_svg_is_a_standalone_timeline_with_labels(events: list[Event]) -> None:
    trace = trace_boot(events, boot_id="boot-failed")
    root = ET.fromstring(render_svg(trace))
    assert root.tag == f"{SVG}svg" and int(root.get("width", "0")) > 0
    groups = root.findall(f"{SVG}g")
    assert len(groups) == len(trace.spans)
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "configure_links" in texts and "FAILED at boot / network / configure_links" in texts
    rects = [g.find(f"{SVG}rect") for g in groups]
    assert all(r is not None and float(r.get("width", "0")) >= 1 for r in rects)
    failed = [r for g, r in zip(groups, rects, strict=True) if "failed" in (g.findtext(f"{SVG}title") or "")]
    assert failed and all(r is not None and r.get("fill") == "#d9534f" for r in failed)


def test_a_vm_boot_starts_at_its_kernels_zero(events: list[Event]) -> None:
    boot = [e for e in events if e.boot_id == "boot-ok"]
    first = boot[0]
    t = {"init": 2_000_000_000, "exec": 2_500_000_000, "agent": 2_600_000_000}
    assert first.mono_ns > t["agent"]
    selected = msgspec.structs.replace(first, kind="boot.selected", payload={"slot": "A", "guest_ns": t})
    trace = trace_boot([selected, *boot[1:]])
    kernel, initramfs, start = trace.spans[:3]
    assert (kernel.name, kernel.start_ns, kernel.duration_ns) == ("kernel", 0, 2_000_000_000)
    assert (initramfs.name, initramfs.start_ns, initramfs.duration_ns) == ("initramfs", 2_000_000_000, 500_000_000)
    assert (start.name, start.start_ns, start.end_ns) == ("agent start", 2_500_000_000, first.mono_ns)
    later = trace.spans[3:]
    assert later and all(s.start_ns >= first.mono_ns for s in later)  # offsets from the kernel's zero
    assert trace.total_ns == boot[-1].mono_ns
    table = render_table(trace)
    assert "kernel" in table and "initramfs" in table
    assert any(ev["name"] == "kernel" for ev in render_chrome(trace)["traceEvents"])
    # a timeline that does not fit the events (the agent began after its first event) is left out
    bad = msgspec.structs.replace(selected, payload={"slot": "A", "guest_ns": {**t, "agent": first.mono_ns + 1}})
    assert trace_boot([bad, *boot[1:]]).spans[0].name != "kernel"


def test_one_boot_is_traced_without_holding_the_others(events: list[Event]) -> None:
    """Only the boots that can be the chosen one keep their events while the log is read; the trace, the selected
    events and the errors are those of grouping the whole log, for any way of choosing, even when a boot's events
    come back after another boot began."""
    from sequencer.trace import BootTrace, _critical, _group, _group_for_pick, _pick, _spans, _summary, select_boot

    mixed = [*events, *[e for e in events if e.boot_id == "boot-ok"][:3]]  # late events of the first boot
    for log in (events, mixed):
        whole = _group(log)
        for index, boot_id in [(None, None), (0, None), (2, None), (3, None), (-1, None), (-2, None), (-4, None),
                               (4, None), (-5, None), (None, "boot-cr"), (None, "boot-"), (None, "boot-ok"),
                               (None, "nope")]:
            try:
                want = whole[_pick(whole, index, boot_id)]
            except NotFound as exc:
                with pytest.raises(NotFound) as info:
                    select_boot(log, index=index, boot_id=boot_id)
                assert info.value.message == exc.message
                continue
            assert select_boot(iter(log), index=index, boot_id=boot_id) == want
            number = _pick(whole, index, boot_id)
            spans = _spans(want)
            summary = _summary(number, want, number == len(whole) - 1, spans)
            assert trace_boot(iter(log), index=index, boot_id=boot_id) == BootTrace(summary, tuple(spans),
                                                                                   _critical(spans),
                                                                                   summary.duration_ns)
            kept = _group_for_pick(log, index, boot_id)
            assert [g[0] for g in kept] == [g[0] for g in whole]
            assert sum(len(g) > 1 for g in kept) <= (len(whole) if boot_id is not None else max(1, -(index or -1)))


def test_a_stored_log_is_traced_from_its_bytes_as_from_its_events(events: list[Event]) -> None:
    """trace_stored reads boot ids alone, then decodes the chosen boot: the same trace and errors as trace_boot."""
    from errors import InvalidEvent
    from events import encode_event
    from sequencer.trace import trace_stored

    raws = [encode_event(e) for e in events]
    reads: list[tuple[int, int | None]] = []

    def read_raw(start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
        reads.append((start, end))
        return iter(list(enumerate(raws))[start:end])

    for index, boot_id in [(None, None), (0, None), (2, None), (-2, None), (4, None), (None, "boot-cr"),
                           (None, "boot-"), (None, "nope")]:
        try:
            want = trace_boot(events, index=index, boot_id=boot_id)
        except NotFound as exc:
            with pytest.raises(NotFound) as info:
                trace_stored(read_raw, index=index, boot_id=boot_id)
            assert info.value.message == exc.message
            continue
        assert trace_stored(read_raw, index=index, boot_id=boot_id) == want
        assert reads[-2:] == [(0, None), (0, len(raws))]  # the second read ends where the first did
    broken = [*raws[:5], b"\xc1", *raws[6:]]
    with pytest.raises(InvalidEvent) as bad:
        trace_stored(lambda start, end: iter(list(enumerate(broken))[start:end]))
    assert bad.value.details["seq"] == 5
