"""A service's own log file copied into the node's log ring: whole lines only, from where the file ended when the
follower started, over a truncation, JSON kept (``ts`` also as ``time``) and anything else wrapped."""

from __future__ import annotations

import json
import time
from pathlib import Path

from node._logging import FileFollower
from storage import LogRing


def wait_lines(ring: LogRing, n: int, timeout: float = 10.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [json.loads(line) for _, line in ring.read("etcd", 0)]
        if len(got) >= n:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{n} lines expected, got {ring.read('etcd', 0)}")


def test_a_followed_file_reaches_the_ring(tmp_path: Path) -> None:
    log = tmp_path / "etcd.log"
    log.write_bytes(b'{"level":"info","ts":"earlier","msg":"a line from an earlier boot"}\n')
    ring = LogRing()
    follower = FileFollower(log, "etcd", ring, poll_s=0.01)
    try:
        time.sleep(0.1)
        with log.open("ab") as f:
            f.write(b'{"level":"warn","ts":"2026-12-06T06:40:00Z","msg":"slow fdatasync"}\nplain text\n{"lev')
            f.flush()
            got = wait_lines(ring, 2)
            assert got == [{"level": "warn", "ts": "2026-12-06T06:40:00Z", "msg": "slow fdatasync",
                            "time": "2026-12-06T06:40:00Z"}, {"msg": "plain text"}]
            f.write(b'el":"info","msg":"completed"}\n')
        assert wait_lines(ring, 3)[2] == {"level": "info", "msg": "completed"}
        log.write_bytes(b'{"level":"info","msg":"a new file"}\n')  # replaced by a shorter one
        assert wait_lines(ring, 4)[3]["msg"] == "a new file"
    finally:
        follower.stop()
