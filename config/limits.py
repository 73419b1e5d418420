"""The named limits on what a request may ask of a node (specs/limits.md): pure data, no I/O.

Every refusal names its limit (``LimitExceeded``/``TooLarge`` with ``limit``, ``value`` and ``max``), so an
operator reading an error finds the number here and in ``gravenctl limits``-style output (``LIMITS`` as JSON).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["LIMITS", "Limits", "clip_utf8"]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults chosen so that a real machine config or image is far inside them and a hostile one is refused
    before it costs the node more than a few MiB or a few hundred milliseconds."""

    config_bytes: int = 1 * MiB
    """A machine config document (real ones are a few KiB; the certificates inside are the bulk)."""
    yaml_aliases: int = 0
    """YAML anchors and aliases: a machine config has no use for them, and they make billion-laughs bombs."""
    yaml_depth: int = 32
    """Nesting depth of the YAML document (the schema nests 6 levels deep)."""
    yaml_nodes: int = 20_000
    """Scalars, sequences and mappings in one document."""
    parse_seconds: float = 2.0
    """Time budget for parsing one document."""
    reported_errors: int = 20
    """Config problems reported one by one; the rest are counted (``and N more``)."""
    status_bytes: int = 8 * KiB
    """The whole gRPC status (message, details) a refusal sends; grpcio refuses metadata over 16 KiB."""
    message_bytes: int = 4 * MiB
    """One gRPC message received (a config, or one chunk of an upload): larger ones are refused by gRPC before
    they are read into memory."""
    upload_bytes: int = 2 * GiB
    """An image streamed to Upgrade (the spool is on EPHEMERAL)."""
    upload_free_bytes: int = 64 * MiB
    """Free space EPHEMERAL must keep after an upload (the event log lives there too)."""
    url_schemes: tuple[str, ...] = ("file", "https")
    """Schemes an Upgrade URL may use."""
    name_bytes: int = 256
    """A short string in a request: a name, a glob, a role, a partition label."""
    list_items: int = 64
    """Items in a short list in a request (kinds, roles, partitions)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


LIMITS = Limits()


def clip_utf8(text: str, max_bytes: int, marker: str = " …(clipped)") -> str:
    """``text`` cut so that its UTF-8 form fits ``max_bytes`` (with ``marker`` appended when cut)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    room = max(0, max_bytes - len(marker.encode()))
    return data[:room].decode("utf-8", "ignore") + marker
