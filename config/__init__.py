"""The machine config: schema, strict YAML loading, validation (every error, with path and line, plus
warnings), patches (RFC 6902 and RFC 7386), diff with secrets as digests, and apply plans.

A pure core: it parses the bytes and strings it is given and does no other I/O.
"""

from ._apply import (
    DEFAULT_TRY_TIMEOUT,
    REBOOT_FIELDS,
    Action,
    ApplyMode,
    ApplyPlan,
    boot_config,
    confirm_try,
    needs_reboot,
    plan_apply,
    revert_try,
)
from ._checks import decode_pem, ed25519_public_raw
from ._defaults import default_config
from ._diff import Change, canonical, diff, digest, redact, redacted_dict, secret_paths
from ._load import dump_yaml, load, parse_yaml, to_dict, validate
from ._patch import JsonPatch, MergePatch, Patch, apply_patch, load_patch, merge_patch, patch_tree
from ._schema import (
    CA,
    Audit,
    Cluster,
    Install,
    Interface,
    Machine,
    MachineConfig,
    Metrics,
    Network,
    Route,
    secret_digest,
)
from ._validate import Problem, Validation, format_path, install_disk_mismatch, validate_tree

__all__ = [
    "CA",
    "DEFAULT_TRY_TIMEOUT",
    "REBOOT_FIELDS",
    "Action",
    "ApplyMode",
    "ApplyPlan",
    "Audit",
    "Change",
    "Cluster",
    "Install",
    "Interface",
    "JsonPatch",
    "Machine",
    "MachineConfig",
    "MergePatch",
    "Metrics",
    "Network",
    "Patch",
    "Problem",
    "Route",
    "Validation",
    "apply_patch",
    "boot_config",
    "canonical",
    "confirm_try",
    "decode_pem",
    "default_config",
    "diff",
    "digest",
    "dump_yaml",
    "ed25519_public_raw",
    "format_path",
    "install_disk_mismatch",
    "load",
    "load_patch",
    "merge_patch",
    "needs_reboot",
    "parse_yaml",
    "patch_tree",
    "plan_apply",
    "redact",
    "redacted_dict",
    "revert_try",
    "secret_digest",
    "secret_paths",
    "to_dict",
    "validate",
    "validate_tree",
]
