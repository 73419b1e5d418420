"""The layout table of DESIGN.md and the README, as import rules between the project's packages: a package
imports only those below it. Checked on the source (AST), lazy imports inside functions included."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_core_imports import ROOT, _imports, _module_name

ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "pki": frozenset({"errors"}),
    "events": frozenset({"errors", "pki"}),
    "fsm": frozenset({"errors", "events"}),
    "config": frozenset({"errors"}),
    "sequencer": frozenset({"errors", "pki", "events", "fsm", "config"}),
    "service": frozenset({"errors", "events", "fsm", "sequencer", "config"}),
    "storage": frozenset({"errors", "pki", "events"}),
    "image": frozenset({"errors", "pki", "events", "storage"}),
    "api": frozenset({"errors", "pki", "events", "fsm", "sequencer", "config", "service", "storage", "image"}),
    "node": frozenset({"errors", "pki", "events", "fsm", "sequencer", "config", "service", "storage", "image",
                       "api"}),
    "provision": frozenset({"errors", "pki", "events", "fsm", "sequencer", "config", "service", "storage", "image",
                            "api", "node"}),
    "cli": frozenset({"errors", "pki", "events", "fsm", "sequencer", "config", "service", "storage", "image", "api",
                      "node",
                      "provision"}),
}


def _files() -> list[Path]:
    return sorted(p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py") if "_pb" not in p.parts)


def _project_imports(path: Path) -> list[tuple[int, str]]:
    own = _module_name(path).split(".")[0]
    return [(line, name) for line, name in _imports(path) if name.split(".")[0] in ALLOWED
            and name.split(".")[0] != own]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_package_imports_only_those_below_it(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    pkg = rel.split("/")[0]
    bad = []
    for line, name in _project_imports(path):
        top = name.split(".")[0]
        ok = top in ALLOWED[pkg]
        if not ok:
            bad.append(f"{rel}:{line}: {pkg} may not import {name}")
    assert not bad, "\n".join(bad)


def test_every_package_is_in_the_table() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench", "specs"}
    assert packages == set(ALLOWED), "a new package needs its row in ALLOWED (and in the README's layout table)"


def test_the_os_image_carries_what_its_packages_import() -> None:
    from image._build import PACKAGES

    missing = {f"{pkg} imports {dep}" for pkg in PACKAGES if pkg != "specs" for dep in ALLOWED[pkg]
               if dep not in PACKAGES}
    assert not missing, f"image/_build.py PACKAGES (the agent boots from these alone) lacks: {sorted(missing)}"
