"""The config's JSON Schema, generated from the Structs: ``python -m config.schema [--check] [PATH]``.

Writes ``specs/config.schema.json`` (or PATH); with ``--check`` exits 1 when the file is stale. Editors use
it to complete and check configs (yaml-language-server: ``# yaml-language-server: $schema=...``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from ._schema import MachineConfig

__all__ = ["DEFAULT_PATH", "json_schema", "main", "render"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "specs" / "config.schema.json"


def json_schema() -> dict[str, object]:
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
    parser = argparse.ArgumentParser(prog="python -m config.schema",
                                     description="Write the machine config's JSON Schema (or check it is current).")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs; write nothing")
    args = parser.parse_args(argv)
    path, check = args.path, args.check
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
