"""The local-cluster provisioner: machines (processes, containers or VMs) booted from a built image, each in a
network namespace of its own or on 127.0.0.1 ports, installed and brought to Running (``gravenctl cluster``)."""

import typing

import lazy

if typing.TYPE_CHECKING:
    from ._choose import PROVISIONERS as PROVISIONERS
    from ._choose import choose_provisioner as choose_provisioner
    from ._cluster import DEFAULT_NAME as DEFAULT_NAME
    from ._cluster import FIRST_PORT as FIRST_PORT
    from ._cluster import NETWORKS as NETWORKS
    from ._cluster import TimedProgress as TimedProgress
    from ._cluster import choose_network as choose_network
    from ._cluster import create_cluster as create_cluster
    from ._cluster import create_cluster_netns as create_cluster_netns
    from ._cluster import load_cluster as load_cluster
    from ._cluster import machine_alive as machine_alive
    from ._destroy import destroy_cluster as destroy_cluster
    from ._netns import show as show_netns
    from ._record import ClusterRecord as ClusterRecord
    from ._record import NodeRecord as NodeRecord

# gravenctl loads only the provisioner code of the command it runs
_LAZY: dict[str, str] = {
    "DEFAULT_NAME": "_cluster",
    "ClusterRecord": "_record",
    "FIRST_PORT": "_cluster",
    "NETWORKS": "_cluster",
    "NodeRecord": "_record",
    "PROVISIONERS": "_choose",
    "TimedProgress": "_cluster",
    "choose_network": "_cluster",
    "choose_provisioner": "_choose",
    "create_cluster": "_cluster",
    "create_cluster_netns": "_cluster",
    "destroy_cluster": "_destroy",
    "load_cluster": "_cluster",
    "machine_alive": "_cluster",
    "show_netns": "_netns:show",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_NAME",
    "FIRST_PORT",
    "NETWORKS",
    "PROVISIONERS",
    "ClusterRecord",
    "NodeRecord",
    "TimedProgress",
    "choose_network",
    "choose_provisioner",
    "create_cluster",
    "create_cluster_netns",
    "destroy_cluster",
    "load_cluster",
    "machine_alive",
    "show_netns",
]
