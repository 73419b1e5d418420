"""Adapters that persist: the LMDB event log, disks and partitions, and the META boot environment."""

from ._lmdb_log import LmdbEventLog as LmdbEventLog
from ._lmdb_log import LogReader as LogReader
from ._lmdb_log import seq_key as seq_key

__all__ = [
    "LmdbEventLog",
    "LogReader",
    "seq_key",
]
