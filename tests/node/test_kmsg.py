"""The kernel's log records: parsed from /dev/kmsg's format, the last N of them, and who has a kernel of its own."""

from __future__ import annotations

import json
import os

import pytest

from errors import Unavailable
from node._kmsg import KMSG, kernel_records, own_kernel, parse_record


def test_a_record_is_priority_seq_time_and_message() -> None:
    r = parse_record(b"4,703,636575212,-;set_capacity_and_notify: 8 callbacks suppressed\n SUBSYSTEM=block\n")
    assert r == {"seq": 703, "time_s": 636.575212, "level": "warning", "facility": 0,
                 "msg": "set_capacity_and_notify: 8 callbacks suppressed"}
    assert parse_record(b"30,1,5,-;systemd[1]: hello")["facility"] == 3
    assert parse_record(b"garbage")["msg"] == ""


def test_the_last_records_of_this_machines_kernel() -> None:
    if not os.access(KMSG, os.R_OK):  # not root: the refusal names the file
        with pytest.raises(Unavailable, match="/dev/kmsg"):
            next(kernel_records(tail=3))
        return
    lines = [json.loads(x) for x in kernel_records(tail=3) if x is not None]
    assert 0 < len(lines) <= 3
    assert [r["seq"] for r in lines] == sorted(r["seq"] for r in lines)
    assert all(r["level"] in ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug") for r in lines)


def test_a_process_on_the_host_has_no_kernel_of_its_own() -> None:
    assert not own_kernel()  # pytest is not PID 1 of the first pid namespace
