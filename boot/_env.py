"""The boot environment: the two image slots, and what the bootloader knows about them between boots.

META stores ``BootEnv`` as msgpack (``storage._meta``); its fields and their encoding are that format.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["BootEnv", "Slot", "SlotBoot"]


class Slot(enum.StrEnum):
    """An image slot. ``Slot("A")``, ``Slot.parse("a")``, ``Slot.parse("BOOT-A")`` and ``Slot.A`` are the same slot."""

    A = "A"
    B = "B"

    @property
    def other(self) -> Slot:
        return Slot.B if self is Slot.A else Slot.A

    @classmethod
    def parse(cls, value: str | Slot) -> Slot:
        text = str(value).upper().removeprefix("BOOT-")
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown slot {value!r} (slots: A, B)") from None


class SlotBoot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Boot counting state of one slot: tries left before it is given up, and whether it booted good."""

    tries_left: int = 0
    good: bool = False

    @property
    def bootable(self) -> bool:
        return self.good or self.tries_left > 0


class BootEnv(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the bootloader knows between boots.

    ``seq`` numbers the environments: every change makes a new one with ``seq + 1``, and META refuses to
    store an environment that is not newer than the one it holds. ``fallback`` is the slot the bootloader
    goes to when ``default``, on trial, runs out of tries (``boot.fallback_of``). ``last_fallback_seq`` is the
    ``seq`` of the environment that recorded the last fallback.
    """

    seq: int = 0
    default: Slot | None = None
    fallback: Slot | None = None
    a: SlotBoot = msgspec.field(default_factory=SlotBoot)
    b: SlotBoot = msgspec.field(default_factory=SlotBoot)
    boots: int = 0
    last_fallback_reason: str | None = None
    last_fallback_seq: int | None = None

    def slot(self, slot: Slot) -> SlotBoot:
        return self.a if slot == Slot.A else self.b

    def with_slot(self, slot: Slot, state: SlotBoot) -> BootEnv:
        if slot == Slot.A:
            return msgspec.structs.replace(self, a=state)
        return msgspec.structs.replace(self, b=state)

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "default": self.default.value if self.default else None,
            "fallback": self.fallback.value if self.fallback else None,
            "slots": {
                s.value: {"tries_left": self.slot(s).tries_left, "good": self.slot(s).good} for s in Slot
            },
            "boots": self.boots,
            "last_fallback_reason": self.last_fallback_reason,
            "last_fallback_seq": self.last_fallback_seq,
        }
