"""The system zone: the blocks no file may own, as the kernel's block_validity keeps them.

The kernel refuses an inode whose xattr block, direct pointers or extent tree root name a
block outside the filesystem or inside the system zone (ext4_inode_block_valid): every
group's superblock copy with its descriptor and reserved descriptor blocks (meta_bg moves
descriptors into each meta group, see `base_meta_blocks`), and each group's block bitmap,
inode bitmap and inode table; and the journal inode's blocks, which only the journal may
own (ext4_protect_reserved_inode). The zone is kept as sorted, disjoint intervals (the
metadata merged), so a check is one bisection.
"""

from __future__ import annotations

import errno
from bisect import bisect_right
from collections.abc import Iterable, Sequence

from uvfs import FSError
from uvfs_fs.ext2.group_desc import (
    GroupDesc,
    desc_blocks_count,
    group_first_block,
    group_has_super,
)
from uvfs_fs.ext2.superblock import Geometry


def base_meta_blocks(geo: Geometry, group: int, reserved_gdt_blocks: int) -> int:
    """Blocks at the start of `group` holding a superblock copy and descriptor blocks
    (ext4_num_base_meta_blocks): with the reserved descriptor blocks under the contiguous
    table; a meta_bg meta group keeps one descriptor block in its first, second and last
    group, and no reserved ones."""
    has_super = int(group_has_super(geo, group))
    if "meta_bg" in geo.features and group // geo.descs_per_block >= geo.first_meta_bg:
        return has_super + (group % geo.descs_per_block in (0, 1, geo.descs_per_block - 1))
    if not has_super:
        return 0
    table = geo.first_meta_bg if "meta_bg" in geo.features else desc_blocks_count(geo)
    return 1 + table + reserved_gdt_blocks


class SystemZone:
    """The blocks [start, end) of a volume's metadata, each with its owner (an inode number,
    0 for none), checked against a file's blocks."""

    def __init__(
        self,
        geo: Geometry,
        descs: Sequence[GroupDesc],
        *,
        itable_blocks: int,
        reserved_gdt_blocks: int,
        owned: Iterable[tuple[int, int, int]] = (),
    ) -> None:
        """`owned`: (start, count, inode) runs of a reserved inode (the journal's).

        Raises:
            FSError: EUCLEAN when an owned run overlaps the rest of the zone (the kernel
                then fails the mount: "overlap system zone").
        """
        spans = []
        for group, desc in enumerate(descs):
            base = base_meta_blocks(geo, group, reserved_gdt_blocks)
            if base:
                first = group_first_block(geo, group)
                spans.append((first, first + base, 0))
            spans.append((desc.block_bitmap, desc.block_bitmap + 1, 0))
            spans.append((desc.inode_bitmap, desc.inode_bitmap + 1, 0))
            spans.append((desc.inode_table, desc.inode_table + itable_blocks, 0))
        merged: list[tuple[int, int, int]] = []
        for start, end, owner in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]), 0)
            else:
                merged.append((start, end, owner))
        for start, count, owner in owned:
            i = bisect_right(merged, (start + count - 1, 1 << 64)) - 1
            if i >= 0 and merged[i][1] > start:
                raise FSError(
                    errno.EUCLEAN,
                    f"blocks {start}-{start + count - 1} from inode {owner} overlap system zone",
                )
            merged.insert(i + 1, (start, start + count, owner))
        self._starts = [start for start, _, _ in merged]
        self._spans = merged
        self._first_data_block = geo.first_data_block
        self._blocks_count = geo.blocks_count

    def block_ok(self, start: int, count: int, ino: int = 0) -> bool:
        """Blocks [start, start + count) lie past the first data block, inside the volume
        and, as far as the zone holds them, in runs inode `ino` owns
        (ext4_inode_block_valid)."""
        if start <= self._first_data_block or start + count > self._blocks_count:
            return False
        # the intervals starting before the range ends, back to the first ending past its
        # start, are the ones that overlap it
        i = bisect_right(self._starts, start + count - 1) - 1
        while i >= 0 and self._spans[i][1] > start:
            if not self._spans[i][2] or self._spans[i][2] != ino:  # metadata: nobody's
                return False
            i -= 1
        return True
