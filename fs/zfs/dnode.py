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
`encode_dnode` is `parse_dnode`'s inverse (padding and unused bonus space as zeros).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import NamedTuple

from uvfs import FSError

from .blkptr import BLKPTR_SIZE, BlockPtr, BlockPtrs, encode_blkptr, parse_blkptr

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


# The 64-byte core, offsets as in the table above (hot: parsed for every file of a walk,
# so struct rather than construct).
_CORE = {bo: struct.Struct(f"{bo}8B2HB3x2Q32x") for bo in "<>"}


class DnodePhys(NamedTuple):
    """One parsed dnode. `bonus` is `dn_bonuslen` bytes; `dn_spill` is None without one.

    A NamedTuple, like BlockPtr and for the same reason: one is built per file walked.
    """

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
    dn_blkptr: Sequence[BlockPtr]  # a BlockPtrs (parsed on first use); () when free
    dn_bonus: bytes
    dn_spill: BlockPtr | None
    byteorder: str  # of the block holding the dnode, hence of its bonus buffer

    @property
    def datablksz(self) -> int:
        """Bytes in each data (level 0) block."""
        return self.dn_datablkszsec << 9

    @property
    def used_bytes(self) -> int:
        """Bytes allocated on disk for the object, at most 2^63 - 1 (a damaged dn_used
        would otherwise make a st_blocks no stat can hold)."""
        used = self.dn_used if self.dn_flags & DNODE_FLAG_USED_BYTES else self.dn_used << 9
        return min(used, (1 << 63) - 1)


def parse_dnode(raw: bytes, byteorder: str) -> DnodePhys:
    """Decode the dnode at the start of `raw` (which must hold all its slots).

    Raises FSError(EIO) for a dnode whose fields cannot describe a readable object.
    """
    if len(raw) < DNODE_MIN_SIZE:
        raise FSError(errno.EIO, "dnode: short buffer")
    core = _CORE[byteorder].unpack_from(raw)
    (dn_type, indblkshift, nlevels, nblkptr, _, _, _, flags, datablkszsec, bonuslen,
     extra_slots, _, _) = core  # fmt: skip
    size = (extra_slots + 1) << DNODE_SHIFT
    if size > len(raw):
        raise FSError(errno.EIO, f"dnode: {extra_slots} extra slots run past its block")
    if dn_type == DMU_OT_NONE:
        return DnodePhys(*core, (), b"", None, byteorder)
    tail = size - DNODE_CORE_SIZE
    spill = bool(flags & DNODE_FLAG_SPILL_BLKPTR)
    room = tail - BLKPTR_SIZE * nblkptr - (BLKPTR_SIZE if spill else 0)
    if nblkptr == 0 or room < 0 or bonuslen > room:
        raise FSError(errno.EIO, "dnode: block pointers and bonus overflow the dnode")
    if not 1 <= nlevels <= DN_MAX_LEVELS or datablkszsec == 0:
        raise FSError(errno.EIO, f"dnode: bad tree shape (nlevels {nlevels})")
    if nlevels > 1 and not DN_MIN_INDBLKSHIFT <= indblkshift <= DN_MAX_INDBLKSHIFT:
        raise FSError(errno.EIO, f"dnode: bad indirect block shift {indblkshift}")
    view = memoryview(raw)
    bonus_at = DNODE_CORE_SIZE + nblkptr * BLKPTR_SIZE
    return DnodePhys(
        *core,
        BlockPtrs(bytes(view[DNODE_CORE_SIZE:bonus_at]), byteorder),
        bytes(view[bonus_at : bonus_at + bonuslen]),
        parse_blkptr(view[size - BLKPTR_SIZE : size], byteorder) if spill else None,
        byteorder,
    )


def encode_dnode(dn: DnodePhys) -> bytes:
    """The (dn_extra_slots + 1) * 512 bytes of `dn`, in its byte order.

    Raises:
        ValueError: block pointers and bonus do not fit the dnode, or do not match
            dn_nblkptr and dn_bonuslen.
    """
    size = (dn.dn_extra_slots + 1) << DNODE_SHIFT
    if dn.dn_type == DMU_OT_NONE:
        return bytes(size)
    if len(dn.dn_blkptr) != dn.dn_nblkptr or len(dn.dn_bonus) != dn.dn_bonuslen:
        raise ValueError("dnode: dn_nblkptr or dn_bonuslen disagree with its contents")
    order = dn.byteorder
    out = bytearray(size)
    _CORE[order].pack_into(out, 0, *dn[:13])
    at = DNODE_CORE_SIZE
    for bp in dn.dn_blkptr:
        out[at : at + BLKPTR_SIZE] = encode_blkptr(bp, order)
        at += BLKPTR_SIZE
    out[at : at + len(dn.dn_bonus)] = dn.dn_bonus
    if dn.dn_spill is not None:
        out[size - BLKPTR_SIZE :] = encode_blkptr(dn.dn_spill, order)
    if at + len(dn.dn_bonus) > size - (BLKPTR_SIZE if dn.dn_spill is not None else 0):
        raise ValueError("dnode: block pointers and bonus overflow the dnode")
    return bytes(out)
