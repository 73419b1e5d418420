"""Partition labels, the A/B slots, and the record a disk keeps about what each slot holds.

A slot area (the ``BOOT-A``/``BOOT-B`` partition, or a sparse file of the same role on the sandbox) holds
one image written raw at offset 0 and, in its last ``SLOT_RECORD_SIZE`` bytes, a *slot record*: what was
written there, how long it is, its payload digest, and whether the write completed (``ok``), is under way
(``pending``) or failed. A slot whose record is missing, damaged or not ``ok`` holds no image.

``InstallableImage`` is the type a disk accepts for writing and mounting. It is sealed: exactly one
subclass may exist, ``image.VerifiedImage``, whose only maker is ``image.verify()``. So storage can insist
on verified images without importing ``image/`` (which imports storage).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from pathlib import Path
from typing import ClassVar

import msgspec

from boot import Slot

__all__ = [
    "RAW_LABELS",
    "SLOT_RECORD_SIZE",
    "InstallableImage",
    "Label",
    "SlotInfo",
    "SlotState",
    "decode_slot_record",
    "encode_slot_record",
    "slot_label",
]


class Label(enum.StrEnum):
    """GPT partition names, which are also the labels of their filesystems."""

    EFI = "EFI"
    BOOT_A = "BOOT-A"
    BOOT_B = "BOOT-B"
    META = "META"
    STATE = "STATE"
    EPHEMERAL = "EPHEMERAL"

    @classmethod
    def parse(cls, value: str | Label) -> Label:
        try:
            return cls(str(value).upper())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown partition label {value!r} (labels: {names})") from None

    @property
    def is_raw(self) -> bool:
        """Raw partitions hold bytes (images, META); the others hold a filesystem."""
        return self in RAW_LABELS


RAW_LABELS = frozenset({Label.BOOT_A, Label.BOOT_B, Label.META})


def slot_label(slot: Slot) -> Label:
    """The partition (or sandbox file) that holds ``slot``."""
    return Label.BOOT_A if slot is Slot.A else Label.BOOT_B


class SlotState(enum.StrEnum):
    PENDING = "pending"  # a write started and has not finished: the slot holds no image
    OK = "ok"  # the image was written and read back with the verified digest
    FAILED = "failed"  # a write finished but the read-back did not match


class SlotInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a slot holds, as recorded by the disk after writing it."""

    state: SlotState
    version: str
    key_id: str
    image_size: int
    payload_size: int
    payload_sha256: bytes
    tail_sha256: bytes  # SHA-256 of the bytes after the payload: manifest, signature, trailer

    @property
    def ok(self) -> bool:
        return self.state is SlotState.OK

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "version": self.version,
            "key_id": self.key_id,
            "image_size": self.image_size,
            "payload_size": self.payload_size,
            "payload_sha256": self.payload_sha256.hex(),
        }


# Slot record: magic(8) | length u32 BE | msgpack(SlotInfo) | sha256(magic..msgpack)(32), in the last 4 KiB.
SLOT_RECORD_SIZE = 4096
_RECORD_MAGIC = b"GRVSLOT\x00"
_RECORD_HEAD = struct.Struct(">8sI")
_encoder = msgspec.msgpack.Encoder(order="sorted")
_decoder = msgspec.msgpack.Decoder(SlotInfo)


def encode_slot_record(info: SlotInfo) -> bytes:
    """The ``SLOT_RECORD_SIZE`` bytes that describe ``info``, zero-padded."""
    body = _encoder.encode(info)
    head = _RECORD_HEAD.pack(_RECORD_MAGIC, len(body))
    record = head + body + hashlib.sha256(head + body).digest()
    if len(record) > SLOT_RECORD_SIZE:
        raise ValueError(f"slot record of {len(record)} bytes does not fit {SLOT_RECORD_SIZE}")
    return record.ljust(SLOT_RECORD_SIZE, b"\x00")


def decode_slot_record(data: bytes) -> SlotInfo | None:
    """The record in ``data``, or None when it is blank, damaged or not a slot record."""
    if len(data) < _RECORD_HEAD.size + 32:
        return None
    magic, length = _RECORD_HEAD.unpack_from(data)
    end = _RECORD_HEAD.size + length
    if magic != _RECORD_MAGIC or end + 32 > len(data):
        return None
    if hashlib.sha256(data[:end]).digest() != data[end : end + 32]:
        return None
    try:
        return _decoder.decode(data[_RECORD_HEAD.size : end])
    except msgspec.DecodeError:
        return None


class InstallableImage:
    """An image a disk may write to a slot or mount: sealed, its one subclass is ``image.VerifiedImage``.

    Attributes every instance carries:

    ``path``: the file (or slot) the image was verified in; ``image_size``: its length in bytes;
    ``payload_size``/``payload_sha256``: the squashfs payload at offset 0 and its verified digest;
    ``tail``: the exact bytes after the payload (manifest, signature, trailer); ``version``, ``key_id``.
    """

    __slots__ = ()
    _sealed_to: ClassVar[type | None] = None

    path: Path
    image_size: int
    payload_size: int
    payload_sha256: bytes
    tail: bytes
    version: str
    key_id: str

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if InstallableImage._sealed_to is not None:
            raise TypeError(
                f"InstallableImage is sealed to {InstallableImage._sealed_to.__qualname__}; "
                f"{cls.__qualname__} may not derive from it"
            )
        InstallableImage._sealed_to = cls

    def __new__(cls, *args: object, **kwargs: object) -> InstallableImage:
        if cls is InstallableImage:
            raise TypeError("InstallableImage cannot be made directly; use image.verify()")
        return super().__new__(cls)

    def slot_info(self, state: SlotState) -> SlotInfo:
        return SlotInfo(
            state=state,
            version=self.version,
            key_id=self.key_id,
            image_size=self.image_size,
            payload_size=self.payload_size,
            payload_sha256=self.payload_sha256,
            tail_sha256=hashlib.sha256(self.tail).digest(),
        )
