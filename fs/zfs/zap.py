"""ZAP objects: ZFS's name -> integer-array maps (zap_impl.h, zap_leaf.h), micro and fat.

Directories, the object directory, DSL child and snapshot lists, properties and the SA
registry are all ZAPs. The first 8 bytes of block 0 say which kind:

* **micro ZAP** (ZBT_MICRO): one block, a 64-byte header (mz_block_type, mz_salt,
  mz_normflags, 5 pad words) then 64-byte entries: mze_value u64 @0, mze_cd u32 @8,
  mze_pad u16 @12, mze_name[50] @14 (NUL-padded). Values are single u64s.
* **fat ZAP** (ZBT_HEADER): block 0 is `zap_phys_t`; names hash (CRC-64 of the name, salted)
  into a pointer table of 2^zt_shift leaf block ids, embedded in the second half of block 0
  or, when large, in blocks zt_blk .. zt_blk + zt_numblks. The top zt_shift bits of a hash
  pick the leaf. A leaf (ZBT_LEAF) is a 48-byte header, a 2^(bs-5)-slot u16 hash table, then
  24-byte chunks: entries (le_*) whose name and value live in chains of array chunks, 21
  bytes each, integers stored big-endian whatever the block's byte order.

Parsing is sans-I/O (bytes in, `ZapEntry` out: `parse_mzap`, `ZapLeaf`), and so are the
writer's encoders: `mzap_create`, `mzap_set` and `mzap_remove` (a micro ZAP block with
one entry set, added or removed), `fzap_leaf_add` and `fzap_leaf_remove` (a fat ZAP leaf
with one entry added or removed: chunks taken from and given back to the leaf's free list,
the entry linked into or out of its hash chain, in cd order when the leaf keeps them so,
zap_leaf.c) and `fzap_count_entries`; `Zap` is the thin async layer on an object, which
a writer may open over its own pending blocks. Every chain walk is bounded by the leaf's
chunk count, so a looped chain is an EIO, never a hang.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from construct import Bytes, Int8ul, Int16ub, Int16ul, Int32ub, Int32ul, Int64ub, Int64ul, Struct

from uvfs import LRU, FSError

from .dmu import ObjectSet, read_block
from .dnode import DnodePhys

ZBT_LEAF = (1 << 63) + 0
ZBT_HEADER = (1 << 63) + 1
ZBT_MICRO = (1 << 63) + 3
ZAP_MAGIC = 0x2F52AB2AB
ZAP_LEAF_MAGIC = 0x2AB1EAF
MZAP_ENT_LEN = 64
MZAP_NAME_LEN = 50
ZAP_LEAF_CHUNKSIZE = 24
ZAP_LEAF_ARRAY_BYTES = 21
ZAP_LEAF_HDR_SIZE = 48
ZAP_CHUNK_ENTRY = 252
ZAP_CHUNK_ARRAY = 251
ZAP_CHUNK_FREE = 253
ZLF_ENTRIES_CDSORTED = 1 << 0
CHAIN_END = 0xFFFF
ZAP_FLAG_HASH64 = 1 << 0
ZAP_FLAG_UINT64_KEY = 1 << 1
ZFS_CRC64_POLY = 0xC96C5795D7870F42
MAX_ZAP_BLOCK_SHIFT = 20  # 1 MiB: fat ZAPs use 16 KiB blocks, micro ZAPs at most 1 MiB
LEAF_CACHE_BYTES = 128 * 1024  # parsed leaves kept per open fat ZAP (8 of 16 KiB)


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        ct = i
        for _ in range(8):
            ct = (ct >> 1) ^ (ZFS_CRC64_POLY if ct & 1 else 0)
        table.append(ct)
    return tuple(table)


_CRC64 = _crc64_table()


def zap_hash(salt: int, name: bytes, hashbits: int = 28) -> int:
    """The 64-bit hash of a string key (its bytes without the NUL), top `hashbits` kept."""
    h = salt
    for c in name:
        h = (h >> 8) ^ _CRC64[(h ^ c) & 0xFF]
    return h & ~((1 << (64 - hashbits)) - 1) & 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class ZapEntry:
    """One name and its value: `value` holds the integers big-endian, `intlen` bytes each."""

    name: bytes  # without the terminating NUL
    intlen: int
    value: bytes

    def ints(self) -> tuple[int, ...]:
        """The value as integers."""
        n = self.intlen
        return tuple(
            int.from_bytes(self.value[i : i + n], "big") for i in range(0, len(self.value), n)
        )

    def int(self) -> int:
        """The first integer of the value (the whole value, for the common u64 entries)."""
        if self.intlen != 8 or len(self.value) < 8:
            raise FSError(errno.EIO, f"zap entry {self.name!r}: not a u64")
        return int.from_bytes(self.value[:8], "big")

    def string(self) -> bytes:
        """The value as a string (1-byte integers up to the NUL)."""
        return self.value.split(b"\0", 1)[0]


def _header(u16: type, u32: type, u64: type) -> dict[str, Struct]:
    return {
        "zap": Struct(
            "zap_block_type" / u64,  # 0
            "zap_magic" / u64,  # 8
            "zt_blk" / u64,  # 16
            "zt_numblks" / u64,  # 24
            "zt_shift" / u64,  # 32
            "zt_nextblk" / u64,  # 40
            "zt_blks_copied" / u64,  # 48
            "zap_freeblk" / u64,  # 56
            "zap_num_leafs" / u64,  # 64
            "zap_num_entries" / u64,  # 72
            "zap_salt" / u64,  # 80
            "zap_normflags" / u64,  # 88
            "zap_flags" / u64,  # 96
        ).compile(),
        "leaf": Struct(
            "lh_block_type" / u64,  # 0
            "lh_pad1" / u64,  # 8
            "lh_prefix" / u64,  # 16
            "lh_magic" / u32,  # 24
            "lh_nfree" / u16,  # 28
            "lh_nentries" / u16,  # 30
            "lh_prefix_len" / u16,  # 32
            "lh_freelist" / u16,  # 34
            "lh_flags" / Int8ul,  # 36
            "lh_pad2" / Bytes(11),  # 37
        ).compile(),
    }


_STRUCTS = {"<": _header(Int16ul, Int32ul, Int64ul), ">": _header(Int16ub, Int32ub, Int64ub)}


@dataclass(frozen=True, slots=True)
class ZapPhys:
    """The fat ZAP header (zap_phys_t) fields a reader needs."""

    zt_blk: int
    zt_numblks: int
    zt_shift: int
    zap_freeblk: int
    zap_num_leafs: int
    zap_num_entries: int
    zap_salt: int
    zap_normflags: int
    zap_flags: int


def zap_block_type(block: bytes, byteorder: str) -> int:
    """The first word of a ZAP block: ZBT_MICRO, ZBT_HEADER or ZBT_LEAF."""
    return int.from_bytes(block[:8], "little" if byteorder == "<" else "big")


def parse_mzap(block: bytes, byteorder: str) -> list[ZapEntry]:
    """All entries of a micro ZAP block."""
    order = "little" if byteorder == "<" else "big"
    out = []
    for at in range(MZAP_ENT_LEN, len(block) - MZAP_ENT_LEN + 1, MZAP_ENT_LEN):
        name = block[at + 14 : at + 14 + MZAP_NAME_LEN].split(b"\0", 1)[0]
        if name:
            value = int.from_bytes(block[at : at + 8], order).to_bytes(8, "big")
            out.append(ZapEntry(bytes(name), 8, value))
    return out


def mzap_create(byteorder: str, salt: int, normflags: int, size: int = 512) -> bytes:
    """An empty micro ZAP block of `size` bytes (mzap_create_impl): the mzap_phys_t
    header (mz_block_type, mz_salt, mz_normflags) and free chunks."""
    return struct.pack(f"{byteorder}3Q", ZBT_MICRO, salt, normflags).ljust(size, b"\0")


def mzap_set(block: bytes, byteorder: str, name: bytes, value: int) -> bytes:
    """Micro ZAP `block` with `name` set to `value` (mzap_addent when absent).

    A new entry takes the first free chunk and, as its mze_cd, the lowest collision
    differentiator no other entry of the same hash uses (the hash is the block's salted
    one, 28 bits as every micro ZAP uses).

    Raises:
        ValueError: the name does not fit an entry, or the block has no free chunk (the
            ZAP would have to become a fat one).
    """
    if not 0 < len(name) < MZAP_NAME_LEN or b"\0" in name:
        raise ValueError(f"micro ZAP name {name!r} does not fit an entry")
    out = bytearray(block)
    u64, u32 = byteorder + "Q", byteorder + "I"
    (salt,) = struct.unpack_from(u64, block, 8)
    free, cds = None, set()
    h = zap_hash(salt, name)
    for at in range(MZAP_ENT_LEN, len(block) - MZAP_ENT_LEN + 1, MZAP_ENT_LEN):
        entry = block[at + 14 : at + 14 + MZAP_NAME_LEN].split(b"\0", 1)[0]
        if entry == name:
            struct.pack_into(u64, out, at, value)
            return bytes(out)
        if not entry:
            free = at if free is None else free
        elif zap_hash(salt, entry) == h:
            cds.add(struct.unpack_from(u32, block, at + 8)[0])
    if free is None:
        raise ValueError(f"micro ZAP is full: {name!r} needs a fat ZAP")
    cd = min(set(range(len(cds) + 1)) - cds)
    struct.pack_into(u64 + "I2x", out, free, value, cd)
    out[free + 14 : free + 14 + MZAP_NAME_LEN] = name.ljust(MZAP_NAME_LEN, b"\0")
    return bytes(out)


def mzap_remove(block: bytes, name: bytes) -> bytes:
    """Micro ZAP `block` without the entry `name` (its chunk zeroed); unchanged if absent."""
    out = bytearray(block)
    for at in range(MZAP_ENT_LEN, len(block) - MZAP_ENT_LEN + 1, MZAP_ENT_LEN):
        if block[at + 14 : at + 14 + MZAP_NAME_LEN].split(b"\0", 1)[0] == name:
            out[at : at + MZAP_ENT_LEN] = bytes(MZAP_ENT_LEN)
    return bytes(out)


def parse_zap_header(block: bytes, byteorder: str) -> ZapPhys:
    """Decode and check a fat ZAP's block 0."""
    z = _STRUCTS[byteorder]["zap"].parse(block)
    if z.zap_block_type != ZBT_HEADER or z.zap_magic != ZAP_MAGIC:
        raise FSError(errno.EIO, "fat zap: bad header magic")
    return ZapPhys(
        z.zt_blk,
        z.zt_numblks,
        z.zt_shift,
        z.zap_freeblk,
        z.zap_num_leafs,
        z.zap_num_entries,
        z.zap_salt,
        z.zap_normflags,
        z.zap_flags,
    )


def parse_ptrtbl(block: bytes, byteorder: str, first: int, count: int) -> list[int]:
    """`count` u64 leaf block ids starting at word `first` of `block`."""
    order = "little" if byteorder == "<" else "big"
    if (first + count) * 8 > len(block):
        raise FSError(errno.EIO, "fat zap: pointer table runs past its block")
    return [int.from_bytes(block[i * 8 : i * 8 + 8], order) for i in range(first, first + count)]


# zap_leaf_chunk_t as an entry (hot: unpacked per entry, so struct rather than construct):
# 0 le_type u8, 1 le_value_intlen u8, 2 le_next u16, 4 le_name_chunk u16,
# 6 le_name_numints u16, 8 le_value_chunk u16, 10 le_value_numints u16, 12 le_cd u32,
# 16 le_hash u64
_ENTRY = {bo: struct.Struct(f"{bo}BBHHHHHIQ") for bo in "<>"}


class ZapLeaf:
    """One fat ZAP leaf block, checked, for listing or hash-chain lookups.

    Args:
        block: the leaf block (its size is the ZAP's block size).
        byteorder: the block's byte order.
        key_intlen: 8 for ZAP_FLAG_UINT64_KEY ZAPs, else 1 (string names).
    """

    def __init__(self, block: bytes, byteorder: str, key_intlen: int = 1) -> None:
        hdr = _STRUCTS[byteorder]["leaf"].parse(block)
        if hdr.lh_block_type != ZBT_LEAF or hdr.lh_magic != ZAP_LEAF_MAGIC:
            raise FSError(errno.EIO, "zap leaf: bad magic")
        self.block = block
        self.byteorder = byteorder
        self.order = "little" if byteorder == "<" else "big"
        self.key_intlen = key_intlen
        self.hash_shift = (len(block).bit_length() - 1) - 5  # ZAP_LEAF_HASH_SHIFT
        self.prefix_len = hdr.lh_prefix_len
        if self.hash_shift + self.prefix_len > 64 or self.hash_shift < 4:
            raise FSError(errno.EIO, f"zap leaf: prefix length {self.prefix_len}")
        hash_entries = 1 << self.hash_shift
        self.first = ZAP_LEAF_HDR_SIZE + 2 * hash_entries
        self.nchunks = (len(block) - 2 * hash_entries) // ZAP_LEAF_CHUNKSIZE - 2

    def _entry(self, chunk: int) -> tuple[int, ...]:
        if chunk >= self.nchunks:
            raise FSError(errno.EIO, "zap leaf: entry chunk out of range")
        e = _ENTRY[self.byteorder].unpack_from(self.block, self.first + chunk * 24)
        if e[0] != ZAP_CHUNK_ENTRY:
            raise FSError(errno.EIO, "zap leaf: hash chain reaches a non-entry chunk")
        return e

    def _array(self, chunk: int, length: int) -> bytes:
        """`length` bytes from the chain of array chunks starting at `chunk`."""
        out = bytearray()
        block, first = self.block, self.first
        for _ in range(self.nchunks):  # a chain longer than the leaf has chunks is a loop
            if len(out) >= length:
                break
            if chunk >= self.nchunks:
                raise FSError(errno.EIO, "zap leaf: array chunk out of range")
            at = first + chunk * ZAP_LEAF_CHUNKSIZE
            if block[at] != ZAP_CHUNK_ARRAY:
                raise FSError(errno.EIO, "zap leaf: array chain reaches a non-array chunk")
            out += block[at + 1 : at + 1 + ZAP_LEAF_ARRAY_BYTES]
            chunk = int.from_bytes(block[at + 22 : at + 24], self.order)
        if len(out) < length:
            raise FSError(errno.EIO, "zap leaf: array chain too short")
        return bytes(out[:length])

    def _decode(self, e: tuple[int, ...]) -> ZapEntry:
        _, intlen, _, name_chunk, name_numints, value_chunk, value_numints, _, _ = e
        name = self._array(name_chunk, name_numints * self.key_intlen)
        if self.key_intlen == 1:
            name = name.split(b"\0", 1)[0]
        if intlen not in (1, 2, 4, 8):
            raise FSError(errno.EIO, f"zap leaf: value integer length {intlen}")
        return ZapEntry(name, intlen, self._array(value_chunk, value_numints * intlen))

    def entries(self) -> list[ZapEntry]:
        """Every entry of the leaf, in chunk order."""
        block, first = self.block, self.first
        return [
            self._decode(self._entry(i))
            for i in range(self.nchunks)
            if block[first + i * ZAP_LEAF_CHUNKSIZE] == ZAP_CHUNK_ENTRY
        ]

    def lookup(self, h: int, name: bytes) -> ZapEntry | None:
        """The entry called `name` (a string key) whose hash is `h`, following its chain."""
        idx = (h >> (64 - self.hash_shift - self.prefix_len)) & ((1 << self.hash_shift) - 1)
        at = ZAP_LEAF_HDR_SIZE + 2 * idx
        chunk = int.from_bytes(self.block[at : at + 2], self.order)
        for _ in range(self.nchunks):  # bounded: a longer chain is a loop
            if chunk == CHAIN_END:
                return None
            e = self._entry(chunk)
            if e[8] == h and e[4] == len(name) + 1 and self._array(e[3], e[4]) == name + b"\0":
                return self._decode(e)
            chunk = e[2]
        raise FSError(errno.EIO, "zap leaf: hash chain loops")


class _LeafEdit:
    """A fat ZAP leaf being changed in place (zap_leaf.c): its chunks, free list, hash
    chains and counts."""

    def __init__(self, block: bytes, byteorder: str) -> None:
        self.leaf = ZapLeaf(block, byteorder)
        self.out = bytearray(block)
        self.u16 = struct.Struct(byteorder + "H")
        self.order = byteorder

    def _word16(self, at: int) -> int:
        return self.u16.unpack_from(self.out, at)[0]

    def _set16(self, at: int, value: int) -> None:
        self.u16.pack_into(self.out, at, value)

    def _chunk_at(self, chunk: int) -> int:
        return self.leaf.first + chunk * ZAP_LEAF_CHUNKSIZE

    def bucket_at(self, h: int) -> int:
        """Where the head of `h`'s hash chain is kept (LEAF_HASH_ENTPTR)."""
        leaf = self.leaf
        idx = (h >> (64 - leaf.hash_shift - leaf.prefix_len)) & ((1 << leaf.hash_shift) - 1)
        return ZAP_LEAF_HDR_SIZE + 2 * idx

    def chain(self, h: int) -> list[tuple[int, int]]:
        """(the offset of the pointer to it, chunk) of each entry of `h`'s chain."""
        out, at = [], self.bucket_at(h)
        for _ in range(self.leaf.nchunks):
            chunk = self._word16(at)
            if chunk == CHAIN_END:
                return out
            out.append((at, chunk))
            at = self._chunk_at(chunk) + 2  # le_next
        raise FSError(errno.EIO, "zap leaf: hash chain loops")

    def entry(self, chunk: int) -> tuple[int, ...]:
        return _ENTRY[self.order].unpack_from(self.out, self._chunk_at(chunk))

    def _alloc(self) -> int:
        chunk = self._word16(34)  # lh_freelist
        self._set16(34, self._word16(self._chunk_at(chunk) + 22))
        self._set16(28, self._word16(28) - 1)  # lh_nfree
        return chunk

    def _free(self, chunk: int) -> None:
        at = self._chunk_at(chunk)
        self.out[at : at + ZAP_LEAF_CHUNKSIZE] = bytes([ZAP_CHUNK_FREE]) + bytes(23)
        self._set16(at + 22, self._word16(34))
        self._set16(34, chunk)
        self._set16(28, self._word16(28) + 1)

    def _array(self, data: bytes) -> int:
        """A chain of array chunks holding `data` (zap_leaf_array_create); its head."""
        chunks = [self._alloc() for _ in range(-(-len(data) // ZAP_LEAF_ARRAY_BYTES))]
        for i, chunk in enumerate(chunks):
            at = self._chunk_at(chunk)
            piece = data[i * ZAP_LEAF_ARRAY_BYTES : (i + 1) * ZAP_LEAF_ARRAY_BYTES]
            self.out[at] = ZAP_CHUNK_ARRAY
            self.out[at + 1 : at + 1 + len(piece)] = piece
            self._set16(at + 22, chunks[i + 1] if i + 1 < len(chunks) else CHAIN_END)
        return chunks[0]

    def _free_array(self, chunk: int) -> None:
        for _ in range(self.leaf.nchunks):
            if chunk == CHAIN_END:
                return
            following = self._word16(self._chunk_at(chunk) + 22)
            self._free(chunk)
            chunk = following
        raise FSError(errno.EIO, "zap leaf: array chain loops")

    def add(self, h: int, name: bytes, value: int, cd: int | None = None) -> None:
        """zap_entry_create of a string key with one u64 value, with collision
        differentiator `cd` (None: the lowest free one)."""
        key = name + b"\0"
        need = 1 + -(-len(key) // ZAP_LEAF_ARRAY_BYTES) + 1
        if cd is None:
            cds = {self.entry(c)[7] for _, c in self.chain(h) if self.entry(c)[8] == h}
            cd = min(set(range(len(cds) + 1)) - cds)
        if self._word16(28) < need:
            raise ValueError("the leaf is full: it would have to split")
        chunk = self._alloc()
        name_chunk = self._array(key)
        value_chunk = self._array(value.to_bytes(8, "big"))
        at = self._chunk_at(chunk)
        _ENTRY[self.order].pack_into(self.out, at, ZAP_CHUNK_ENTRY, 8, CHAIN_END, name_chunk,
                                     len(key), value_chunk, 1, cd, h)  # fmt: skip
        link = self.bucket_at(h)  # zap_leaf_rehash_entry: by cd when the leaf says so
        if self.out[36] & ZLF_ENTRIES_CDSORTED:
            for _, other in self.chain(h):
                if self.entry(other)[7] > cd:
                    break
                link = self._chunk_at(other) + 2
        self._set16(at + 2, self._word16(link))
        self._set16(link, chunk)
        self._set16(30, self._word16(30) + 1)  # lh_nentries

    def link(self, chunk: int) -> None:
        """Put entry `chunk` at the head of its hash chain (zap_leaf_rehash_entry for
        unsorted chains)."""
        head = self.bucket_at(self.entry(chunk)[8])
        self._set16(self._chunk_at(chunk) + 2, self._word16(head))
        self._set16(head, chunk)

    def _move_array(self, chunk: int, other: _LeafEdit) -> int:
        """zap_leaf_transfer_array: the array chain at `chunk` copied into `other`'s
        chunks and freed here; its head there."""
        moved: list[int] = []
        for _ in range(self.leaf.nchunks):
            if chunk == CHAIN_END:
                break
            at, dest = self._chunk_at(chunk), other._alloc()
            other.out[other._chunk_at(dest) : other._chunk_at(dest) + ZAP_LEAF_CHUNKSIZE] = (
                self.out[at : at + ZAP_LEAF_CHUNKSIZE]
            )
            if moved:
                other._set16(other._chunk_at(moved[-1]) + 22, dest)
            moved.append(dest)
            following = self._word16(at + 22)
            self._free(chunk)
            chunk = following
        other._set16(other._chunk_at(moved[-1]) + 22, CHAIN_END)
        return moved[0]

    def transfer(self, chunk: int, other: _LeafEdit) -> None:
        """zap_leaf_transfer_entry: entry `chunk` moved into leaf `other`."""
        e = list(self.entry(chunk))
        dest = other._alloc()
        e[3] = self._move_array(e[3], other)
        e[5] = self._move_array(e[5], other)
        _ENTRY[self.order].pack_into(other.out, other._chunk_at(dest), *e)
        other.link(dest)
        self._free(chunk)
        self._set16(30, self._word16(30) - 1)
        other._set16(30, other._word16(30) + 1)

    def remove(self, h: int, name: bytes) -> bool:
        """zap_entry_remove of the string key `name`; whether it was there."""
        key = name + b"\0"
        for ptr, chunk in self.chain(h):
            e = self.entry(chunk)
            if e[8] == h and e[4] == len(name) + 1 and self.leaf._array(e[3], e[4]) == key:
                self._free_array(e[3])
                self._free_array(e[5])
                self._set16(ptr, e[2])
                self._free(chunk)
                self._set16(30, self._word16(30) - 1)
                return True
        return False


def fzap_leaf_add(block: bytes, byteorder: str, h: int, name: bytes, value: int) -> bytes:
    """Fat ZAP leaf `block` with the entry `name` (hash `h`) -> u64 `value` added.

    Raises:
        ValueError: the leaf has too few free chunks (it would have to split).
    """
    edit = _LeafEdit(block, byteorder)
    edit.add(h, name, value)
    return bytes(edit.out)


def fzap_leaf_remove(block: bytes, byteorder: str, h: int, name: bytes) -> bytes | None:
    """Fat ZAP leaf `block` without the entry `name` (hash `h`); None when absent."""
    edit = _LeafEdit(block, byteorder)
    return bytes(edit.out) if edit.remove(h, name) else None


FZAP_BLOCK_SHIFT = 14  # fzap_default_block_shift: 16 KiB blocks


def _leaf_init(shift: int, byteorder: str) -> bytes:
    """An empty leaf block of 2^shift bytes (zap_leaf_init, unsorted chains): every chunk
    free and on the free list in order."""
    hash_entries = 1 << (shift - 5)
    nchunks = ((1 << shift) - 2 * hash_entries) // ZAP_LEAF_CHUNKSIZE - 2
    head = struct.pack(f"{byteorder}3QIHHHHB11x", ZBT_LEAF, 0, 0, ZAP_LEAF_MAGIC, nchunks, 0, 0,
                       0, 0)  # fmt: skip
    table = b"\xff" * (2 * hash_entries)
    chunk = struct.Struct(f"{byteorder}B21xH")
    chunks = b"".join(chunk.pack(ZAP_CHUNK_FREE, i + 1 if i + 1 < nchunks else CHAIN_END)
                      for i in range(nchunks))  # fmt: skip
    return (head + table + chunks).ljust(1 << shift, b"\0")


def fzap_upgrade(block: bytes, byteorder: str) -> tuple[bytes, bytes]:
    """The fat ZAP a micro ZAP `block` becomes (mzap_upgrade, fzap_upgrade): block 0 a
    header with the salt and normalization kept and the pointer table embedded in its
    second half, every slot naming leaf 1, which holds the entries in the micro ZAP's
    chunk order with their cds.

    Raises:
        ValueError: the entries do not fit one leaf (it would have to split).
    """
    salt, normflags = struct.unpack_from(byteorder + "2Q", block, 8)
    edit = _LeafEdit(_leaf_init(FZAP_BLOCK_SHIFT, byteorder), byteorder)
    count = 0
    for at in range(MZAP_ENT_LEN, len(block) - MZAP_ENT_LEN + 1, MZAP_ENT_LEN):
        name = block[at + 14 : at + 14 + MZAP_NAME_LEN].split(b"\0", 1)[0]
        if name:
            value, cd = struct.unpack_from(byteorder + "QI", block, at)
            edit.add(zap_hash(salt, name), bytes(name), value, cd)
            count += 1
    shift = FZAP_BLOCK_SHIFT - 3 - 1  # ZAP_EMBEDDED_PTRTBL_SHIFT
    head = struct.pack(f"{byteorder}13Q", ZBT_HEADER, ZAP_MAGIC, 0, 0, shift, 0, 0, 2, 1, count,
                       salt, normflags, 0)  # fmt: skip
    half = 1 << (FZAP_BLOCK_SHIFT - 1)
    block0 = head.ljust(half, b"\0") + struct.pack(f"{byteorder}{1 << shift}Q", *[1] * (1 << shift))
    return block0, bytes(edit.out)


def fzap_split_leaf(
    block0: bytes, leaf: bytes, blkid: int, byteorder: str
) -> tuple[bytes, bytes, int, bytes]:
    """zap_expand_leaf for a fat ZAP whose pointer table is embedded in `block0`: leaf
    `leaf` (block `blkid`) keeps the entries whose hash has a 0 after its prefix, a new
    leaf at block zap_freeblk takes those with a 1, and the pointer table's slots of the
    new prefix name it. Returns the new block 0, the old leaf, the new leaf's block id and
    the new leaf.

    Raises:
        ValueError: the pointer table would have to grow (or is not embedded).
    """
    hdr = parse_zap_header(block0, byteorder)
    old = _LeafEdit(leaf, byteorder)
    prefix_len = old.leaf.prefix_len
    if hdr.zt_numblks or prefix_len >= hdr.zt_shift:
        raise ValueError("the pointer table would have to grow")
    u64 = struct.Struct(byteorder + "Q")
    (prefix,) = u64.unpack_from(old.out, 16)
    new = _LeafEdit(_leaf_init(len(leaf).bit_length() - 1, byteorder), byteorder)
    for edit, bits in ((old, prefix << 1), (new, prefix << 1 | 1)):
        u64.pack_into(edit.out, 16, bits)  # lh_prefix
        edit._set16(32, prefix_len + 1)  # lh_prefix_len
        edit.leaf.prefix_len = prefix_len + 1
    table = old.leaf.first - ZAP_LEAF_HDR_SIZE
    old.out[ZAP_LEAF_HDR_SIZE : old.leaf.first] = b"\xff" * table  # chains rebuilt below
    bit = 63 - prefix_len
    for chunk in range(old.leaf.nchunks):
        if old.out[old._chunk_at(chunk)] != ZAP_CHUNK_ENTRY:
            continue
        if old.entry(chunk)[8] >> bit & 1:
            old.transfer(chunk, new)
        else:
            old.link(chunk)
    newblk = hdr.zap_freeblk
    out0 = bytearray(block0)
    u64.pack_into(out0, 56, newblk + 1)  # zap_freeblk
    u64.pack_into(out0, 64, hdr.zap_num_leafs + 1)
    span = hdr.zt_shift - prefix_len - 1
    first = (prefix << 1 | 1) << span
    for idx in range(first, first + (1 << span)):
        u64.pack_into(out0, ((1 << hdr.zt_shift) + idx) * 8, newblk)
    return bytes(out0), bytes(old.out), newblk, bytes(new.out)


def fzap_count_entries(block0: bytes, byteorder: str, delta: int) -> bytes:
    """Fat ZAP header `block0` with zap_num_entries moved by `delta`."""
    out = bytearray(block0)
    (count,) = struct.unpack_from(byteorder + "Q", out, 72)
    struct.pack_into(byteorder + "Q", out, 72, count + delta)
    return bytes(out)


class Zap:
    """One ZAP object opened for lookups and listing.

    A micro ZAP is parsed once into a dict; a fat ZAP keeps its block 0 (header and
    embedded pointer table) and its few most recently used leaves, and reads other
    pointer-table and leaf blocks as a request needs them (through the mount's cache).
    """

    def __init__(
        self, objset: ObjectSet, dn: DnodePhys, pending: Mapping[int, bytes | None] | None = None
    ) -> None:
        self.objset = objset
        self.dn = dn
        self.pending = pending or {}  # blocks a writer changed and has not synced, by blkid
        self.micro: dict[bytes, ZapEntry] | None = None
        self.phys: ZapPhys | None = None
        self.byteorder = "<"
        self.block0 = b""
        self._leaves: LRU[int, ZapLeaf] = LRU(max(1, LEAF_CACHE_BYTES // dn.datablksz))

    @classmethod
    async def open(
        cls,
        objset: ObjectSet,
        obj: int | DnodePhys,
        pending: Mapping[int, bytes | None] | None = None,
    ) -> Zap:
        """The ZAP in object `obj` (or the already-read dnode), its blocks in `pending`
        (a writer's, not synced yet) taking the place of those on disk."""
        dn = obj if isinstance(obj, DnodePhys) else await objset.dnode(obj)
        if dn.datablksz > 1 << MAX_ZAP_BLOCK_SHIFT:
            raise FSError(errno.EIO, f"zap: {dn.datablksz}-byte blocks")
        zap = cls(objset, dn, pending)
        block = await zap.block(0)
        if block is None:
            raise FSError(errno.EIO, "zap: block 0 is a hole")
        data, zap.byteorder = block
        zap.block0 = data
        kind = zap_block_type(data, zap.byteorder)
        if kind == ZBT_MICRO:
            zap.micro = {e.name: e for e in parse_mzap(data, zap.byteorder)}
        elif kind == ZBT_HEADER:
            zap.phys = parse_zap_header(data, zap.byteorder)
            zap._check_ptrtbl()
        else:
            raise FSError(errno.EIO, f"zap: unknown block type {kind:#x}")
        return zap

    async def block(self, blkid: int) -> tuple[bytes, str] | None:
        """Block `blkid` of the ZAP and its byte order; None for a hole."""
        data = self.pending.get(blkid)
        if data is not None:
            return data, self.dn.byteorder
        return await read_block(self.objset.cache, self.dn, blkid)

    @property
    def _shift(self) -> int:
        """log2 of the block size (FZAP_BLOCK_SHIFT)."""
        return self.dn.datablksz.bit_length() - 1

    def _check_ptrtbl(self) -> None:
        p = self.phys
        assert p is not None
        shift = self._shift
        if self.dn.datablksz != 1 << shift or not 9 <= shift <= MAX_ZAP_BLOCK_SHIFT:
            raise FSError(errno.EIO, "fat zap: block size not a power of two")
        if p.zt_numblks == 0:
            ok = p.zt_shift == shift - 4
        else:
            ok = (
                p.zt_shift <= 48
                and (1 << p.zt_shift) <= p.zt_numblks << (shift - 3)
                and p.zt_blk + p.zt_numblks <= self.dn.dn_maxblkid + 1
            )
        if not ok:
            raise FSError(errno.EIO, "fat zap: pointer table size does not fit its blocks")

    async def _ptrtbl(self, first: int, count: int) -> list[int]:
        """Entries first .. first + count - 1 of the pointer table (within one block)."""
        p = self.phys
        assert p is not None
        if p.zt_numblks == 0:
            return parse_ptrtbl(self.block0, self.byteorder, (1 << p.zt_shift) + first, count)
        per_block = 1 << (self._shift - 3)
        blk, at = divmod(first, per_block)
        block = await self.block(p.zt_blk + blk)
        if block is None:
            raise FSError(errno.EIO, "fat zap: pointer table block is a hole")
        return parse_ptrtbl(block[0], block[1], at, count)

    async def _leaf(self, blkid: int) -> ZapLeaf:
        leaf = self._leaves.get(blkid)
        if leaf is None:
            leaf = await self._read_leaf(blkid)
            self._leaves.put(blkid, leaf)
        return leaf

    async def _read_leaf(self, blkid: int) -> ZapLeaf:
        if blkid == 0 or blkid > self.dn.dn_maxblkid:
            raise FSError(errno.EIO, f"fat zap: leaf block {blkid} out of range")
        block = await self.block(blkid)
        if block is None:
            raise FSError(errno.EIO, f"fat zap: leaf block {blkid} is a hole")
        assert self.phys is not None
        key_intlen = 8 if self.phys.zap_flags & ZAP_FLAG_UINT64_KEY else 1
        return ZapLeaf(block[0], block[1], key_intlen)

    async def lookup(self, name: bytes) -> ZapEntry:
        """The entry called `name`; ENOENT when there is none."""
        if self.micro is not None:
            try:
                return self.micro[name]
            except KeyError:
                raise FSError(errno.ENOENT) from None
        p = self.phys
        assert p is not None
        if p.zap_normflags or p.zap_flags & ZAP_FLAG_UINT64_KEY:
            # Names hash in normalised form we do not compute: search every leaf.
            for e in await self.entries():
                if e.name == name:
                    return e
            raise FSError(errno.ENOENT)
        h, blkid = await self.leaf_of(name)
        found = (await self._leaf(blkid)).lookup(h, name)
        if found is None:
            raise FSError(errno.ENOENT)
        return found

    async def leaf_of(self, name: bytes) -> tuple[int, int]:
        """A fat ZAP's hash of the string key `name` and the leaf block it belongs in."""
        p = self.phys
        assert p is not None
        hashbits = 48 if p.zap_flags & ZAP_FLAG_HASH64 else 28
        h = zap_hash(p.zap_salt, name, hashbits)
        (blkid,) = await self._ptrtbl(h >> (64 - p.zt_shift) if p.zt_shift else 0, 1)
        return h, blkid

    async def entries(self) -> list[ZapEntry]:
        """Every entry, in on-disk order."""
        if self.micro is not None:
            return list(self.micro.values())
        p = self.phys
        assert p is not None
        per_block = (1 << (self._shift - 4)) if p.zt_numblks == 0 else 1 << (self._shift - 3)
        seen: set[int] = set()
        out: list[ZapEntry] = []
        for first in range(0, 1 << p.zt_shift, per_block):
            count = min(per_block, (1 << p.zt_shift) - first)
            for leaf in await self._ptrtbl(first, count):
                if leaf not in seen:
                    seen.add(leaf)
                    out += (await self._leaf(leaf)).entries()
        return out
