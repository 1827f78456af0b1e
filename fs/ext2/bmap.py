"""Setting block pointers in an indirect block map, creating indirect blocks on the way.

The read side (`blockmap.map_indirect`) finds where logical blocks live; this module
records where new ones were put (e2fsprogs' ext2fs_bmap2 with BMAP_SET). A run of
contiguous blocks is entered leaf array by leaf array: one numpy slice assignment per
indirect block, not one Python step per block. A missing indirect block on the path is
allocated through the `Pointers` store, which hands out zeroed ones.

`missing_indirect` counts the indirect blocks a range would need before anything is
allocated, so a write can fail with ENOSPC having changed nothing.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from uvfs_fs.ext2.blockmap import EXT2_NDIR_BLOCKS, indirect_path


class Pointers(Protocol):
    """The filesystem's side: indirect blocks as writable pointer arrays."""

    async def pointers(self, block: int) -> np.ndarray:
        """Indirect block `block` as a writable little-endian uint32 array."""
        ...

    def changed(self, block: int) -> None:
        """Indirect block `block` was modified and must be written back."""
        ...

    async def new_indirect(self, goal: int) -> int:
        """Allocate a zeroed indirect block near `goal`; its number."""
        ...


def _leaf_span(logical: int, per_block: int) -> tuple[tuple[int, ...], int]:
    """The path to `logical` and how many blocks from it on share its leaf array."""
    path = indirect_path(logical, per_block)
    if len(path) == 1:
        return path, EXT2_NDIR_BLOCKS - logical
    return path, per_block - path[-1]


async def set_run(
    i_block: np.ndarray, logical: int, physical: int, count: int, per_block: int, store: Pointers
) -> int:
    """Map logical blocks [logical, logical + count) to physical [physical, ...).

    Args:
        i_block: the inode's 15 pointers, a writable uint32 array (changed in place).
        logical: the first logical block.
        physical: where it lives; the others follow contiguously.
        count: how many blocks.
        per_block: pointers per indirect block (block_size // 4).
        store: reads, marks and allocates indirect blocks.

    Returns:
        How many indirect blocks were allocated.
    """
    created = 0
    done = 0
    while done < count:
        lblk = logical + done
        path, span = _leaf_span(lblk, per_block)
        n = min(span, count - done)
        values = np.arange(physical + done, physical + done + n, dtype=np.uint32)
        if len(path) == 1:
            i_block[lblk : lblk + n] = values
        else:
            array, owner = i_block, None
            for index in path[:-1]:
                child = int(array[index])
                if child == 0:
                    child = await store.new_indirect(physical + done)
                    created += 1
                    array[index] = child
                    if owner is not None:
                        store.changed(owner)
                array, owner = await store.pointers(child), child
            array[path[-1] : path[-1] + n] = values
            store.changed(owner)
        done += n
    return created


async def missing_indirect(
    i_block: np.ndarray, logical: int, count: int, per_block: int, store: Pointers
) -> int:
    """How many indirect blocks `set_run` would allocate for [logical, logical + count)."""
    missing: set[tuple[int, ...]] = set()
    done = 0
    while done < count:
        lblk = logical + done
        path, span = _leaf_span(lblk, per_block)
        if len(path) > 1:
            array: np.ndarray | None = i_block
            for depth, index in enumerate(path[:-1]):
                child = 0 if array is None else int(array[index])
                if child == 0:
                    missing.add(path[: depth + 1])
                    array = None
                else:
                    array = await store.pointers(child)
        done += min(span, count - done)
    return len(missing)
