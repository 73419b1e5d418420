"""The boundary where the disk adapters' foreign failures become Graven errors.

``os_errors(what)`` turns an ``OSError`` into ``DiskFull`` (ENOSPC, EDQUOT) or ``StorageError``;
``run(cmd)`` runs a tool and turns a missing tool or a failing exit into ``StorageError`` naming the
command and the tail of its stderr.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from errors import DiskFull, StorageError

from ._systools import package_of

__all__ = ["fsync_dir", "have", "is_root", "missing_tool", "os_errors", "run", "run_tool", "translate_os_error",
           "write_durably"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


def translate_os_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in _FULL:
        return DiskFull(f"{what}: no space left on device", path=exc.filename, errno=exc.errno)
    name = f" ({exc.filename})" if exc.filename and str(exc.filename) not in what else ""
    return StorageError(f"{what}{name}: {exc.strerror or exc}", path=exc.filename, errno=exc.errno)


@contextmanager
def os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise translate_os_error(exc, what) from exc


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one, never a part: a temporary
    file in the same folder (``mode`` from its first byte), fsync, rename, fsync of the folder."""
    tmp: str | None = None
    with os_errors(f"write {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            fsync_dir(path.parent)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def missing_tool(tool: str, shown: str) -> StorageError:
    """The error for a tool that is not installed, naming the Debian package and the set-up that installs it."""
    pkg = package_of(tool)
    hint = f"; Debian package {pkg}: `make run` or `python3 storage/_systools.py ensure` installs it" if pkg else ""
    return StorageError(f"{tool} is not installed (needed for `{shown}`{hint})", command=shown, tool=tool)


def run(cmd: Sequence[str], *, input: bytes | None = None, timeout: float = 120.0,
        env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd``, return its stdout as text; StorageError (or DiskFull) naming the command on failure."""
    shown = shlex.join(cmd)
    try:
        proc = subprocess.run(list(cmd), input=input, capture_output=True, timeout=timeout, check=False,
                              env=None if env is None else dict(env))
    except FileNotFoundError as exc:
        raise missing_tool(cmd[0], shown) from exc
    except subprocess.TimeoutExpired as exc:
        raise StorageError(f"`{shown}` did not finish within {timeout:.0f} s", command=shown) from exc
    except OSError as exc:
        raise translate_os_error(exc, f"`{shown}`") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        tail = " | ".join(err.splitlines()[-3:])
        cls = DiskFull if "No space left" in err else StorageError
        raise cls(f"`{shown}` failed with exit code {proc.returncode}: {tail or 'no output'}",
                  command=shown, returncode=proc.returncode)
    return proc.stdout.decode(errors="replace")


run_tool = run  # the public name, for the other adapters


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def is_root() -> bool:
    return os.geteuid() == 0
