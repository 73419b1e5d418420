"""The config's JSON Schema, generated from the Structs: ``python -m config.schema [--check] [PATH]``.

Writes ``specs/config.schema.json`` (or PATH); with ``--check`` exits 1 when the file is stale. Editors use
it to complete and check configs (yaml-language-server: ``# yaml-language-server: $schema=...``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from ._schema import MachineConfig

__all__ = ["DEFAULT_PATH", "json_schema", "main", "render"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "specs" / "config.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a machine config."""
    schema = msgspec.json.schema(MachineConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Graven machine config",
        **schema,
    }


def render() -> str:
    """The schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=False, default=list) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DEFAULT_PATH
    text = render()
    if check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            sys.stderr.write(f"{path} is stale; regenerate it with: python -m config.schema\n")
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
