"""ZAP parsing: micro ZAP entries, the fat ZAP header, pointer tables and leaf chunk chains."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dnode import blkptr

from uvfs import FSError
from uvfs_fs.zfs.blkptr import BlockPtr, parse_blkptr
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet, ObjsetPhys
from uvfs_fs.zfs.dnode import DnodePhys
from uvfs_fs.zfs.zap import (
    ZAP_LEAF_MAGIC,
    ZAP_MAGIC,
    ZBT_HEADER,
    ZBT_LEAF,
    ZBT_MICRO,
    Zap,
    ZapEntry,
    ZapLeaf,
    parse_mzap,
    parse_ptrtbl,
    parse_zap_header,
    zap_block_type,
    zap_hash,
)

BS = 1 << 14  # a 16 KiB leaf: 512 hash slots, 469 chunks


def mzap(bo: str, entries: list[tuple[bytes, int]], size: int = 512) -> bytes:
    out = bytearray(struct.pack(f"{bo}3Q40x", ZBT_MICRO, 0x1234, 0))
    for name, value in entries:
        out += struct.pack(f"{bo}QIH", value, 0, 0) + name.ljust(50, b"\0")
    return bytes(out.ljust(size, b"\0"))


class Leaf:
    """Builds a leaf block: entries with names and values in chains of array chunks."""

    def __init__(self, bo: str, size: int = BS, prefix: int = 0, prefix_len: int = 0) -> None:
        self.bo = bo
        self.block = bytearray(size)
        header = (ZBT_LEAF, 0, prefix, ZAP_LEAF_MAGIC, 0, 0, prefix_len, 0, 0)
        struct.pack_into(f"{bo}QQQIHHHHB", self.block, 0, *header)
        self.prefix_len = prefix_len
        self.hash_shift = size.bit_length() - 1 - 5
        self.block[48 : 48 + 2 * (size >> 5)] = b"\xff" * (2 * (size >> 5))  # empty chains
        self.first = 48 + 2 * (size >> 5)
        self.next_chunk = 0

    def _chunk(self) -> int:
        self.next_chunk += 1
        return self.next_chunk - 1

    def _array(self, data: bytes) -> int:
        pieces = [data[i : i + 21] for i in range(0, len(data), 21)] or [b""]
        chunks = [self._chunk() for _ in pieces]
        for i, (c, piece) in enumerate(zip(chunks, pieces, strict=True)):
            nxt = chunks[i + 1] if i + 1 < len(chunks) else 0xFFFF
            at = self.first + c * 24
            self.block[at] = 251
            self.block[at + 1 : at + 1 + len(piece)] = piece
            struct.pack_into(f"{self.bo}H", self.block, at + 22, nxt)
        return chunks[0]

    def add(self, name: bytes, intlen: int, ints: list[int], h: int | None = None) -> None:
        """Add an entry; with its hash `h`, also at the head of its hash chain."""
        entry = self._chunk()
        slot = ((h or 0) >> (64 - self.hash_shift - self.prefix_len)) & ((1 << self.hash_shift) - 1)
        (head,) = struct.unpack_from(f"{self.bo}H", self.block, 48 + 2 * slot)
        name_chunk = self._array(name + b"\0")
        value = b"".join(v.to_bytes(intlen, "big") for v in ints)
        value_chunk = self._array(value)
        struct.pack_into(
            f"{self.bo}BBHHHHHIQ",
            self.block,
            self.first + entry * 24,
            252,
            intlen,
            0xFFFF if h is None else head,
            name_chunk,
            len(name) + 1,
            value_chunk,
            len(ints),
            0,
            h or 0,
        )
        if h is not None:
            struct.pack_into(f"{self.bo}H", self.block, 48 + 2 * slot, entry)


@pytest.mark.parametrize("bo", ["<", ">"])
def test_micro_zap(bo: str) -> None:
    block = mzap(bo, [(b"ROOT", 34), (b"VERSION", 5), (b"x" * 49, 1 << 63)])
    assert zap_block_type(block, bo) == ZBT_MICRO
    got = {e.name: e.int() for e in parse_mzap(block, bo)}
    assert got == {b"ROOT": 34, b"VERSION": 5, b"x" * 49: 1 << 63}


def test_micro_zap_skips_empty_slots() -> None:
    block = bytearray(mzap("<", [(b"a", 1), (b"", 0), (b"b", 2)]))
    assert [e.name for e in parse_mzap(bytes(block), "<")] == [b"a", b"b"]


@pytest.mark.parametrize("bo", ["<", ">"])
def test_fat_header_and_embedded_ptrtbl(bo: str) -> None:
    block = bytearray(BS)
    words = [ZBT_HEADER, ZAP_MAGIC, 0, 0, 10, 0, 0, 5, 3, 1000, 0xABCDEF, 0, 1]
    struct.pack_into(f"{bo}13Q", block, 0, *words)
    for i in range(1024):
        struct.pack_into(f"{bo}Q", block, BS // 2 + 8 * i, 1 + (i >= 512) + (i >= 768))
    phys = parse_zap_header(bytes(block), bo)
    assert (phys.zt_numblks, phys.zt_shift, phys.zap_num_leafs) == (0, 10, 3)
    assert (phys.zap_num_entries, phys.zap_salt, phys.zap_flags) == (1000, 0xABCDEF, 1)
    table = parse_ptrtbl(bytes(block), bo, 1024, 1024)
    assert table[0] == 1 and table[600] == 2 and table[1023] == 3


def test_fat_header_bad_magic() -> None:
    with pytest.raises(FSError) as e:
        parse_zap_header(struct.pack("<2Q", ZBT_HEADER, 1) + bytes(BS), "<")
    assert e.value.errno == errno.EIO


def test_ptrtbl_past_block_is_eio() -> None:
    with pytest.raises(FSError):
        parse_ptrtbl(bytes(64), "<", 4, 8)


@pytest.mark.parametrize("bo", ["<", ">"])
def test_leaf_entries_all_int_sizes(bo: str) -> None:
    leaf = Leaf(bo)
    leaf.add(b"file.txt", 8, [(1 << 63) | 1234])
    leaf.add(b"n" * 200, 8, [7])  # a name spanning ten array chunks
    leaf.add(b"mountpoint", 1, list(b"/tank/home\0"))
    leaf.add(b"layout", 2, [5, 6, 4, 12, 13, 7, 11, 0, 1, 2, 3, 8, 16, 19, 17])
    leaf.add(b"u32", 4, [0xDEADBEEF, 1])
    got = {e.name: e for e in ZapLeaf(bytes(leaf.block), bo).entries()}
    assert got[b"file.txt"].int() == (1 << 63) | 1234
    assert got[b"n" * 200].int() == 7
    assert got[b"mountpoint"].string() == b"/tank/home"
    assert got[b"layout"].ints() == (5, 6, 4, 12, 13, 7, 11, 0, 1, 2, 3, 8, 16, 19, 17)
    assert got[b"u32"].ints() == (0xDEADBEEF, 1)


def test_looped_chain_is_eio() -> None:
    leaf = Leaf("<")
    leaf.add(b"a" * 30, 8, [1])  # name chunks 1, 2
    struct.pack_into("<H", leaf.block, leaf.first + 2 * 24 + 22, 1)  # chunk 2 -> chunk 1
    struct.pack_into("<H", leaf.block, leaf.first + 6, 60000)  # more than the leaf holds
    with pytest.raises(FSError) as e:
        ZapLeaf(bytes(leaf.block), "<").entries()
    assert e.value.errno == errno.EIO


def test_chain_out_of_range_is_eio() -> None:
    leaf = Leaf("<")
    leaf.add(b"a", 8, [1])
    struct.pack_into("<H", leaf.block, leaf.first + 4, 60000)
    with pytest.raises(FSError):
        ZapLeaf(bytes(leaf.block), "<").entries()


def test_bad_leaf_magic() -> None:
    with pytest.raises(FSError):
        ZapLeaf(bytes(BS), "<")


def test_zap_hash_keeps_top_bits() -> None:
    h = zap_hash(0x1234567890ABCDEF, b"hello")
    assert h & ((1 << 36) - 1) == 0
    assert zap_hash(0x1234567890ABCDEF, b"hello", 48) >> 36 == h >> 36
    assert zap_hash(1, b"") == 0  # salt 1 keeps only bit 0, below the kept bits


def test_entry_helpers() -> None:
    e = ZapEntry(b"x", 8, (5).to_bytes(8, "big"))
    assert e.int() == 5 and e.ints() == (5,)
    with pytest.raises(FSError):
        ZapEntry(b"x", 1, b"abc").int()


@settings(max_examples=200, deadline=None)
@given(data=st.data(), bo=st.sampled_from("<>"))
def test_hostile_leaf_parses_or_eio(data: st.DataObject, bo: str) -> None:
    leaf = Leaf(bo, size=1 << 12)
    leaf.add(b"seed", 8, [1])
    block = bytearray(leaf.block)
    for _ in range(data.draw(st.integers(0, 40))):
        at = data.draw(st.integers(48, len(block) - 1))
        block[at] = data.draw(st.integers(0, 255))
    try:
        zl = ZapLeaf(bytes(block), bo)
        zl.entries()
        zl.lookup(data.draw(st.integers(0, (1 << 64) - 1)), b"seed")
    except FSError as e:
        assert e.errno == errno.EIO


def test_leaf_hash_chain_lookup() -> None:
    leaf = Leaf("<")
    leaf.add(b"alpha", 8, [1])
    leaf.add(b"beta", 8, [2])
    h = 0xABC0000000000000
    # chain: hash slot of h -> entry 0 ("alpha", hash h) -> entry 3 ("beta", hash h)
    slot = h >> (64 - 9)
    struct.pack_into("<H", leaf.block, 48 + 2 * slot, 0)
    struct.pack_into("<H", leaf.block, leaf.first + 2, 3)
    struct.pack_into("<Q", leaf.block, leaf.first + 16, h)
    beta = leaf.first + 3 * 24
    struct.pack_into("<H", leaf.block, beta + 2, 0xFFFF)
    struct.pack_into("<Q", leaf.block, beta + 16, h)
    zl = ZapLeaf(bytes(leaf.block), "<")
    found = zl.lookup(h, b"beta")
    assert found is not None and found.int() == 2
    assert zl.lookup(h, b"gamma") is None
    assert zl.lookup(h ^ (1 << 63), b"beta") is None  # another slot: an empty chain
    struct.pack_into("<H", leaf.block, beta + 2, 0)  # beta -> alpha: a loop
    with pytest.raises(FSError):
        ZapLeaf(bytes(leaf.block), "<").lookup(h, b"gamma")


class _Blocks:
    """A pool stand-in holding blocks by DVA offset: a fat ZAP with an external pointer
    table needs over a thousand leaves (some 150,000 names), too slow to make with zfs-fuse.
    """

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}

    async def read_bp(self, bp: BlockPtr) -> bytes:
        return self.blocks[bp.dvas[0].offset]


async def test_fat_zap_with_external_pointer_table() -> None:
    salt = 0x5EED5EED
    names = [f"name-{i}".encode() for i in range(300)]
    hashes = {n: zap_hash(salt, n) for n in names}
    low, high = Leaf("<", prefix=0, prefix_len=1), Leaf("<", prefix=1, prefix_len=1)
    for n in names:
        (high if hashes[n] >> 63 else low).add(n, 8, [len(n)], hashes[n])
    header = bytearray(BS)
    # zt_blk 1, zt_numblks 1, zt_shift 11: 2048 pointers, more than the 1024 embedded slots
    words = [ZBT_HEADER, ZAP_MAGIC, 1, 1, 11, 0, 0, 4, 2, len(names), salt, 0, 0]
    struct.pack_into("<13Q", header, 0, *words)
    table = struct.pack("<2048Q", *([2] * 1024 + [3] * 1024))
    source = _Blocks()
    contents = [bytes(header), table, bytes(low.block), bytes(high.block)]
    indirect = b""
    for blkid, data in enumerate(contents):
        source.blocks[(blkid + 1) << 20] = data
        indirect += blkptr("<", offset=(blkid + 1) << 20, lsize=BS)
    source.blocks[9 << 20] = indirect.ljust(BS, b"\0")
    top = parse_blkptr(blkptr("<", offset=9 << 20, lsize=BS, level=1), "<")
    dn = DnodePhys(20, 14, 2, 1, 0, 7, 2, 0, BS // 512, 0, 0, 3, 0, (top,), b"", None, "<")
    cache = BlockCache(source)
    objset = ObjectSet(cache, ObjsetPhys(dn, 2, 0))
    zap = await Zap.open(objset, dn)
    assert zap.phys is not None and zap.phys.zt_numblks == 1
    assert sorted(e.name for e in await zap.entries()) == sorted(names)
    for n in names:
        assert (await zap.lookup(n)).int() == len(n)
    with pytest.raises(FSError) as e:
        await zap.lookup(b"name-300")
    assert e.value.errno == errno.ENOENT


@settings(max_examples=100, deadline=None)
@given(
    names=st.sets(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b), max_size=60),
    salt=st.integers(1, (1 << 64) - 1),
    bo=st.sampled_from("<>"),
)
def test_leaf_lookup_agrees_with_listing(names: set[bytes], salt: int, bo: str) -> None:
    leaf = Leaf(bo)
    for i, n in enumerate(sorted(names)):
        leaf.add(n, 8, [i], zap_hash(salt, n))
    zl = ZapLeaf(bytes(leaf.block), bo)
    listed = {e.name: e.int() for e in zl.entries()}
    assert set(listed) == names
    for n in names:
        found = zl.lookup(zap_hash(salt, n), n)
        assert found is not None and found.int() == listed[n]
    absent = b"\xff" * 41
    assert zl.lookup(zap_hash(salt, absent), absent) is None
