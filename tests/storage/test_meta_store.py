"""META: the boot environment in two checksummed copies; a torn write never loses the last good one."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boot import BootEnv, Slot, SlotBoot
from errors import StorageError
from storage import META_SIZE, MetaStore
from storage._meta import (
    META_COPY_OFFSETS,
    CopyRead,
    CopyStatus,
    choose_copy,
    decode_copy,
    encode_copy,
    target_copy,
)


def env(seq: int, **kw: object) -> BootEnv:
    return BootEnv(seq=seq, default=Slot.A, a=SlotBoot(tries_left=3), **kw)  # type: ignore[arg-type]


@pytest.fixture
def meta(tmp_path: Path) -> MetaStore:
    p = tmp_path / "META"
    p.write_bytes(bytes(META_SIZE))
    return MetaStore(p)


# -- the pure codec -------------------------------------------------------------------------------------------


def test_copy_round_trip():
    e = BootEnv(seq=7, default=Slot.B, fallback=Slot.A, a=SlotBoot(0, True), b=SlotBoot(2, False), boots=9,
                last_fallback_reason="slot B ran out of tries", last_fallback_seq=5)
    data = encode_copy(e)
    assert len(data) % 4096 == 0
    assert decode_copy(data) == CopyRead(CopyStatus.OK, e)


def test_blank_and_corrupt_are_told_apart():
    assert decode_copy(bytes(4096)).status is CopyStatus.BLANK
    assert decode_copy(b"").status is CopyStatus.BLANK
    data = bytearray(encode_copy(env(1)))
    data[30] ^= 0x01
    got = decode_copy(bytes(data))
    assert got.status is CopyStatus.CORRUPT and "checksum" in got.reason
    assert decode_copy(b"garbage" * 10).status is CopyStatus.CORRUPT
    assert "truncated" in decode_copy(encode_copy(env(1))[:40]).reason


def test_header_seq_must_match_payload():
    good = bytearray(encode_copy(env(3)))
    good[8:16] = (4).to_bytes(8, "big")  # header says 4, payload says 3; fix the checksum so only seq disagrees
    import hashlib
    import struct

    length = struct.unpack_from(">I", good, 16)[0]
    end = 20 + length
    good[end : end + 32] = hashlib.sha256(bytes(good[:end])).digest()
    got = decode_copy(bytes(good))
    assert got.status is CopyStatus.CORRUPT and "seq" in got.reason


def test_choose_highest_valid_copy():
    a, b = CopyRead(CopyStatus.OK, env(4)), CopyRead(CopyStatus.OK, env(5))
    assert choose_copy([a, b]) == (1, env(5))
    assert choose_copy([b, a]) == (0, env(5))
    bad = CopyRead(CopyStatus.CORRUPT, reason="checksum mismatch")
    assert choose_copy([bad, a]) == (1, env(4))
    assert choose_copy([CopyRead(CopyStatus.BLANK), CopyRead(CopyStatus.BLANK)]) is None
    with pytest.raises(StorageError, match=r"no valid boot environment copy .*copy 0: corrupt \(checksum mismatch\)"):
        choose_copy([bad, CopyRead(CopyStatus.BLANK)])


def test_target_is_invalid_or_older_copy():
    a, b = CopyRead(CopyStatus.OK, env(4)), CopyRead(CopyStatus.OK, env(5))
    assert target_copy([a, b]) == 0
    assert target_copy([b, a]) == 1
    assert target_copy([CopyRead(CopyStatus.BLANK), CopyRead(CopyStatus.BLANK)]) == 0
    assert target_copy([a, CopyRead(CopyStatus.CORRUPT)]) == 1


# -- the store ------------------------------------------------------------------------------------------------


def test_blank_meta_reads_none(meta: MetaStore):
    assert meta.read() is None


def test_writes_alternate_between_copies(meta: MetaStore):
    for seq in range(1, 6):
        meta.write(env(seq))
        assert meta.read() == env(seq)
        copies = meta.copies()
        assert copies[(seq - 1) % 2].env == env(seq)
        if seq > 1:
            assert copies[seq % 2].env == env(seq - 1)  # the previous one is still whole


def test_stale_write_refused(meta: MetaStore):
    meta.write(env(3))
    with pytest.raises(StorageError, match="stale boot environment"):
        meta.write(env(3))
    with pytest.raises(StorageError, match="stale"):
        meta.write(env(1))
    assert meta.read() == env(3)


@pytest.mark.parametrize("copy", [0, 1])
@pytest.mark.parametrize("damage", ["truncate-mid", "zero-head", "flip-payload", "flip-checksum", "garbage"])
def test_torn_or_corrupt_copy_keeps_last_good(meta: MetaStore, copy: int, damage: str):
    meta.write(env(1))  # copy 0
    meta.write(env(2))  # copy 1
    last_good = {0: env(2), 1: env(1)}[copy]  # damage one copy: the other must be what we read
    off = META_COPY_OFFSETS[copy]
    data = bytearray(meta.path.read_bytes())
    record = encode_copy(env(1 if copy == 0 else 2))
    used = 20 + int.from_bytes(record[16:20], "big") + 32  # header, payload, checksum
    if damage == "truncate-mid":
        # a write torn halfway: the first half of the record landed, the rest is zeros
        data[off : off + len(record)] = record[: used // 2] + bytes(len(record) - used // 2)
    elif damage == "zero-head":
        data[off : off + 16] = bytes(16)
    elif damage == "flip-payload":
        data[off + 24] ^= 0x40
    elif damage == "flip-checksum":
        body_end = 20 + int.from_bytes(data[off + 16 : off + 20], "big")
        data[off + body_end + 3] ^= 0x01
    else:
        data[off : off + 4096] = os.urandom(4096)
    meta.path.write_bytes(bytes(data))
    assert meta.read() == last_good
    # the next write repairs the damaged copy and is then the newest
    meta.write(msgspec.structs.replace(last_good, seq=3))
    assert meta.read().seq == 3


@pytest.mark.parametrize("keep", [0, 100, 4096, META_SIZE // 2, META_SIZE // 2 + 50])
def test_file_truncated(meta: MetaStore, keep: int):
    """A META cut short keeps whatever whole copy survives; with none left it is a clear error, not 'blank'."""
    meta.write(env(1))  # copy 0
    meta.write(env(2))  # copy 1
    with open(meta.path, "r+b") as f:
        f.truncate(keep)
    if keep < 4096:
        with pytest.raises(StorageError, match="META"):
            meta.read()
    else:
        assert meta.read() == env(1)


def test_both_copies_bad_is_a_clear_error(meta: MetaStore):
    meta.write(env(1))
    meta.write(env(2))
    data = bytearray(meta.path.read_bytes())
    for off in META_COPY_OFFSETS:
        data[off + 2] ^= 0xFF
    meta.path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"META .*: no valid boot environment copy \(copy 0: corrupt"):
        meta.read()
    meta.write(env(3))  # a new environment repairs META
    assert meta.read() == env(3)


def test_missing_meta_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match=r"read META .*META: No such file"):
        MetaStore(tmp_path / "META").read()


def test_clear(meta: MetaStore):
    meta.write(env(1))
    meta.clear()
    assert meta.read() is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.integers(min_value=1, max_value=6),
    cut=st.integers(min_value=0, max_value=4095),
    mode=st.sampled_from(["cut", "flip"]),
)
def test_any_torn_last_write_leaves_the_previous(tmp_path_factory: pytest.TempPathFactory, writes: int, cut: int,
                                                 mode: str):
    """Tear the last write at any byte: the read gives that write (if it landed whole) or the one before."""
    p = tmp_path_factory.mktemp("meta") / "META"
    p.write_bytes(bytes(META_SIZE))
    store = MetaStore(p)
    for seq in range(1, writes + 1):
        store.write(env(seq))
    before = p.read_bytes()
    store.write(env(writes + 1))
    after = bytearray(p.read_bytes())
    off = META_COPY_OFFSETS[writes % 2]
    if mode == "cut":
        # the write reached only `cut` bytes of its 4 KiB block; the rest still holds what was there before
        after[off + cut : off + 4096] = before[off + cut : off + 4096]
    else:
        after[off + cut] ^= 0x10
    p.write_bytes(bytes(after))
    got = store.read()
    assert got in (env(writes), env(writes + 1))
    if mode == "flip" and cut < len(encode_copy(env(writes + 1)).rstrip(b"\0")):
        assert got == env(writes)
