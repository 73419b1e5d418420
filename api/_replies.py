"""What ``GravenClient``'s reads answer: plain dicts (printed as JSON as they are) with a declared shape."""

from __future__ import annotations

from typing import TypedDict

__all__ = ["Applied", "ConfigDocument", "FallbackInfo", "SequenceInfo", "StatusInfo", "VersionInfo"]


class VersionInfo(TypedDict):
    version: str
    image_digest: str
    slot: str
    boot_id: str
    node: str
    kernel: str
    os_image: str
    provisioner: str


class ActorInfo(TypedDict):
    id: str
    roles: list[str]


class SequenceInfo(TypedDict):
    name: str
    actor: ActorInfo
    started_seq: int


class FallbackInfo(TypedDict):
    slot: str
    from_slot: str
    to_slot: str
    reason: str
    seq: int


class StatusInfo(TypedDict):
    node: str
    stage: str
    ready: bool
    slot: str
    version: str
    sequence: SequenceInfo | None
    last_fallback: FallbackInfo | None
    boot_id: str
    log_next_seq: int
    config_digest: str | None
    staged_config_digest: str | None
    details: dict[str, object]


class ConfigDocument(TypedDict):
    data: str
    digest: str
    redacted: bool


class Applied(TypedDict):
    node: str
    mode: str
    dry_run: bool
    diff: list[dict[str, object]]
    digest: str
    seq: int | None
    reboot_required: bool
    warnings: list[str]
