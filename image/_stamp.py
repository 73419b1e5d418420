"""The version stamped into this copy of the agent's code, and its fault point.

``image build`` writes ``graven_build.json`` next to the packages in the image (``usr/lib/graven/``).
This module reads the one beside its own package, so the version the agent reports proves which code
runs: a checkout (no stamp) says ``dev``; an image's code says the version it was built as, whatever the
manifest claims. The fault point (``boot-crash``, ``health-fail`` or ``oom``: a process of a container machine
allocates past its memory limit) exists only in test images built with ``--fault``; an image without one never
fails on purpose.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

__all__ = ["BUILD_FILE", "CODE_DIR", "DEV_VERSION", "FAULTS", "BuildInfo", "build_info", "code_root", "fault_point",
           "running_version", "stamp"]

BUILD_FILE = "graven_build.json"
CODE_DIR = "usr/lib/graven"  # where an image holds the agent's code
DEV_VERSION = "dev"
FAULTS = ("boot-crash", "health-fail", "oom")


class BuildInfo(NamedTuple):
    version: str
    fault: str | None
    stamped: bool  # False: no stamp found (a checkout), version is "dev"


def code_root() -> Path:
    """The directory that holds this copy's packages (``usr/lib/graven`` in an image)."""
    return Path(__file__).resolve().parent.parent


@functools.cache
def build_info() -> BuildInfo:
    path = code_root() / BUILD_FILE
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return BuildInfo(DEV_VERSION, None, False)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"unreadable build stamp {path}: {exc}") from exc
    version = data.get("version") if isinstance(data, dict) else None
    fault = data.get("fault") if isinstance(data, dict) else None
    if not isinstance(version, str) or (fault is not None and fault not in FAULTS):
        raise RuntimeError(f"malformed build stamp {path}")
    return BuildInfo(version, fault, True)


def running_version() -> str:
    """The version of the code that is running: the stamp beside it, or ``dev`` when unstamped."""
    return build_info().version


def fault_point() -> str | None:
    """``boot-crash``, ``health-fail`` or ``oom`` in a test image built with ``--fault``; None otherwise."""
    return build_info().fault


def stamp(version: str, fault: str | None = None) -> bytes:
    """The bytes of ``graven_build.json`` for an image (deterministic)."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r} (faults: {', '.join(FAULTS)})")
    return (json.dumps({"fault": fault, "format": 1, "version": version}, sort_keys=True) + "\n").encode()
