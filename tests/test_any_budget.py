"""How many lines of production code name ``typing.Any``: the budget may only shrink.

Issue 11 asks for fewer than 50 (``TARGET``, met and enforced); ``BUDGET`` is what the code holds now. Lower
``BUDGET`` whenever a change removes some; the test fails when a change adds one (give the value its type instead:
a Struct, a Protocol, ``object`` where it is only passed on)."""

from __future__ import annotations

import re

from test_core_imports import ROOT

PACKAGES = ("errors", "lazy", "pki", "events", "boot", "storage", "fsm", "sequencer", "config", "service", "image",
            "api", "node", "provision", "cli")
TARGET = 50
BUDGET = 0
_ANY = re.compile(r"\bAny\b")


def _lines_with_any() -> list[str]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "_pb" in path.parts:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _ANY.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}")
    return found


def test_the_any_budget_only_shrinks() -> None:
    found = _lines_with_any()
    assert len(found) < TARGET, f"{len(found)} lines name Any: issue 11 asks for fewer than {TARGET}"
    assert len(found) <= BUDGET, (f"{len(found)} lines name Any, the budget is {BUDGET} (target {TARGET}): type the "
                                  f"new values instead; the last ones: {found[-5:]}")

