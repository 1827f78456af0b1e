"""dnode_phys_t parsing: field offsets, bonus and spill placement, both byte orders."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs import FSError
from uvfs_fs.zfs.dnode import (
    DMU_OT_PLAIN_FILE_CONTENTS,
    DMU_OT_ZNODE,
    DNODE_FLAG_SPILL_BLKPTR,
    DNODE_FLAG_USED_BYTES,
    parse_dnode,
)


def blkptr(bo: str, *, offset: int = 0, lsize: int = 512, level: int = 0, birth: int = 7) -> bytes:
    """A 128-byte non-embedded block pointer with one DVA (all zero words = a hole)."""
    if offset == 0:
        return bytes(128)
    sectors = lsize // 512 - 1
    prop = sectors | sectors << 16 | 2 << 32 | 7 << 40 | 19 << 48 | level << 56
    prop |= (1 << 63) if bo == "<" else 0
    words = [lsize // 512, offset // 512, 0, 0, 0, 0, prop, 0, 0, 0, birth, 1, 1, 2, 3, 4]
    return struct.pack(f"{bo}16Q", *words)


def dnode(
    bo: str,
    *,
    nblkptr: int = 1,
    bonus: bytes = b"",
    extra_slots: int = 0,
    flags: int = 0,
    spill: bytes | None = None,
    nlevels: int = 2,
) -> bytes:
    core = struct.pack(
        f"{bo}8BHHB3xQQ32x",
        DMU_OT_PLAIN_FILE_CONTENTS,
        17,
        nlevels,
        nblkptr,
        DMU_OT_ZNODE,
        7,
        2,
        flags,
        256,
        len(bonus),
        extra_slots,
        41,
        3 << 20,
    )
    body = core + b"".join(blkptr(bo, offset=(i + 1) << 20, level=1) for i in range(nblkptr))
    body += bonus
    size = (extra_slots + 1) * 512
    body = body[:size] + bytes(size - len(body[:size]))
    if spill is not None:
        body = body[: size - 128] + spill
    return body


@pytest.mark.parametrize("bo", ["<", ">"])
def test_core_fields_and_bonus(bo: str) -> None:
    bonus = bytes(range(200))
    dn = parse_dnode(dnode(bo, bonus=bonus, flags=DNODE_FLAG_USED_BYTES), bo)
    assert (dn.dn_type, dn.dn_indblkshift, dn.dn_nlevels, dn.dn_nblkptr) == (19, 17, 2, 1)
    assert (dn.dn_bonustype, dn.dn_checksum, dn.dn_compress) == (DMU_OT_ZNODE, 7, 2)
    assert dn.datablksz == 128 * 1024
    assert dn.dn_maxblkid == 41
    assert dn.used_bytes == 3 << 20
    assert dn.dn_bonus == bonus
    assert dn.dn_spill is None
    assert dn.byteorder == bo
    (bp,) = dn.dn_blkptr
    assert bp.dvas[0].offset == 1 << 20 and bp.level == 1


def test_used_in_sectors_without_flag() -> None:
    assert parse_dnode(dnode("<"), "<").used_bytes == (3 << 20) * 512


def test_three_blkptrs_leave_64_bonus_bytes() -> None:
    dn = parse_dnode(dnode("<", nblkptr=3), "<")
    assert [bp.dvas[0].offset for bp in dn.dn_blkptr] == [1 << 20, 2 << 20, 3 << 20]
    assert parse_dnode(dnode("<", nblkptr=3, bonus=bytes(64)), "<").dn_bonus == bytes(64)
    with pytest.raises(FSError) as e:
        parse_dnode(dnode("<", nblkptr=3, bonus=bytes(65)), "<")
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("bo", ["<", ">"])
def test_large_dnode_with_spill(bo: str) -> None:
    spill = blkptr(bo, offset=9 << 20, lsize=512)
    raw = dnode(bo, extra_slots=2, bonus=b"b" * 1000, flags=DNODE_FLAG_SPILL_BLKPTR, spill=spill)
    dn = parse_dnode(raw + b"trailing slots", bo)
    assert dn.dn_extra_slots == 2
    assert dn.dn_bonus == b"b" * 1000
    assert dn.dn_spill is not None and dn.dn_spill.dvas[0].offset == 9 << 20


def test_spill_takes_bonus_room() -> None:
    ok = dnode("<", bonus=bytes(192), flags=DNODE_FLAG_SPILL_BLKPTR, spill=bytes(128))
    assert len(parse_dnode(ok, "<").dn_bonus) == 192
    bad = dnode("<", bonus=bytes(200), flags=DNODE_FLAG_SPILL_BLKPTR, spill=bytes(128))
    with pytest.raises(FSError):
        parse_dnode(bad, "<")


def test_free_slot() -> None:
    dn = parse_dnode(bytes(512), "<")
    assert dn.dn_type == 0 and dn.dn_blkptr == ()


@pytest.mark.parametrize(
    "raw",
    [
        dnode("<", extra_slots=3)[:1024],  # extra slots past the buffer
        dnode("<", nblkptr=0),
        dnode("<", nlevels=0),
        dnode("<", nlevels=12),
        bytes(100),
    ],
)
def test_corrupt_is_eio(raw: bytes) -> None:
    with pytest.raises(FSError) as e:
        parse_dnode(raw, "<")
    assert e.value.errno == errno.EIO


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=512, max_size=2048), bo=st.sampled_from("<>"))
def test_hostile_bytes_parse_or_eio(raw: bytes, bo: str) -> None:
    try:
        dn = parse_dnode(raw, bo)
    except FSError as e:
        assert e.errno == errno.EIO
    else:
        assert len(dn.dn_bonus) == dn.dn_bonuslen
