"""Patches: RFC 6902 JSON Patch (a list of operations) and RFC 7386 merge patch (a mapping).

A merge patch follows RFC 7386 exactly: a mapping merges key by key, ``null`` deletes a key, and anything
else, lists included, replaces the target. Talos concatenates lists instead, which users found surprising
(siderolabs/talos#12005); here a list in a patch is the whole new list. Both kinds apply to the config's
full tree (optional fields present as ``null``, so ``add /machine/certSANs/-`` works on an empty list), and
the result is validated again as a whole.
"""

from __future__ import annotations

import copy

import msgspec
import yaml

from errors import InvalidConfig

from ._load import to_dict
from ._schema import MachineConfig
from ._validate import Problem, Validation, validate_tree

__all__ = ["JsonPatch", "MergePatch", "Patch", "apply_patch", "load_patch", "merge_patch", "patch_tree"]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class JsonPatch(msgspec.Struct, frozen=True):
    """An RFC 6902 JSON Patch: a list of operations."""

    ops: tuple[dict[str, object], ...]


class MergePatch(msgspec.Struct, frozen=True):
    """An RFC 7386 merge patch."""

    patch: dict[str, object]


Patch = JsonPatch | MergePatch


def _invalid(message: str, path: str = "patch", line: int | None = None) -> InvalidConfig:
    problem = Problem(path=path, message=message, line=line)
    return Validation(config=None, errors=(problem,)).error("patch")


def load_patch(data: bytes | str | list[object] | dict[str, object]) -> Patch:
    """A patch from YAML or JSON text (or already decoded): a list is a JSON Patch, a mapping a merge patch."""
    if isinstance(data, bytes | str):
        try:
            data = yaml.load(data, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            raise _invalid(f"not valid YAML: {exc.problem}", line=mark.line + 1 if mark else None) from exc
        except yaml.YAMLError as exc:
            raise _invalid(f"not valid YAML: {exc}") from exc
    if isinstance(data, dict):
        return MergePatch(data)
    if isinstance(data, list):
        ops = []
        for i, op in enumerate(data):
            if not isinstance(op, dict) or not isinstance(op.get("op"), str) or not isinstance(op.get("path"), str):
                raise _invalid("a JSON Patch operation needs string 'op' and 'path'", f"patch[{i}]")
            ops.append(op)
        return JsonPatch(tuple(ops))
    raise _invalid("a patch must be a list of JSON Patch operations or a mapping (a merge patch)")


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 on plain trees; neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patch_tree(tree: object, patch: Patch) -> object:
    """Apply one patch to a plain tree; a failing JSON Patch operation raises ``InvalidConfig`` naming it."""
    if isinstance(patch, MergePatch):
        return merge_patch(tree, patch.patch)
    import jsonpatch  # only for JSON Patch documents; the agent at rest never needs it

    doc = copy.deepcopy(tree)
    for i, op in enumerate(patch.ops):
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise _invalid(f"{op.get('op')} {op.get('path')}: {exc}", f"patch[{i}]") from exc
    return doc


def apply_patch(config: MachineConfig, *patches: Patch) -> MachineConfig:
    """Apply patches in order and validate the result; raises ``InvalidConfig`` with every error."""
    tree: object = to_dict(config, full=True)
    for patch in patches:
        tree = patch_tree(tree, patch)
    result = validate_tree(tree)
    return result.unwrap("patched config")
