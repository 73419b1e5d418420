"""The committed protobuf/gRPC modules are exactly what ``python -m api._gen`` makes from ``specs/machine.proto``.

They are generated, never edited: their servicer base class raises ``NotImplementedError`` for every RPC by
protoc's design (``api._server.MachineServicer`` overrides each one)."""

from __future__ import annotations

from api import _gen
from api._pb import machine_pb2_grpc
from api._server import MachineServicer


def test_generated_modules_are_current() -> None:
    for name, text in _gen.generated_files().items():
        committed = (_gen.OUT / name).read_text()
        assert committed == text, f"api/_pb/{name} is stale: run `python -m api._gen`"


def test_the_servicer_implements_every_rpc() -> None:
    base = machine_pb2_grpc.MachineServiceServicer
    rpcs = [n for n in vars(base) if not n.startswith("_")]
    assert rpcs and all(getattr(MachineServicer, n) is not getattr(base, n) for n in rpcs)


def test_the_stubs_ask_for_pyprojects_grpcio_floor() -> None:
    """Not the patch release of grpcio-tools that generated them: a fresh install must generate the same bytes."""
    import re
    import tomllib

    deps = tomllib.loads((_gen.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(m.group(1) for d in deps if (m := re.fullmatch(r"grpcio>=([\d.]+),.*", d)))
    assert tuple(int(x) for x in _gen.GRPC_FLOOR.split(".")) == tuple(int(x) for x in (floor + ".0").split(".")[:3])
