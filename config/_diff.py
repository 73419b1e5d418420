"""Diff, digest and redaction. Secrets (fields marked ``secret`` in the schema, such as ``machine.ca.key``)
appear only as ``sha256:<hex>`` of their text, so a diff can go into an event or a terminal as it is."""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec
import msgspec.inspect as mi

from ._load import to_dict
from ._schema import MachineConfig, secret_digest
from ._validate import Path, format_path

__all__ = ["Change", "canonical", "diff", "digest", "redact", "redacted_dict", "secret_paths"]

_INFO = mi.type_info(MachineConfig)


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One difference between two configs; ``old``/``new`` are plain data, secrets as digests."""

    path: str
    op: Literal["add", "remove", "replace"]
    old: object = None
    new: object = None

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "op": self.op, "old": self.old, "new": self.new}


def _redact_tree(value: object, t: mi.Type) -> object:
    if isinstance(t, mi.Metadata):
        if (t.extra or {}).get("secret") and isinstance(value, str):
            return secret_digest(value)
        return _redact_tree(value, t.type)
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return value if value is None else _redact_tree(value, rest[0])
    if isinstance(t, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in t.fields}
        return {k: _redact_tree(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(t, mi.VarTupleType | mi.ListType) and isinstance(value, list):
        return [_redact_tree(v, t.item_type) for v in value]
    return value


def _secret_paths(t: mi.Type, path: Path) -> list[str]:
    if isinstance(t, mi.Metadata):
        return [format_path(path)] if (t.extra or {}).get("secret") else _secret_paths(t.type, path)
    if isinstance(t, mi.UnionType):
        return [p for x in t.types for p in _secret_paths(x, path)]
    if isinstance(t, mi.StructType):
        return [p for f in t.fields for p in _secret_paths(f.type, (*path, f.encode_name))]
    if isinstance(t, mi.VarTupleType | mi.ListType):
        return _secret_paths(t.item_type, (*path, "*"))
    return []


def secret_paths() -> list[str]:
    """The paths of every secret field (``*`` for any list index)."""
    return [p.replace(".*", "[*]") for p in _secret_paths(_INFO, ())]


def redacted_dict(config: MachineConfig) -> dict[str, object]:
    """``to_dict(config)`` with every secret replaced by its digest."""
    tree = _redact_tree(to_dict(config), _INFO)
    return tree if isinstance(tree, dict) else {}


def redact(config: MachineConfig) -> MachineConfig:
    """The config with every secret replaced by its digest (for readers who may not see secrets).

    A redacted config does not validate: a digest where a key belongs is an error, so it cannot be applied.
    """
    return msgspec.convert(_redact_tree(to_dict(config, full=True), _INFO), MachineConfig)


def canonical(config: MachineConfig) -> bytes:
    """Canonical bytes: JSON of ``to_dict(config)`` with sorted keys; equal configs give equal bytes."""
    return msgspec.json.encode(to_dict(config), order="sorted")


def digest(config: MachineConfig) -> str:
    """``sha256:<hex>`` of the canonical encoding."""
    return "sha256:" + hashlib.sha256(canonical(config)).hexdigest()


def diff(old: MachineConfig | None, new: MachineConfig | None) -> list[Change]:
    """Every difference from ``old`` to ``new`` (``None`` is the empty config), secrets as digests.

    Mappings and lists of mappings are compared member by member; a list of scalars is replaced whole,
    which reads better (``certSANs: [a] -> [a, b]``) than index by index.
    """
    a = redacted_dict(old) if old is not None else {}
    b = redacted_dict(new) if new is not None else {}
    out: list[Change] = []
    _diff(a, b, (), out)
    return out


def _diff(a: object, b: object, path: Path, out: list[Change]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            here = (*path, key)
            if key not in b:
                out.append(Change(path=format_path(here), op="remove", old=a[key]))
            elif key not in a:
                out.append(Change(path=format_path(here), op="add", new=b[key]))
            else:
                _diff(a[key], b[key], here, out)
    elif isinstance(a, list) and isinstance(b, list) and any(isinstance(x, dict) for x in (*a, *b)):
        for i in range(max(len(a), len(b))):
            here = (*path, i)
            if i >= len(b):
                out.append(Change(path=format_path(here), op="remove", old=a[i]))
            elif i >= len(a):
                out.append(Change(path=format_path(here), op="add", new=b[i]))
            else:
                _diff(a[i], b[i], here, out)
    else:
        out.append(Change(path=format_path(path), op="replace", old=a, new=b))
