"""Strict YAML loading with line numbers, and the way back (``to_dict``, ``dump_yaml``).

The document is composed to a node tree once: the same tree gives the plain values (with the safe
constructor) and the line of every path, and catches what PyYAML would silently accept (duplicate keys).
Composition is bounded by the named limits (``config.limits``): document size, aliases, depth, node count and
time are checked as the parser's events arrive, so a hostile document is refused before it is expanded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.events import AliasEvent, NodeEvent

from errors import LimitExceeded, TooLarge

from ._schema import MachineConfig
from ._validate import Path, Problem, Validation, format_path, validate_tree
from .limits import LIMITS, Limits

__all__ = ["dump_yaml", "load", "parse_yaml", "to_dict", "validate"]


class _Bounded(Composer):
    """PyYAML's composer with the limits checked at every node: a machine config has no use for aliases, deep
    nesting or tens of thousands of values, and a hostile one must not be expanded to find that out."""

    limits: Limits = LIMITS
    check_event: Callable[..., bool]  # the parser's, which comes after this class in a loader's bases
    peek_event: Callable[[], yaml.Event]

    def _start_bounds(self, limits: Limits) -> None:
        self.limits = limits
        self._nodes = 0
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[str, int] = {}
        self._deadline = time.monotonic() + limits.parse_seconds

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        lim = self.limits
        self._nodes += 1
        if self._nodes > lim.yaml_nodes:
            raise LimitExceeded(f"the config has more than {lim.yaml_nodes} YAML nodes (limit yaml_nodes)",
                                limit="yaml_nodes", value=self._nodes, max=lim.yaml_nodes, line=self._line())
        if self._depth >= lim.yaml_depth:
            raise LimitExceeded(f"the config nests deeper than {lim.yaml_depth} levels (limit yaml_depth)",
                                limit="yaml_depth", value=self._depth + 1, max=lim.yaml_depth, line=self._line())
        if self._nodes % 256 == 0 and time.monotonic() > self._deadline:
            raise LimitExceeded(f"parsing the config took more than {lim.parse_seconds} s (limit parse_seconds)",
                                limit="parse_seconds", value=round(time.monotonic() - self._deadline
                                                                  + lim.parse_seconds, 3),
                                max=lim.parse_seconds, line=self._line())
        if self.check_event(AliasEvent):
            self._aliases += 1
            anchor = self._anchor()
            if self._aliases > lim.yaml_aliases:
                raise LimitExceeded(f"the config uses a YAML alias (*{anchor}): aliases are not allowed in a "
                                    f"machine config (limit yaml_aliases = {lim.yaml_aliases})",
                                    limit="yaml_aliases", value=self._aliases, max=lim.yaml_aliases,
                                    line=self._line())
            self._nodes += self._sizes.get(anchor or "", 0)  # what the alias expands to counts as much as a copy
            return super().compose_node(parent, index)
        anchor = self._anchor()
        start = self._nodes
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if anchor is not None:
            self._sizes[anchor] = self._nodes - start + 1
        return node

    def _anchor(self) -> str | None:
        event = self.peek_event()
        return event.anchor if isinstance(event, NodeEvent) else None

    def _line(self) -> int | None:
        mark = getattr(self.peek_event(), "start_mark", None)
        return mark.line + 1 if mark is not None else None


class _Loader(_Bounded, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """libyaml's events (every PyYAML wheel has it) composed in Python with the bounds, then the safe constructor."""

    def __init__(self, stream: bytes | str, limits: Limits = LIMITS) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._start_bounds(limits)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]  # the C dumper when libyaml is there: a base mypy cannot see
    """Multi-line strings (PEM text) as literal blocks, which read as they are."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _fail(message: str, mark: yaml.Mark | None = None) -> tuple[object, dict[Path, int], list[Problem]]:
    line = mark.line + 1 if mark is not None else None
    return None, {}, [Problem(path="", message=message, line=line)]


def parse_yaml(data: bytes | str, limits: Limits = LIMITS) -> tuple[object, dict[Path, int], list[Problem]]:
    """Parse one YAML document: (plain tree, line of every path, syntax problems). ``LimitExceeded`` (or
    ``TooLarge``) when the document goes past one of ``limits``."""
    size = len(data.encode("utf-8", "replace") if isinstance(data, str) else data)
    if size > limits.config_bytes:
        raise TooLarge(f"the config is {size} bytes; the limit is {limits.config_bytes} (limit config_bytes)",
                       limit="config_bytes", value=size, max=limits.config_bytes)
    try:
        loader = _Loader(data, limits)
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


def _plain(value: object, prune: bool) -> object:
    if isinstance(value, dict):
        items = ((k, _plain(v, prune)) for k, v in value.items())
        return {k: v for k, v in items if not prune or (v is not None and v != [] and v != {})}
    if isinstance(value, list | tuple):
        return [_plain(v, prune) for v in value]
    return value


def to_dict(config: MachineConfig, *, full: bool = False) -> dict[str, object]:
    """The config as plain JSON-like data; unless ``full``, without nulls and empty lists or mappings."""
    tree = _plain(msgspec.to_builtins(config), prune=not full)
    return tree if isinstance(tree, dict) else {}


def dump_yaml(config: MachineConfig | dict[str, object]) -> str:
    """YAML text for a config (keys in schema order, block style)."""
    tree = to_dict(config) if isinstance(config, MachineConfig) else config
    text: str = yaml.dump(tree, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return text
