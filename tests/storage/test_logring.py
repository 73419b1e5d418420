"""The service log ring: positions only grow (across reopening too), the oldest lines go once a service holds
``max_lines``, a reader resumes where it stopped, and lines held in memory move to disk in order."""

from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import LogRing


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=st.lists(st.sampled_from(("agent", "etcd")), max_size=120), cap=st.integers(5, 40),
       attach_at=st.integers(0, 120), start=st.integers(0, 130))
def test_reads_return_the_kept_tail_in_order(tmp_path_factory, appends: list[str], cap: int, attach_at: int,
                                             start: int) -> None:
    path = tmp_path_factory.mktemp("ring")
    ring = LogRing(max_lines=cap)
    written: dict[str, list[bytes]] = {}
    for i, service in enumerate(appends):
        if i == attach_at:
            ring.attach(path)
        line = f"{service}-{i}".encode()
        assert ring.append(service, line) == len(written.get(service, []))
        written.setdefault(service, []).append(line)
    for service, lines in written.items():
        got = ring.read(service, start, limit=1000)
        positions = [p for p, _ in got]
        assert positions == list(range(positions[0], len(lines))) if got else start >= len(lines)
        assert all(lines[p] == line for p, line in got)
        assert len(ring.read(service, 0, limit=1000)) <= cap  # never more than the ring holds
        assert ring.read(service, 0, limit=1000)[-1][1] == lines[-1]  # the newest line is always kept
    ring.close()


def test_lines_dropped_in_memory_keep_their_positions_when_attached(tmp_path: Path) -> None:
    ring = LogRing(max_lines=5)
    for i in range(6):  # memory keeps 1..5: line 0 was dropped before EPHEMERAL was there
        ring.append("agent", f"line {i}".encode())
    ring.attach(tmp_path)
    assert ring.next_position("agent") == 6
    assert ring.append("agent", b"line 6") == 6
    assert ring.read("agent", 0, limit=10)[0] == (2, b"line 2")  # the oldest kept, at its own position
    ring.close()


def test_positions_go_on_after_reopening(tmp_path: Path) -> None:
    ring = LogRing(max_lines=100)
    ring.attach(tmp_path)
    for i in range(5):
        ring.append("agent", f"boot 1 line {i}".encode())
    ring.close()
    again = LogRing(max_lines=100)
    again.append("agent", b"held in memory before EPHEMERAL was there")
    again.attach(tmp_path)
    assert again.next_position("agent") == 6
    assert [p for p, _ in again.read("agent", 3)] == [3, 4, 5]
    assert again.read("agent", 5) == [(5, b"held in memory before EPHEMERAL was there")]
    assert again.services() == ["agent"] and again.read("nosuch", 0) == []


def test_a_follower_wakes_on_the_next_line(tmp_path: Path) -> None:
    ring = LogRing()
    ring.attach(tmp_path)
    woke = threading.Event()

    def follow() -> None:
        if ring.wait_for("agent", 0, timeout=10):
            woke.set()

    t = threading.Thread(target=follow)
    t.start()
    assert not woke.wait(0.1)
    ring.append("agent", b"hello")
    t.join(10)
    assert woke.is_set()
    assert not ring.wait_for("agent", 1, timeout=0.05)
