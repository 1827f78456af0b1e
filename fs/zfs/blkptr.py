"""blkptr_t: the 128-byte ZFS block pointer (include/sys/spa.h), parsed into plain records.

A block pointer names up to three copies (DVAs) of one block and says how to read it: its
logical and physical sizes, compression, checksum function and the checksum itself, its
object type, indirection level and the byte order of the data it points to. Layout:

    0   blk_dva[3]      3 x 16 bytes: word0 = vdev:32..55 grid:24..31 asize:0..23
                        (512-byte units), word1 = gang:63 offset:0..62 (512-byte units)
    48  blk_prop        lsize:0..15 psize:16..31 (512-byte units, minus one)
                        compress:32..38 embedded:39 checksum:40..47 type:48..55
                        level:56..60 encrypted:61 dedup:62 byteorder:63 (1 = little endian)
    56  blk_pad[2]
    72  blk_phys_birth
    80  blk_birth       the transaction group that wrote the block
    88  blk_fill        non-hole blocks below an indirect block (dnodes for a dnode block)
    96  blk_cksum       4 x 64-bit checksum words

An embedded block pointer (BPE, module/zfs/blkptr.c) carries its (compressed) data instead:
blk_prop then holds lsize:0..24 and psize:25..31 (bytes, minus one) and the embedded type in
the checksum bits; the payload fills every word except blk_prop and blk_birth (112 bytes).
The pointer's words are in the byte order of the block holding it (the caller's
`byteorder`); the payload bytes are each word's bytes taken least significant first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

BLKPTR_SIZE = 128
SPA_MINBLOCKSHIFT = 9
BP_EMBEDDED_TYPE_DATA = 0
_PAYLOAD_WORDS = (0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 14, 15)
_WORDS = {"<": struct.Struct("<16Q"), ">": struct.Struct(">16Q")}


@dataclass(frozen=True, slots=True)
class DVA:
    """One data virtual address: where one copy of a block lives."""

    vdev: int  # top-level vdev id
    offset: int  # bytes, from the start of the vdev's allocatable space (after labels)
    asize: int  # allocated bytes (includes raidz parity and padding)
    gang: bool  # the address holds a gang header, not the data

    @property
    def is_empty(self) -> bool:
        """No copy here (both DVA words zero)."""
        return self.vdev == 0 and self.offset == 0 and self.asize == 0 and not self.gang


@dataclass(frozen=True, slots=True)
class BlockPtr:
    """One blkptr_t. For an embedded pointer `dvas` is empty and `payload` holds the data."""

    dvas: tuple[DVA, ...]  # the non-empty copies, in order
    lsize: int  # logical (uncompressed) size in bytes
    psize: int  # physical (compressed) size in bytes
    compress: int  # enum zio_compress (see compress.py)
    checksum: int  # enum zio_checksum (see checksum.py); embedded type when `embedded`
    type: int  # dmu_object_type_t of the block's contents
    level: int  # 0 = data, n = indirect block n levels above the data
    embedded: bool
    byteorder: str  # byte order of the pointed-to data: "<" or ">"
    birth_txg: int  # blk_birth
    fill: int  # blk_fill
    cksum: tuple[int, int, int, int]  # blk_cksum words
    is_hole: bool  # no data: reads as lsize zeros
    phys_birth: int = 0  # blk_phys_birth (0: same as birth_txg)
    encrypted: bool = False
    dedup: bool = False
    payload: bytes = b""  # embedded data, psize bytes, still compressed

    @property
    def etype(self) -> int:
        """The embedded type (BP_EMBEDDED_TYPE_DATA ...) of an embedded pointer."""
        return self.checksum


def _parse_dva(word0: int, word1: int) -> DVA:
    return DVA(
        vdev=(word0 >> 32) & 0xFFFFFF,
        offset=(word1 & ((1 << 63) - 1)) << SPA_MINBLOCKSHIFT,
        asize=(word0 & 0xFFFFFF) << SPA_MINBLOCKSHIFT,
        gang=bool(word1 >> 63),
    )


def parse_blkptr(raw: bytes, byteorder: str) -> BlockPtr:
    """Decode one 128-byte blkptr_t whose words are in `byteorder` ("<" or ">")."""
    w = _WORDS[byteorder].unpack_from(raw)
    prop = w[6]
    embedded = bool((prop >> 39) & 1)
    common = {
        "compress": (prop >> 32) & 0x7F,
        "checksum": (prop >> 40) & 0xFF,
        "type": (prop >> 48) & 0xFF,
        "level": (prop >> 56) & 0x1F,
        "embedded": embedded,
        "byteorder": "<" if prop >> 63 else ">",
        "birth_txg": w[10],
        "encrypted": bool((prop >> 61) & 1),
        "dedup": bool((prop >> 62) & 1),
    }
    if embedded:
        psize = ((prop >> 25) & 0x7F) + 1
        payload = b"".join(w[i].to_bytes(8, "little") for i in _PAYLOAD_WORDS)
        return BlockPtr(
            dvas=(),
            lsize=(prop & 0x1FFFFFF) + 1,
            psize=psize,
            fill=1,
            cksum=(0, 0, 0, 0),
            is_hole=False,
            payload=payload[:psize],
            **common,
        )
    dvas = tuple(_parse_dva(w[2 * i], w[2 * i + 1]) for i in range(3))
    return BlockPtr(
        dvas=tuple(d for d in dvas if not d.is_empty),
        lsize=((prop & 0xFFFF) + 1) << SPA_MINBLOCKSHIFT,
        psize=(((prop >> 16) & 0xFFFF) + 1) << SPA_MINBLOCKSHIFT,
        fill=w[11],
        cksum=(w[12], w[13], w[14], w[15]),
        is_hole=dvas[0].is_empty,
        phys_birth=w[9],
        **common,
    )


def parse_blkptrs(raw: bytes, byteorder: str) -> list[BlockPtr]:
    """All block pointers of an indirect block (a whole number of 128-byte slots)."""
    return [
        parse_blkptr(raw[i : i + BLKPTR_SIZE], byteorder)
        for i in range(0, len(raw) - BLKPTR_SIZE + 1, BLKPTR_SIZE)
    ]
