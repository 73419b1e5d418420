"""Adapters that persist: the LMDB event log, disks and partitions, and the META boot environment."""

import typing

import lazy

from ._disk import DiskBase as DiskBase
from ._disk_block import BlockDisk as BlockDisk
from ._disk_block import DiskLayout as DiskLayout
from ._disk_block import block_problem as block_problem
from ._disk_sandbox import SandboxDisk as SandboxDisk
from ._libc import die_with_parent as die_with_parent
from ._libc import libc as libc
from ._meta import META_SIZE as META_SIZE
from ._meta import MetaStore as MetaStore
from ._mount import MountStrategy as MountStrategy
from ._mount import available_strategies as available_strategies
from ._slot import InstallableImage as InstallableImage
from ._slot import Label as Label
from ._slot import SlotInfo as SlotInfo
from ._slot import SlotState as SlotState
from ._slot import slot_label as slot_label
from ._slotio import Progress as Progress
from ._sys import fsync_dir as fsync_dir
from ._sys import have as have
from ._sys import missing_tool as missing_tool
from ._sys import run_tool as run_tool
from ._sys import write_durably as write_durably

__all__ = [
    "KERNEL_META",
    "KERNEL_SETUP",
    "META_SIZE",
    "BlockDisk",
    "DiskBase",
    "DiskLayout",
    "EtcdClient",
    "EtcdKeyValue",
    "EtcdMember",
    "EtcdRefused",
    "EtcdTLS",
    "InstallableImage",
    "Label",
    "LmdbEventLog",
    "LogReader",
    "LogRing",
    "MetaStore",
    "MountStrategy",
    "Progress",
    "SandboxDisk",
    "SlotInfo",
    "SlotState",
    "SnapshotCheck",
    "available_strategies",
    "block_problem",
    "die_with_parent",
    "fsync_dir",
    "have",
    "kernel_cache",
    "libc",
    "missing_tool",
    "seq_key",
    "slot_label",
    "write_durably",
]

if typing.TYPE_CHECKING:
    from ._etcd import EtcdClient as EtcdClient
    from ._etcd import EtcdRefused as EtcdRefused
    from ._etcd import EtcdTLS as EtcdTLS
    from ._etcd import KeyValue as EtcdKeyValue
    from ._etcd import Member as EtcdMember
    from ._etcd import SnapshotCheck as SnapshotCheck
    from ._lmdb_log import LmdbEventLog as LmdbEventLog
    from ._lmdb_log import LogReader as LogReader
    from ._lmdb_log import seq_key as seq_key
    from ._logring import LogRing as LogRing
    from ._systools import KERNEL_META as KERNEL_META
    from ._systools import KERNEL_SETUP as KERNEL_SETUP
    from ._systools import kernel_cache as kernel_cache

# etcd's generated gRPC stubs load only on a node that talks to etcd; the tool table only where kernels are built;
# the logs (lmdb and the event codecs, ~80 ms) only where they are opened: not in the supervisor, on every boot
_LAZY: dict[str, str] = {
    "LmdbEventLog": "_lmdb_log",
    "LogReader": "_lmdb_log",
    "LogRing": "_logring",
    "seq_key": "_lmdb_log",
    "EtcdClient": "_etcd",
    "EtcdMember": "_etcd:Member",
    "EtcdRefused": "_etcd",
    "EtcdTLS": "_etcd",
    "EtcdKeyValue": "_etcd:KeyValue",
    "KERNEL_META": "_systools",
    "KERNEL_SETUP": "_systools",
    "SnapshotCheck": "_etcd",
    "kernel_cache": "_systools",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())
