"""The wire: the gRPC server (mutual TLS, RBAC, denials as events), the machine PKI, the client and its client
config (gravenconfig). What other packages use is named here."""

import typing

import lazy

if typing.TYPE_CHECKING:
    from ._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
    from ._client import Accepted as Accepted
    from ._client import GravenClient as GravenClient
    from ._client import client_version as client_version
    from ._clientconfig import ClientConfig as ClientConfig
    from ._clientconfig import Context as Context
    from ._clientconfig import atomic_write as atomic_write
    from ._clientconfig import default_path as default_client_config_path
    from ._clientconfig import load as load_client_config
    from ._clientconfig import load_or_new as load_or_new_client_config
    from ._clientconfig import split_endpoint as split_endpoint
    from ._etcd_pki import EtcdCA as EtcdCA
    from ._memory import trim as trim_heap
    from ._memory import tune_allocator as tune_allocator
    from ._pb import machine_pb2 as machine_pb2
    from ._pki import ClusterSecrets as ClusterSecrets
    from ._pki import check_roles as check_roles
    from ._pki import gen_config as gen_config
    from ._pki import gen_etcd_client as gen_etcd_client
    from ._pki import issue_client_certificate as issue_client_certificate
    from ._pki import issue_server_certificate as issue_server_certificate
    from ._replies import Applied as Applied
    from ._replies import SequenceInfo as SequenceInfo
    from ._replies import StatusInfo as StatusInfo
    from ._replies import VersionInfo as VersionInfo
    from ._server import Server as Server
    from ._tls import MaintenanceCredentials as MaintenanceCredentials
    from ._tls import ServingCredentials as ServingCredentials

# gravenctl, the agent and the supervisor each load only the parts of the wire they use (grpc is slow to import)
_LAZY: dict[str, str] = {
    "Accepted": "_client",
    "ClientConfig": "_clientconfig",
    "ClusterSecrets": "_pki",
    "Context": "_clientconfig",
    "DEFAULT_TIMEOUT": "_client",
    "EtcdCA": "_etcd_pki",
    "GravenClient": "_client",
    "MaintenanceCredentials": "_tls",
    "Server": "_server",
    "ServingCredentials": "_tls",
    "Applied": "_replies",
    "SequenceInfo": "_replies",
    "StatusInfo": "_replies",
    "VersionInfo": "_replies",
    "atomic_write": "_clientconfig",
    "check_roles": "_pki",
    "client_version": "_client",
    "default_client_config_path": "_clientconfig:default_path",
    "gen_config": "_pki",
    "gen_etcd_client": "_pki",
    "issue_client_certificate": "_pki",
    "issue_server_certificate": "_pki",
    "load_client_config": "_clientconfig:load",
    "load_or_new_client_config": "_clientconfig:load_or_new",
    "machine_pb2": "_pb",
    "split_endpoint": "_clientconfig",
    "trim_heap": "_memory:trim",
    "tune_allocator": "_memory",
}


__getattr__ = lazy.lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_TIMEOUT",
    "Accepted",
    "Applied",
    "ClientConfig",
    "ClusterSecrets",
    "Context",
    "EtcdCA",
    "GravenClient",
    "MaintenanceCredentials",
    "SequenceInfo",
    "Server",
    "ServingCredentials",
    "StatusInfo",
    "VersionInfo",
    "atomic_write",
    "check_roles",
    "client_version",
    "default_client_config_path",
    "gen_config",
    "gen_etcd_client",
    "issue_client_certificate",
    "issue_server_certificate",
    "load_client_config",
    "load_or_new_client_config",
    "machine_pb2",
    "split_endpoint",
    "trim_heap",
    "tune_allocator",
]
