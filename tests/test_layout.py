"""The layout table of DESIGN.md and the README, as import rules between the project's packages: a package
imports only those below it, and only what that package names in its ``__init__`` (never another package's
private ``_module`` or ``_name``). Checked on the source (AST), lazy imports inside functions included."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from test_core_imports import ROOT, _imports, _module_name

ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "lazy": frozenset(),
    "pki": frozenset({"errors", "lazy"}),
    "events": frozenset({"errors", "lazy", "pki"}),
    "fsm": frozenset({"errors", "lazy", "events"}),
    "config": frozenset({"errors", "lazy"}),
    "boot": frozenset({"errors", "lazy"}),
    "sequencer": frozenset({"errors", "lazy", "boot", "pki", "events", "fsm", "config"}),
    "service": frozenset({"errors", "lazy", "boot", "events", "fsm", "sequencer", "config"}),
    "storage": frozenset({"errors", "lazy", "boot", "pki", "events"}),
    "image": frozenset({"errors", "lazy", "boot", "pki", "events", "storage"}),
    "api": frozenset({"errors", "lazy", "boot", "pki", "events", "fsm", "sequencer", "config", "service",
                      "storage", "image"}),
    "node": frozenset({"errors", "lazy", "boot", "pki", "events", "fsm", "sequencer", "config", "service",
                       "storage", "image", "api"}),
    "provision": frozenset({"errors", "lazy", "boot", "pki", "events", "fsm", "sequencer", "config", "service",
                            "storage", "image", "api", "node"}),
    "cli": frozenset({"errors", "lazy", "boot", "pki", "events", "fsm", "sequencer", "config", "service",
                      "storage", "image", "api", "node", "provision"}),
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
    bad += [f"{rel}:{line}: {name} is private to {name.split('.')[0]}: name it in its __init__"
            for line, name in _private_imports(path.read_text(), pkg) if f"{rel}:{name}" not in PRIVATE_OK]
    assert not bad, "\n".join(bad)


# Private cross-package imports that must stay, each with its reason ("file:module.name").
PRIVATE_OK: dict[str, str] = {}


def _private_imports(source: str, own: str) -> list[tuple[int, str]]:
    """Absolute imports of another project package's private module or name (``pkg._mod``, ``from pkg import _x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            top, *rest = name.split(".")
            if top in ALLOWED and top != own and any(part.startswith("_") for part in rest):
                found.append((node.lineno, name))
    return found


def test_a_private_import_across_packages_is_caught() -> None:
    source = ("from events._bundle import write_bundle\nimport storage._etcd\nfrom api import _pki, GravenClient\n"
              "from ._local import x\nfrom events import Event\nimport storage\n")
    assert [n for _, n in _private_imports(source, "node")] == [
        "events._bundle.write_bundle", "storage._etcd", "api._pki"]
    assert _private_imports("from storage._etcd import EtcdTLS\n", "storage") == []


def test_the_private_allow_list_is_still_needed() -> None:
    for entry in PRIVATE_OK:
        rel, name = entry.split(":")
        assert name in {n for _, n in _private_imports((ROOT / rel).read_text(), rel.split("/")[0])}, entry


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_what_a_package_names_resolves(pkg: str) -> None:
    """Every name in ``__all__`` is there, the lazy ones included, and the lazy table matches what mypy sees."""
    module = importlib.import_module(pkg)
    missing = [name for name in getattr(module, "__all__", []) if not hasattr(module, name)]
    assert not missing, f"{pkg}.__all__ names what it does not have: {missing}"
    lazy: dict[str, str] = getattr(module, "_LAZY", {})
    assert set(lazy) <= set(getattr(module, "__all__", [])), f"{pkg}: lazy names missing from __all__"
    typed = set()
    for node in ast.walk(ast.parse((ROOT / pkg / "__init__.py").read_text())):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "typing.TYPE_CHECKING":
            typed |= {a.asname or a.name for n in node.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert typed == set(lazy), f"{pkg}: the TYPE_CHECKING imports and _LAZY differ: {typed ^ set(lazy)}"


def test_every_package_is_in_the_table() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench", "specs"}
    assert packages == set(ALLOWED), "a new package needs its row in ALLOWED (and in the README's layout table)"


def test_the_os_image_carries_what_its_packages_import() -> None:
    from image._build import PACKAGES

    missing = {f"{pkg} imports {dep}" for pkg in PACKAGES if pkg != "specs" for dep in ALLOWED[pkg]
               if dep not in PACKAGES}
    assert not missing, f"image/_build.py PACKAGES (the agent boots from these alone) lacks: {sorted(missing)}"
