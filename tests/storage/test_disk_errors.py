"""The disk adapters' one error boundary: OSError and failing tools become Graven errors naming what failed."""

from __future__ import annotations

import errno
import sys

import pytest

from errors import DiskFull, StorageError
from storage._sys import os_errors, run


@pytest.mark.parametrize(("code", "cls"), [(errno.ENOSPC, DiskFull), (errno.EDQUOT, DiskFull),
                                           (errno.EACCES, StorageError), (errno.EIO, StorageError)])
def test_os_errors(code: int, cls: type[StorageError]):
    with pytest.raises(cls) as info, os_errors("write slot BOOT-A (/dev/x)"):
        raise OSError(code, "boom", "/dev/x")
    assert type(info.value) is cls
    assert info.value.message.startswith("write slot BOOT-A (/dev/x)")
    assert isinstance(info.value.__cause__, OSError)


def test_run_names_the_command_and_its_error():
    with pytest.raises(StorageError, match=r"no-such-tool-x is not installed"):
        run(["no-such-tool-x", "--flag"])
    with pytest.raises(StorageError, match=r"`.* -c .*` failed with exit code 3: it broke") as info:
        run([sys.executable, "-c", "import sys; sys.stderr.write('it broke\\n'); sys.exit(3)"])
    assert info.value.details["returncode"] == 3
    with pytest.raises(DiskFull, match="No space left"):
        run([sys.executable, "-c", "import sys; sys.stderr.write('write: No space left on device\\n'); sys.exit(1)"])
    assert run([sys.executable, "-c", "print('ok')"]) == "ok\n"
