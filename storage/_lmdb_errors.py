"""The one boundary where LMDB's exceptions become Graven's."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

import lmdb

from errors import DiskFull, GravenError, LogReadOnly, StorageError

__all__ = ["LMDB_ERRORS", "lmdb_errors", "out_of_space", "translate"]

# Every concrete lmdb exception and the Graven error it becomes (a test checks none is missing).
LMDB_ERRORS: dict[type[Exception], type[StorageError]] = {
    lmdb.MapFullError: DiskFull,
    lmdb.DiskError: StorageError,
    lmdb.ReadonlyError: LogReadOnly,
    lmdb.LockError: StorageError,
    lmdb.CorruptedError: StorageError,
    lmdb.PanicError: StorageError,
    lmdb.VersionMismatchError: StorageError,
    lmdb.InvalidError: StorageError,
    lmdb.MapResizedError: StorageError,
    lmdb.ReadersFullError: StorageError,
    lmdb.TxnFullError: StorageError,
    lmdb.CursorFullError: StorageError,
    lmdb.PageFullError: StorageError,
    lmdb.IncompatibleError: StorageError,
    lmdb.BadRslotError: StorageError,
    lmdb.BadTxnError: StorageError,
    lmdb.BadValsizeError: StorageError,
    lmdb.BadDbiError: StorageError,
    lmdb.DbsFullError: StorageError,
    lmdb.KeyExistsError: StorageError,
    lmdb.NotFoundError: StorageError,
    lmdb.PageNotFoundError: StorageError,
    lmdb.TlsFullError: StorageError,
    lmdb.InvalidParameterError: StorageError,
    lmdb.MemoryError: StorageError,
    lmdb.BadChecksumError: StorageError,
    lmdb.CryptoFailError: StorageError,
    lmdb.EnvEncryptionError: StorageError,
    lmdb.ProblemError: StorageError,
    lmdb.Error: StorageError,
}


def translate(exc: BaseException, where: str) -> GravenError:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{where}: no space left on device", path=where)
    if isinstance(exc, OSError):
        return StorageError(f"{where}: {exc.strerror or exc}", path=where, errno=exc.errno)
    for cls in type(exc).__mro__:
        if cls in LMDB_ERRORS:
            text = str(exc)
            if "No space left" in text or ("MDB_MAP_FULL" in text and cls is not lmdb.MapFullError):
                return DiskFull(f"{where}: {text}", path=where)
            return LMDB_ERRORS[cls](f"{where}: {text}", path=where)
    return StorageError(f"{where}: {exc}", path=where)


@contextmanager
def lmdb_errors(where: str) -> Iterator[None]:
    try:
        yield
    except (lmdb.Error, OSError) as exc:
        raise translate(exc, where) from exc


def out_of_space(path: str, exc: BaseException, batch_bytes: int) -> bool:
    """LMDB turns a short write into EIO: on a filesystem without room for the batch, that is a full disk."""
    if not ("Input/output error" in str(exc) or getattr(exc, "errno", None) == errno.EIO):
        return False
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 2 * batch_bytes + (1 << 20)
