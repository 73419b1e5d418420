"""The node's application service (core, no I/O): typed commands in (apply config, upgrade, rollback, reset,
reboot, shutdown, and confirm by applying the tried config again), typed replies and status records out, and every
rule about what a command may do and what it records. ``api`` maps proto to and from these records; ``node``
builds the ports and starts things."""

from ._app import NodeService as NodeService
from ._app import node_name as node_name
from ._ports import BootFacts as BootFacts
from ._ports import Cluster as Cluster
from ._ports import Host as Host
from ._ports import NetworkView as NetworkView
from ._records import WIPE_ALL as WIPE_ALL
from ._records import Accepted as Accepted
from ._records import Applied as Applied
from ._records import ApplyConfig as ApplyConfig
from ._records import Command as Command
from ._records import Fallback as Fallback
from ._records import Reboot as Reboot
from ._records import Reset as Reset
from ._records import Rollback as Rollback
from ._records import RunningSequence as RunningSequence
from ._records import Shutdown as Shutdown
from ._records import Status as Status
from ._records import StatusDetails as StatusDetails
from ._records import Upgrade as Upgrade
from ._records import VersionInfo as VersionInfo

__all__ = [
    "WIPE_ALL",
    "Accepted",
    "Applied",
    "ApplyConfig",
    "BootFacts",
    "Cluster",
    "Command",
    "Fallback",
    "Host",
    "NetworkView",
    "NodeService",
    "Reboot",
    "Reset",
    "Rollback",
    "RunningSequence",
    "Shutdown",
    "Status",
    "StatusDetails",
    "Upgrade",
    "VersionInfo",
    "node_name",
]
