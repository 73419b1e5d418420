"""Issue 11: a reader that needs fields of an event's payload reads them through its kind's payload Struct
(``events.payload_of`` / ``events.read_payload``), so that a payload that changes shape is upcast in one place.
This test fails when production code reads a log event's payload as a map again (``.payload[...]``,
``.payload.get(...)``); a display of every field (``summarize(e.payload)``) passes the map on and is fine."""

from __future__ import annotations

import re

from test_any_budget import PACKAGES
from test_core_imports import ROOT

_READ = re.compile(r"\.payload(\.get\(|\[)")

# Files whose ``.payload`` is not a log event's, each with its reason.
NOT_LOG_EVENTS = {
    "node/_supervisor.py": "boot.Choice's events: the boot rule book's records, handed to the agent as maps",
}


def test_no_reader_takes_a_log_events_payload_apart_as_a_map() -> None:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if "_pb" in path.parts or rel in NOT_LOG_EVENTS:
                continue
            found += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                      if _READ.search(line)]
    assert not found, ("read these through the kind's payload Struct (events.payload_of / events.read_payload):\n"
                       + "\n".join(found))


def test_the_exceptions_are_still_needed() -> None:
    for rel in NOT_LOG_EVENTS:
        assert _READ.search((ROOT / rel).read_text()), f"{rel} no longer reads a payload as a map: drop it"
