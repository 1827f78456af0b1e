"""Where new inodes and blocks go: the kernel's ext2 placement policy, on in-core counts.

Inodes (fs/ext2/ialloc.c): a directory made in the root goes to a group with at least
average free inodes and free blocks and the fewest directories, starting the search at a
random group, so top-level trees spread over the disk (Orlov). A deeper directory stays
near its parent unless the parent's group already has many directories or is short of
inodes or blocks. Any other inode goes into its parent directory's group if it has a free
inode and a free block, else a group found by quadratic probing from there, else the
first group with a free inode.

Blocks (fs/ext2/balloc.c): a file's next block goes right after its previous one, its
first block near the start of its inode's group; when that group is full the search
moves on group by group. Within a group `Bitmap.find_free_run` prefers a stretch long
enough for the whole request, so a large write lands contiguous.

Everything here works on `GroupStats` (counts per group, kept exact by the caller) and
returns group numbers; the caller loads the bitmaps and does the I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np


class GroupStats:
    """Free blocks, free inodes and directories per group, as the descriptors count them."""

    def __init__(self, free_blocks: list[int], free_inodes: list[int], used_dirs: list[int]):
        self.free_blocks = np.array(free_blocks, dtype=np.int64)
        self.free_inodes = np.array(free_inodes, dtype=np.int64)
        self.used_dirs = np.array(used_dirs, dtype=np.int64)

    @property
    def groups(self) -> int:
        return len(self.free_blocks)

    def _rolled(self, start: int) -> np.ndarray:
        """Group numbers in search order: `start`, `start + 1` ... wrapping around."""
        return np.roll(np.arange(self.groups), -start)


def _first(order: np.ndarray, ok: np.ndarray) -> int | None:
    hits = np.flatnonzero(ok[order])
    return int(order[hits[0]]) if len(hits) else None


def orlov_group(
    stats: GroupStats,
    parent_group: int,
    *,
    top_level: bool,
    inodes_per_group: int,
    blocks_per_group: int,
    rng: random.Random,
) -> int | None:
    """The group for a new directory, or None when no group has a free inode."""
    n = stats.groups
    has_inode = stats.free_inodes > 0
    avefreei = int(stats.free_inodes.sum()) // n
    avefreeb = int(stats.free_blocks.sum()) // n
    if top_level:
        ok = has_inode & (stats.free_inodes >= avefreei) & (stats.free_blocks >= avefreeb)
        order = stats._rolled(rng.randrange(n))
        candidates = order[ok[order]]
        if len(candidates):
            # Fewest directories wins; ties go to the first in the random order.
            return int(candidates[np.argmin(stats.used_dirs[candidates])])
    else:
        max_dirs = int(stats.used_dirs.sum()) // n + inodes_per_group // 16
        min_inodes = avefreei - inodes_per_group // 4
        min_blocks = avefreeb - blocks_per_group // 4
        ok = (
            has_inode
            & (stats.used_dirs < max_dirs)
            & (stats.free_inodes >= min_inodes)
            & (stats.free_blocks >= min_blocks)
        )
        found = _first(stats._rolled(parent_group), ok)
        if found is not None:
            return found
    order = stats._rolled(parent_group)
    found = _first(order, has_inode & (stats.free_inodes >= avefreei))
    return found if found is not None else _first(order, has_inode)


def other_group(stats: GroupStats, parent_group: int) -> int | None:
    """The group for a new non-directory inode, or None when no inode is free."""
    n = stats.groups
    if stats.free_inodes[parent_group] and stats.free_blocks[parent_group]:
        return parent_group
    # Quadratic probing spreads files of full groups instead of piling them next door.
    group, step = parent_group, 1
    while step < n:
        group = (group + step) % n
        if stats.free_inodes[group] and stats.free_blocks[group]:
            return group
        step <<= 1
    return _first(stats._rolled(parent_group), stats.free_inodes > 0)


def block_groups(stats: GroupStats, goal_group: int) -> Iterator[int]:
    """Groups with a free block, in the order a block search visits them from `goal_group`."""
    if stats.free_blocks[goal_group] > 0:
        yield goal_group  # nearly every search ends here: no need to order the others
    order = stats._rolled(goal_group)[1:]
    yield from (int(g) for g in order[stats.free_blocks[order] > 0])
