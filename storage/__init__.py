"""Adapters that persist: the LMDB event log, disks and partitions, and the META boot environment."""

from ._disk import DiskBase as DiskBase
from ._disk_block import BlockDisk as BlockDisk
from ._disk_block import DiskLayout as DiskLayout
from ._disk_block import block_problem as block_problem
from ._disk_sandbox import SandboxDisk as SandboxDisk
from ._lmdb_log import LmdbEventLog as LmdbEventLog
from ._lmdb_log import LogReader as LogReader
from ._lmdb_log import seq_key as seq_key
from ._logring import LogRing as LogRing
from ._meta import META_SIZE as META_SIZE
from ._meta import BootEnv as BootEnv
from ._meta import MetaStore as MetaStore
from ._meta import SlotBoot as SlotBoot
from ._mount import MountStrategy as MountStrategy
from ._mount import available_strategies as available_strategies
from ._slot import InstallableImage as InstallableImage
from ._slot import Label as Label
from ._slot import Slot as Slot
from ._slot import SlotInfo as SlotInfo
from ._slot import SlotState as SlotState
from ._slotio import Progress as Progress
from ._sys import run_tool as run_tool
from ._sys import write_durably as write_durably

__all__ = [
    "META_SIZE",
    "BlockDisk",
    "BootEnv",
    "DiskBase",
    "DiskLayout",
    "InstallableImage",
    "Label",
    "LmdbEventLog",
    "LogReader",
    "LogRing",
    "MetaStore",
    "MountStrategy",
    "Progress",
    "SandboxDisk",
    "Slot",
    "SlotBoot",
    "SlotInfo",
    "SlotState",
    "available_strategies",
    "block_problem",
    "seq_key",
    "write_durably",
]
