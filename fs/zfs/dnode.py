"""dnode_phys_t: one DMU object's header (include/sys/dnode.h), parsed into a plain record.

Every object in an object set is described by a dnode: 512 bytes, or a multiple of 512
when the large_dnode feature lets it span `dn_extra_slots` more slots. The first 64 bytes
(the core) give the object's type, block sizes and tree height; then come `dn_nblkptr`
block pointers (the roots of the object's block tree), then the bonus buffer
(`dn_bonuslen` bytes of type `dn_bonustype`: a znode, SA attributes, a DSL record ...),
and, when DNODE_FLAG_SPILL_BLKPTR is set, a spill block pointer in the last 128 bytes:

    0   dn_type u8         1  dn_indblkshift u8   2  dn_nlevels u8   3  dn_nblkptr u8
    4   dn_bonustype u8    5  dn_checksum u8      6  dn_compress u8  7  dn_flags u8
    8   dn_datablkszsec u16 (512-byte units)      10 dn_bonuslen u16
    12  dn_extra_slots u8  13 dn_pad2[3]
    16  dn_maxblkid u64    24 dn_used u64 (bytes if DNODE_FLAG_USED_BYTES, else sectors)
    32  dn_pad3[4]
    64  dn_blkptr[dn_nblkptr], then dn_bonus, then (at size - 128) dn_spill

A dnode has no byte-order mark: its words are in the order of the block holding it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from construct import Bytes, Container, Int8ul, Int16ub, Int16ul, Int64ub, Int64ul, Struct

from uvfs import FSError

from .blkptr import BLKPTR_SIZE, BlockPtr, parse_blkptr

DNODE_SHIFT = 9
DNODE_MIN_SIZE = 1 << DNODE_SHIFT
DNODE_CORE_SIZE = 64
DNODE_BLOCK_SIZE = 1 << 14
DN_MAX_LEVELS = 9  # enough for 2^64 bytes with 512-byte data and 4 KiB indirect blocks
DN_MIN_INDBLKSHIFT = 10  # the oldest pools used 16 KiB; accept a little below the 4 KiB minimum
DN_MAX_INDBLKSHIFT = 17
DN_MAX_OBJECT = 1 << 48

DNODE_FLAG_USED_BYTES = 1 << 0
DNODE_FLAG_SPILL_BLKPTR = 1 << 2

# dmu_object_type_t values this driver looks at (include/sys/dmu.h)
DMU_OT_NONE = 0
DMU_OT_OBJECT_DIRECTORY = 1
DMU_OT_DNODE = 10
DMU_OT_OBJSET = 11
DMU_OT_DSL_DIR = 12
DMU_OT_DSL_DATASET = 16
DMU_OT_ZNODE = 17
DMU_OT_PLAIN_FILE_CONTENTS = 19
DMU_OT_DIRECTORY_CONTENTS = 20
DMU_OT_MASTER_NODE = 21
DMU_OT_SA = 44


def _core(u16: type, u64: type) -> Struct:
    return Struct(
        "dn_type" / Int8ul,  # 0
        "dn_indblkshift" / Int8ul,  # 1
        "dn_nlevels" / Int8ul,  # 2
        "dn_nblkptr" / Int8ul,  # 3
        "dn_bonustype" / Int8ul,  # 4
        "dn_checksum" / Int8ul,  # 5
        "dn_compress" / Int8ul,  # 6
        "dn_flags" / Int8ul,  # 7
        "dn_datablkszsec" / u16,  # 8
        "dn_bonuslen" / u16,  # 10
        "dn_extra_slots" / Int8ul,  # 12
        "dn_pad2" / Bytes(3),  # 13
        "dn_maxblkid" / u64,  # 16
        "dn_used" / u64,  # 24
        "dn_pad3" / Bytes(32),  # 32
    ).compile()


_CORE = {"<": _core(Int16ul, Int64ul), ">": _core(Int16ub, Int64ub)}


@dataclass(frozen=True, slots=True)
class DnodePhys:
    """One parsed dnode. `bonus` is `dn_bonuslen` bytes; `dn_spill` is None without one."""

    dn_type: int
    dn_indblkshift: int
    dn_nlevels: int
    dn_nblkptr: int
    dn_bonustype: int
    dn_checksum: int
    dn_compress: int
    dn_flags: int
    dn_datablkszsec: int
    dn_bonuslen: int
    dn_extra_slots: int
    dn_maxblkid: int
    dn_used: int
    dn_blkptr: tuple[BlockPtr, ...]
    dn_bonus: bytes
    dn_spill: BlockPtr | None
    byteorder: str  # of the block holding the dnode, hence of its bonus buffer

    @property
    def datablksz(self) -> int:
        """Bytes in each data (level 0) block."""
        return self.dn_datablkszsec << 9

    @property
    def used_bytes(self) -> int:
        """Bytes allocated on disk for the object."""
        return self.dn_used if self.dn_flags & DNODE_FLAG_USED_BYTES else self.dn_used << 9


def parse_dnode(raw: bytes, byteorder: str) -> DnodePhys:
    """Decode the dnode at the start of `raw` (which must hold all its slots).

    Raises FSError(EIO) for a dnode whose fields cannot describe a readable object.
    """
    if len(raw) < DNODE_MIN_SIZE:
        raise FSError(errno.EIO, "dnode: short buffer")
    c = _CORE[byteorder].parse(raw)
    size = (c.dn_extra_slots + 1) << DNODE_SHIFT
    if size > len(raw):
        raise FSError(errno.EIO, f"dnode: {c.dn_extra_slots} extra slots run past its block")
    if c.dn_type == DMU_OT_NONE:
        return DnodePhys(
            **_core_fields(c), dn_blkptr=(), dn_bonus=b"", dn_spill=None, byteorder=byteorder
        )
    tail = size - DNODE_CORE_SIZE
    spill = bool(c.dn_flags & DNODE_FLAG_SPILL_BLKPTR)
    room = tail - BLKPTR_SIZE * c.dn_nblkptr - (BLKPTR_SIZE if spill else 0)
    if c.dn_nblkptr == 0 or room < 0 or c.dn_bonuslen > room:
        raise FSError(errno.EIO, "dnode: block pointers and bonus overflow the dnode")
    if not 1 <= c.dn_nlevels <= DN_MAX_LEVELS or c.dn_datablkszsec == 0:
        raise FSError(errno.EIO, f"dnode: bad tree shape (nlevels {c.dn_nlevels})")
    if c.dn_nlevels > 1 and not DN_MIN_INDBLKSHIFT <= c.dn_indblkshift <= DN_MAX_INDBLKSHIFT:
        raise FSError(errno.EIO, f"dnode: bad indirect block shift {c.dn_indblkshift}")
    bps = tuple(
        parse_blkptr(raw[DNODE_CORE_SIZE + i * BLKPTR_SIZE :], byteorder)
        for i in range(c.dn_nblkptr)
    )
    bonus_at = DNODE_CORE_SIZE + c.dn_nblkptr * BLKPTR_SIZE
    return DnodePhys(
        **_core_fields(c),
        dn_blkptr=bps,
        dn_bonus=bytes(raw[bonus_at : bonus_at + c.dn_bonuslen]),
        dn_spill=parse_blkptr(raw[size - BLKPTR_SIZE :], byteorder) if spill else None,
        byteorder=byteorder,
    )


_CORE_FIELDS = [
    "dn_type",
    "dn_indblkshift",
    "dn_nlevels",
    "dn_nblkptr",
    "dn_bonustype",
    "dn_checksum",
    "dn_compress",
    "dn_flags",
    "dn_datablkszsec",
    "dn_bonuslen",
    "dn_extra_slots",
    "dn_maxblkid",
    "dn_used",
]


def _core_fields(c: Container) -> dict[str, int]:
    return {name: c[name] for name in _CORE_FIELDS}
