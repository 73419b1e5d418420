"""The core (errors, lazy, pki, events, boot, fsm, sequencer, config, service) does no I/O of its own: it never imports
the storage, network or RPC libraries, nor the adapter packages. Checked on the source (AST), so a lazy import
inside a function counts."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("errors", "lazy", "pki", "events", "boot", "fsm", "sequencer", "config", "service")
FORBIDDEN = frozenset({"lmdb", "grpc", "pyroute2", "storage", "image", "api", "node", "provision", "cli"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield node.lineno, node.module or ""
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _core_files() -> list[Path]:
    return sorted(p for pkg in CORE if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_adapter(path: Path) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {name}" for line, name in _imports(path)
           if name.split(".")[0] in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_the_scan_sees_every_core_package_and_resolves_relative_imports(tmp_path: Path) -> None:
    assert {p.relative_to(ROOT).parts[0] for p in _core_files()} == set(CORE)
    found = dict((name, line) for line, name in _imports(ROOT / "sequencer" / "tasks" / "meta.py"))
    assert "sequencer._context" in found and "events" in found
