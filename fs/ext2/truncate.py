"""Freeing the blocks of an indirect-mapped file past a new end (e2fsprogs' punch.c).

Every data block at or after the first logical block to go is freed, and so is every
indirect block whose whole range goes; an indirect block that still maps something kept
(or a hole before the cut) stays, with the pointers past the cut zeroed. The walk visits
only pointers that are set, so freeing a sparse file costs what it maps, not its size,
and leaf arrays are handled as numpy slices.
"""

from __future__ import annotations

import numpy as np

from uvfs_fs.ext2.blockmap import EXT2_NDIR_BLOCKS
from uvfs_fs.ext2.bmap import Pointers

_INDIRECT_SLOTS = ((12, 1), (13, 2), (14, 3))  # i_block slot, depth of its tree


async def _free_tree(block: int, depth: int, store: Pointers, freed: list[int]) -> None:
    """Free indirect block `block` (`depth` levels above the data) and all it maps."""
    ptrs = await store.pointers(block)
    used = ptrs[ptrs != 0]
    if depth == 1:
        freed.extend(used.tolist())
    else:
        for child in used.tolist():
            await _free_tree(child, depth - 1, store, freed)
    freed.append(block)


async def _trim(
    block: int, depth: int, keep: int, per_block: int, store: Pointers, freed: list[int]
) -> None:
    """In the subtree under `block`, free everything from relative logical block `keep`."""
    ptrs = await store.pointers(block)
    child_span = per_block ** (depth - 1)
    first, rest = divmod(keep, child_span)
    if rest:
        child = int(ptrs[first])
        if child:
            await _trim(child, depth - 1, rest, per_block, store, freed)
        first += 1
    tail = ptrs[first:]
    if not tail.any():
        return
    if depth == 1:
        freed.extend(tail[tail != 0].tolist())
    else:
        for child in tail[tail != 0].tolist():
            await _free_tree(child, depth - 1, store, freed)
    tail[:] = 0
    store.changed(block)


async def truncate_blocks(
    i_block: np.ndarray, keep: int, per_block: int, store: Pointers
) -> list[int]:
    """Unmap logical blocks `keep` and after; returns the blocks to free (data and indirect).

    Args:
        i_block: the inode's 15 pointers, a writable uint32 array (changed in place).
        keep: how many leading logical blocks stay mapped.
        per_block: pointers per indirect block.
        store: reads and marks indirect blocks (nothing is allocated).
    """
    freed: list[int] = []
    direct = i_block[min(keep, EXT2_NDIR_BLOCKS) : EXT2_NDIR_BLOCKS]
    freed.extend(direct[direct != 0].tolist())
    direct[:] = 0
    base = EXT2_NDIR_BLOCKS
    for slot, depth in _INDIRECT_SLOTS:
        span = per_block**depth
        root = int(i_block[slot])
        if root and keep < base + span:
            if keep <= base:
                await _free_tree(root, depth, store, freed)
                i_block[slot] = 0
            else:
                await _trim(root, depth, keep - base, per_block, store, freed)
        base += span
    return freed
