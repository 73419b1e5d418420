"""Who may call what: roles come from the client certificate's Organization, as in Talos."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ADMIN", "MAINTENANCE_METHODS", "OPERATOR", "READER", "RULES", "allowed"]

ADMIN, OPERATOR, READER = "os:admin", "os:operator", "os:reader"
_ALL = frozenset({ADMIN, OPERATOR, READER})
_MANAGE = frozenset({ADMIN, OPERATOR})
_ADMIN = frozenset({ADMIN})

# Method name → roles allowed. A method missing here is admin-only (Talos's fallback).
RULES: Mapping[str, frozenset[str]] = {
    "Version": _ALL,
    "MachineStatus": _ALL,
    "GetConfiguration": _ALL,  # secrets redacted unless admin
    "Events": _ALL,
    "AuditExport": _ALL,
    "BootTrace": _ALL,
    "Network": _ALL,
    "Logs": _ALL,
    "Dmesg": _ALL,
    "EtcdQuery": _ALL,
    "Resources": _ALL,
    "Reboot": _MANAGE,
    "Shutdown": _MANAGE,
    "Upgrade": _MANAGE,
    "Rollback": _MANAGE,
    "ApplyConfiguration": _ADMIN,
    "Reset": _ADMIN,
    "GenerateClientConfiguration": _ADMIN,
}

# In maintenance mode there is no CA yet: server-only TLS, and only these methods answer.
MAINTENANCE_METHODS = frozenset({"ApplyConfiguration", "Version", "MachineStatus"})


def allowed(method: str, roles: frozenset[str] | tuple[str, ...]) -> bool:
    return bool(RULES.get(method, _ADMIN) & set(roles))
