"""``storage.write_durably``: the one atomic, durable file replacement the adapters share."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from errors import StorageError
from storage import fsync_dir, write_durably


def test_replaces_whole_with_its_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state" / "key.pem"
    write_durably(path, b"old", mode=0o600)
    write_durably(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["key.pem"]


def test_a_failure_names_the_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_durably(path, b"kept")
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores directory permissions: make the target a directory
            os.chmod(tmp_path, 0o700)
            path = tmp_path / "dir"
            path.mkdir()
            (path / "x").write_bytes(b"")
        with pytest.raises(StorageError, match=str(path)):
            write_durably(path, b"lost")
    finally:
        os.chmod(tmp_path, 0o700)
    assert (tmp_path / "config.yaml").read_bytes() == b"kept"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fsync_dir_syncs_a_folder_and_refuses_anything_else(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "gone")
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor left open
