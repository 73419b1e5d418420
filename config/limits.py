"""The named limits on what a request may ask of a node (specs/limits.md): pure data, no I/O.

Every refusal names its limit (``LimitExceeded``/``TooLarge`` with ``limit``, ``value`` and ``max``), so an
operator reading an error finds the number here and in ``gravenctl limits``-style output (``LIMITS`` as JSON).
"""

from __future__ import annotations

import msgspec

__all__ = ["LIMITS", "WHAT", "Limits", "clip_utf8"]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults chosen so that a real machine config or image is far inside them and a hostile one is refused
    before it costs the node more than a few MiB or a few hundred milliseconds."""

    config_bytes: int = 1 * MiB
    yaml_aliases: int = 0
    yaml_depth: int = 32
    yaml_nodes: int = 20_000
    parse_seconds: float = 2.0
    reported_errors: int = 20
    status_bytes: int = 8 * KiB
    message_bytes: int = 4 * MiB
    upload_bytes: int = 2 * GiB
    upload_free_bytes: int = 64 * MiB
    url_schemes: tuple[str, ...] = ("file", "https")
    url_bytes: int = 4096
    name_bytes: int = 256
    list_items: int = 64

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.to_builtins(self)
        return out

    def rows(self) -> list[dict[str, object]]:
        """One row per limit: name, value, what it bounds (``gravenctl limits``)."""
        return [{"name": k, "value": v, "what": WHAT[k]} for k, v in self.as_dict().items()]


WHAT: dict[str, str] = {  # what each limit bounds (``gravenctl limits``, specs/limits.md)
    "config_bytes": "a machine config document (real ones are a few KiB)",
    "yaml_aliases": "YAML aliases: a machine config has no use for them; they make billion-laughs bombs",
    "yaml_depth": "nesting depth of a YAML document (the schema nests 6 levels deep)",
    "yaml_nodes": "scalars, sequences and mappings in one document",
    "parse_seconds": "time to parse one document",
    "reported_errors": "config problems reported one by one; the rest are counted (and N more)",
    "status_bytes": "the whole gRPC status a refusal sends (grpcio refuses metadata over 16 KiB)",
    "message_bytes": "one gRPC message received: larger ones are refused by gRPC before they are read",
    "upload_bytes": "an image streamed to Upgrade or fetched from its URL",
    "upload_free_bytes": "free space EPHEMERAL keeps after an upload (the event log lives there too)",
    "url_schemes": "schemes an Upgrade URL may use",
    "url_bytes": "an Upgrade URL",
    "name_bytes": "any other string in a request: a name, a glob, a role, a partition label",
    "list_items": "items in a list in a request (kinds, roles, partitions)",
}

LIMITS = Limits()


def clip_utf8(text: str, max_bytes: int, marker: str = " …(clipped)") -> str:
    """``text`` cut so that its UTF-8 form fits ``max_bytes`` (with ``marker`` appended when cut)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    room = max(0, max_bytes - len(marker.encode()))
    return data[:room].decode("utf-8", "ignore") + marker
