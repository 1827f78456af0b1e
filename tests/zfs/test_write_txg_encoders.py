"""The encoders a txg's sync uses: dnodes, micro ZAP entries, DSL directory space
accounting, space map and bplist headers; each the inverse of (or checked by) the
reader's parser."""

from __future__ import annotations

import struct

import pytest
from write_pool import COMPRESSIONS, write_pool
from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs import ImageFile
from uvfs_fs.zfs.blkptr import DVA, BlockPtr, encode_blkptr, parse_blkptr
from uvfs_fs.zfs.bplist import bplist_append, bplist_entries
from uvfs_fs.zfs.dnode import DMU_OT_DNODE, DNODE_MIN_SIZE, encode_dnode, parse_dnode
from uvfs_fs.zfs.dsl import DD_USED_CHILD, DD_USED_HEAD, dsl_dir_diduse_space
from uvfs_fs.zfs.spa import open_pool
from uvfs_fs.zfs.spacemap import parse_space_map_phys, space_map_phys_append
from uvfs_fs.zfs.zap import (
    MZAP_ENT_LEN,
    ZBT_MICRO,
    ZapEntry,
    mzap_remove,
    mzap_set,
    parse_mzap,
    zap_hash,
)

_DATA_BP = BlockPtr(
    dvas=(DVA(0, 0x4000, 0x200, False), DVA(0, 0x90000, 0x200, False)),
    lsize=0x20000, psize=0x200, compress=3, checksum=7, type=19, level=0, embedded=False,
    byteorder="<", birth_txg=9, fill=1, cksum=(1, 2, 3, 4), is_hole=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def pool_record(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    return write_pool(zfs_pool, zfs_fuse)


async def test_every_dnode_of_a_pool_encodes_to_its_bytes(pool_record: PoolRecord) -> None:
    """encode_dnode(parse_dnode(slot)) is the slot, for every dnode slot of every dnode
    block of a zfs-fuse pool (the MOS and all datasets; free slots included)."""
    pool = await open_pool([ImageFile(str(v)) for v in pool_record.vdevs])
    slots = expected = 0
    objsets = set()
    async for v in walk_pool(pool):
        if v.level == 0 and v.bp.type == DMU_OT_DNODE:
            objsets.add(v.objset)
            expected += len(v.data) // DNODE_MIN_SIZE
            at = 0
            while at < len(v.data):
                dn = parse_dnode(v.data[at:], v.bp.byteorder)
                size = (dn.dn_extra_slots + 1) * DNODE_MIN_SIZE
                assert encode_dnode(dn) == v.data[at : at + size]
                at += size
                slots += 1
    assert slots == expected  # zfs-fuse makes no large dnodes: every slot was one
    assert len(objsets) == 2 + len(COMPRESSIONS)  # the MOS, the root and each dataset


def _mzap(salt: int, size: int = 512) -> bytes:
    return struct.pack("<3Q", ZBT_MICRO, salt, 0).ljust(size, b"\0")


def _colliding_names(salt: int) -> tuple[bytes, bytes]:
    """Two names whose 28-bit micro ZAP hashes are equal under `salt`."""
    seen: dict[int, bytes] = {}
    i = 0
    while True:
        name = b"n%d" % i
        h = zap_hash(salt, name)
        if h in seen:
            return seen[h], name
        seen[h] = name
        i += 1


def test_mzap_set_updates_adds_and_numbers_collisions() -> None:
    """A present name gets its new value in place; an absent one the first free chunk and
    the lowest collision differentiator unused by names of the same hash; a full block
    refuses a new name (it would need a fat ZAP)."""
    salt = 0x21AAD4C7
    a, b = _colliding_names(salt)
    block = mzap_set(_mzap(salt), "<", b"compression", 3)
    block = mzap_set(block, "<", a, 7)
    block = mzap_set(block, "<", b, 8)
    block = mzap_set(block, "<", b"compression", 13)
    assert parse_mzap(block, "<") == [
        ZapEntry(b"compression", 8, (13).to_bytes(8, "big")),
        ZapEntry(a, 8, (7).to_bytes(8, "big")),
        ZapEntry(b, 8, (8).to_bytes(8, "big")),
    ]
    cds = [struct.unpack_from("<I", block, at + 8)[0] for at in (64, 128, 192)]
    assert cds == [0, 0, 1]
    full = _mzap(salt, 256)
    for i in range(256 // MZAP_ENT_LEN - 1):
        full = mzap_set(full, ">", b"p%d" % i, i)
    with pytest.raises(ValueError, match="full"):
        mzap_set(full, ">", b"one-more", 1)


@pytest.mark.parametrize("order", ["<", ">"])
def test_dsl_dir_diduse_space(order: str) -> None:
    """Totals move by the deltas (wrapping at 2^64 like the C counters); the breakdown
    entry of the kind moves by the used delta only when DD_FLAG_USED_BREAKDOWN is set."""
    words = [0] * 32
    words[5:8] = [1000, 500, 700]  # dd_used_bytes, dd_compressed_bytes, dd_uncompressed_bytes
    words[12] = 1  # dd_flags: DD_FLAG_USED_BREAKDOWN
    words[13:18] = [600, 0, 400, 0, 0]
    bonus = struct.pack(f"{order}32Q", *words)
    out = struct.unpack(
        f"{order}32Q", dsl_dir_diduse_space(bonus, order, DD_USED_CHILD, -100, 20, 30)
    )
    assert out[5:8] == (900, 520, 730) and out[13:18] == (600, 0, 300, 0, 0)
    assert out[:5] + out[8:13] + out[18:] == tuple(words[:5] + words[8:13] + words[18:])
    words[12] = 0
    bonus = struct.pack(f"{order}32Q", *words)
    out = struct.unpack(
        f"{order}32Q", dsl_dir_diduse_space(bonus, order, DD_USED_HEAD, -1001, 0, 0)
    )
    assert out[5] == 2**64 - 1 and out[13:18] == (600, 0, 400, 0, 0)


@pytest.mark.parametrize("order", ["<", ">"])
def test_space_map_phys_append(order: str) -> None:
    """smp_length grows by the bytes appended, smp_alloc moves (signed) by the net
    allocation; the rest of the header (a histogram) is kept."""
    bonus = struct.pack(f"{order}QQq", 27, 4096, 100) + bytes(range(256))
    out = space_map_phys_append(bonus, order, 64, -300)
    assert tuple(parse_space_map_phys(out, order)) == (27, 4160, -200)
    assert out[24:] == bytes(range(256))


@pytest.mark.parametrize("order", ["<", ">"])
def test_bplist_append(order: str) -> None:
    """The header counts the pointers and their bytes (the 16-byte header has no
    compressed sizes); entries are stored with fill and checksum zeroed, unless dedup."""
    bp = parse_blkptr(encode_blkptr(_DATA_BP, "<"), "<")
    header = struct.pack(f"{order}4Q", 2, 1000, 600, 900)
    out, array = bplist_append(header, order, [bp, bp._replace(dedup=True)], (2048, 1024, 4096))
    assert struct.unpack(f"{order}4Q", out) == (4, 3048, 1624, 4996)
    assert bplist_entries(out, order) == 4
    first, second = parse_blkptr(array[:128], order), parse_blkptr(array[128:], order)
    assert first == bp._replace(fill=0, cksum=(0, 0, 0, 0))
    assert second == bp._replace(fill=0, dedup=True)
    short = struct.pack(f"{order}2Q", 0, 0)
    assert bplist_append(short, order, [bp], (512, 512, 512))[0] == struct.pack(
        f"{order}2Q", 1, 512
    )


def test_mzap_remove_frees_the_chunk() -> None:
    """Removing zeroes the entry's chunk, which the next new name takes."""
    block = mzap_set(mzap_set(_mzap(7), "<", b"a", 1), "<", b"b", 2)
    assert parse_mzap(mzap_remove(block, b"a"), "<") == [ZapEntry(b"b", 8, (2).to_bytes(8, "big"))]
    assert mzap_remove(block, b"absent") == block
    assert (
        mzap_set(mzap_remove(block, b"a"), "<", b"c", 3)[64:128]
        == mzap_set(_mzap(7), "<", b"c", 3)[64:128]
    )
