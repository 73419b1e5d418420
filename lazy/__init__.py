"""Lazy names of a package (PEP 562): its ``__init__`` names what it offers, and a name loads its module on first
use, so that a process that never uses it never imports it (the agent's start-up time and memory).

A package keeps a table ``_LAZY`` (name -> ``"_module"``, or ``"_module:attr"`` when the name differs), the same
names in an ``if typing.TYPE_CHECKING:`` block of imports (what mypy and readers see), and::

    __getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())

Below every package of the project: it imports nothing of it, and only ``importlib`` of the standard library.
"""

import importlib
from collections.abc import Callable, Mapping, MutableMapping

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: Mapping[str, str],
                    namespace: MutableMapping[str, object]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: a name of ``table`` imports its module (relative to ``package``)
    on first use and is kept in ``namespace`` (the package's globals), so the next use is a plain global; any
    other name is an ``AttributeError`` as for a module without one."""

    def __getattr__(name: str) -> object:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attr or name)
        namespace[name] = value
        return value

    return __getattr__
