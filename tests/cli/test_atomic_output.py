"""``cli._output.atomic_output``, how gravenctl writes an etcd snapshot and an audit bundle: the file is whole or
absent, never a torn one, and a failure leaves what was there before."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli._output import atomic_output


def test_the_file_appears_whole_only_once_written(tmp_path: Path) -> None:
    out = tmp_path / "snap.db"
    out.write_bytes(b"old")
    with atomic_output(out, ".part") as f:
        f.write(b"new ")
        assert out.read_bytes() == b"old"
        assert (tmp_path / "snap.db.part").exists()
        f.write(b"bytes")
    assert out.read_bytes() == b"new bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.db"]


@pytest.mark.parametrize("error", [OSError("the node went away"), KeyboardInterrupt()])
def test_a_failure_removes_the_partial_file_and_keeps_the_old_one(tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "bundle.tar"
    out.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_output(out, ".partial") as f:
        f.write(b"half")
        raise error
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar"]
