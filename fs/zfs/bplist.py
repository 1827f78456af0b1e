"""bplist_phys_t (module/zfs/bplist.c, pool versions before 26): a list of block pointers.

Before SPA_VERSION_DEADLISTS (26), a dataset's deadlist (``ds_deadlist_obj``) and the
pool's deferred frees are bplists: a MOS object whose data is an array of blkptr_t and
whose bonus header counts them:

    0   bpl_entries     pointers in the array
    8   bpl_bytes       their allocated bytes (all copies)
    16  bpl_comp        their physical bytes    (these two only in the 32-byte header:
    24  bpl_uncomp      their uncompressed bytes  "havecomp")

bplist_enqueue stores a pointer with blk_fill zeroed, and its checksum too (the array
compresses better; nobody reads the block through it), unless the block is deduplicated.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from uvfs_fs.zfs.blkptr import BlockPtr, encode_blkptr

BPLIST_SIZE_V1 = 32  # the header with bpl_comp and bpl_uncomp


def bplist_entries(bonus: bytes, byteorder: str) -> int:
    """bpl_entries: how many pointers the list holds (its array's length / BLKPTR_SIZE)."""
    return struct.unpack_from(byteorder + "Q", bonus)[0]


def bplist_append(
    bonus: bytes, byteorder: str, bps: Sequence[BlockPtr], usage: tuple[int, int, int]
) -> tuple[bytes, bytes]:
    """The header after appending `bps` whose (allocated, physical, uncompressed) bytes
    are `usage`, and the array bytes to write at ``bpl_entries * 128``."""
    out = bytearray(bonus)
    fmt = byteorder + "Q"
    fields = [(0, len(bps)), (8, usage[0])]
    if len(bonus) >= BPLIST_SIZE_V1:
        fields += [(16, usage[1]), (24, usage[2])]
    for at, delta in fields:
        struct.pack_into(fmt, out, at, struct.unpack_from(fmt, out, at)[0] + delta)
    array = b"".join(
        encode_blkptr(bp._replace(fill=0, cksum=bp.cksum if bp.dedup else (0, 0, 0, 0)), byteorder)
        for bp in bps
    )
    return bytes(out), array
