"""``lazy.lazy_attributes``: a package's lazy names load their module on first use only, are kept as plain globals
after, may name another attribute (``"_module:attr"``), and any other name is an AttributeError; every package
with a ``_LAZY`` table uses it (one helper, not a copy per package)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from lazy import lazy_attributes

PACKAGES = ("api", "node", "provision", "events", "image", "storage", "sequencer")


def _package(root: Path) -> None:
    pkg = root / "lazypkg_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from lazy import lazy_attributes\n"
        "_LAZY = {'heavy': '_heavy', 'renamed': '_heavy:other'}\n"
        "__getattr__ = lazy_attributes(__name__, _LAZY, globals())\n")
    (pkg / "_heavy.py").write_text("heavy = 'H'\nother = 'O'\n")


def test_a_lazy_name_loads_its_module_on_first_use_only(tmp_path: Path) -> None:
    _package(tmp_path)
    code = ("import sys, lazypkg_probe as p\n"
            "assert 'lazypkg_probe._heavy' not in sys.modules\n"
            "assert p.heavy == 'H' and 'lazypkg_probe._heavy' in sys.modules\n"
            "assert vars(p)['heavy'] == 'H'\n"  # kept: the next use is a plain global
            "assert p.renamed == 'O'\n"
            "try:\n    p.nothing\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[2]}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'lazypkg_probe' has no attribute 'nothing'"


def test_an_unknown_name_is_an_attribute_error_and_nothing_is_kept() -> None:
    namespace: dict[str, object] = {}
    get = lazy_attributes("events", {"Bundle": "_bundle"}, namespace)
    with pytest.raises(AttributeError, match="module 'events' has no attribute 'Nope'"):
        get("Nope")
    assert namespace == {}
    assert get("Bundle") is namespace["Bundle"] is importlib.import_module("events._bundle").Bundle


@pytest.mark.parametrize("name", PACKAGES)
def test_every_lazy_package_uses_the_one_helper(name: str) -> None:
    pkg = importlib.import_module(name)
    getter = vars(pkg)["__getattr__"]
    assert getter.__module__ == "lazy" and getter.__qualname__ == "lazy_attributes.<locals>.__getattr__"
    table: dict[str, str] = vars(pkg)["_LAZY"]
    assert table and "importlib" not in (Path(pkg.__file__ or "").read_text())
