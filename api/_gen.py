"""Regenerate the protobuf and gRPC modules from ``specs/machine.proto``: ``python -m api._gen``."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "specs" / "machine.proto"
OUT = ROOT / "api" / "_pb"
FILES = ("machine_pb2.py", "machine_pb2.pyi", "machine_pb2_grpc.py")
# The grpcio the stubs ask for at import: pyproject's floor, not the patch release of grpcio-tools that happened to
# generate them, so a fresh install that resolves a newer grpcio-tools generates the same bytes.
GRPC_FLOOR = "1.85.0"


def generate(out: Path) -> None:
    from grpc_tools import protoc  # build-time only

    args = ["protoc", f"-I{PROTO.parent}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    grpc_file = out / "machine_pb2_grpc.py"
    text = grpc_file.read_text().replace("import machine_pb2 as machine__pb2",
                                         "from . import machine_pb2 as machine__pb2")
    text = re.sub(r"^GRPC_GENERATED_VERSION = '[^']*'$", f"GRPC_GENERATED_VERSION = '{GRPC_FLOOR}'", text,
                  flags=re.MULTILINE)
    grpc_file.write_text(text)


def generated_files() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return {name: (Path(tmp) / name).read_text() for name in FILES}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    generate(OUT)
    (OUT / "__init__.py").write_text('"""Generated from specs/machine.proto by `python -m api._gen`; do not edit."""\n')
    sys.exit(0)
