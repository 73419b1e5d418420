"""Strict YAML loading with line numbers, and the way back (``to_dict``, ``dump_yaml``).

The document is composed to a node tree once: the same tree gives the plain values (with the safe
constructor) and the line of every path, and catches what PyYAML would silently accept (duplicate keys).
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from ._schema import MachineConfig
from ._validate import Path, Problem, Validation, format_path, validate_tree

__all__ = ["dump_yaml", "load", "parse_yaml", "to_dict", "validate"]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]  # the C dumper when libyaml is there: a base mypy cannot see
    """Multi-line strings (PEM text) as literal blocks, which read as they are."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _fail(message: str, mark: Any = None) -> tuple[Any, dict[Path, int], list[Problem]]:
    line = mark.line + 1 if mark is not None else None
    return None, {}, [Problem(path="", message=message, line=line)]


def parse_yaml(data: bytes | str) -> tuple[Any, dict[Path, int], list[Problem]]:
    """Parse one YAML document: (plain tree, line of every path, syntax problems)."""
    try:
        loader = _Loader(data)
    except yaml.YAMLError as exc:  # e.g. a byte stream in no Unicode encoding
        return _fail(f"not valid YAML: {exc}")
    try:
        node = loader.get_single_node()
        if node is None:
            return _fail("the config is empty")
        tree = loader.construct_document(node)
    except yaml.composer.ComposerError as exc:
        if exc.problem and "another document" in exc.problem:
            return _fail("the config must be a single YAML document; found a second one", exc.problem_mark)
        return _fail(f"not valid YAML: {exc.problem or exc}", exc.problem_mark)
    except yaml.MarkedYAMLError as exc:
        return _fail(f"not valid YAML: {exc.problem or exc}", exc.problem_mark)
    except yaml.YAMLError as exc:
        return _fail(f"not valid YAML: {exc}")
    finally:
        loader.dispose()
    if not isinstance(tree, dict):
        kind = "a list" if isinstance(tree, list) else f"a scalar ({tree!r})"
        return _fail(f"the config must be a mapping at the top level, not {kind}", node.start_mark)
    lines: dict[Path, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []
    _lines(node, (), lines, problems)
    return tree, lines, problems


def _lines(node: yaml.Node, path: Path, lines: dict[Path, int], problems: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or key == "<<":
                continue
            here = (*path, key)
            if key in seen:
                problems.append(
                    Problem(path=format_path(here), message=f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
                )
            seen.add(key)
            lines.setdefault(here, key_node.start_mark.line + 1)
            _lines(value_node, here, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault((*path, i), item.start_mark.line + 1)
            _lines(item, (*path, i), lines, problems)


def validate(source: bytes | str | MachineConfig) -> Validation:
    """Validate YAML text or a built config; never raises for a bad config, returns every problem."""
    if isinstance(source, MachineConfig):
        return validate_tree(to_dict(source, full=True))
    tree, lines, problems = parse_yaml(source)
    if tree is None:
        return Validation(config=None, errors=tuple(problems))
    result = validate_tree(tree, lines)
    if problems:
        errors = tuple(sorted((*problems, *result.errors), key=lambda p: p.line or 0))
        return Validation(config=None, errors=errors, warnings=result.warnings)
    return result


def load(source: bytes | str, *, name: str | None = None) -> MachineConfig:
    """Load a config from YAML; raises ``InvalidConfig`` with every error (``name`` labels the message)."""
    return validate(source).unwrap(name)


def _plain(value: Any, prune: bool) -> Any:
    if isinstance(value, dict):
        items = ((k, _plain(v, prune)) for k, v in value.items())
        return {k: v for k, v in items if not prune or (v is not None and v != [] and v != {})}
    if isinstance(value, list | tuple):
        return [_plain(v, prune) for v in value]
    return value


def to_dict(config: MachineConfig, *, full: bool = False) -> dict[str, Any]:
    """The config as plain JSON-like data; unless ``full``, without nulls and empty lists or mappings."""
    tree: dict[str, Any] = _plain(msgspec.to_builtins(config), prune=not full)
    return tree


def dump_yaml(config: MachineConfig | dict[str, Any]) -> str:
    """YAML text for a config (keys in schema order, block style)."""
    tree = to_dict(config) if isinstance(config, MachineConfig) else config
    text: str = yaml.dump(tree, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return text
