"""Extent trees from byte strings: leaves, indexes, uninitialized extents, malformed nodes."""

from __future__ import annotations

import errno

import pytest

from uvfs import FSError
from uvfs_fs.ext2.blockmap import Run
from uvfs_fs.ext2.extents import (
    EXT4_EXT_MAGIC,
    ext4_extent,
    ext4_extent_header,
    ext4_extent_idx,
    map_extents,
    parse_node,
)

BS = 1024
ROOT_MAX = 4  # entries that fit in i_block after the header


def node(depth: int, entries: list[tuple[int, int, int]], size: int = BS, **header: int) -> bytes:
    """A node of (logical, length, physical) extents or (logical, child) indexes."""
    fields = dict(
        eh_magic=EXT4_EXT_MAGIC,
        eh_entries=len(entries),
        eh_max=(size - 12) // 12,
        eh_depth=depth,
        eh_generation=0,
    )
    out = ext4_extent_header.build({**fields, **header})
    for e in entries:
        if depth:
            out += ext4_extent_idx.build(
                dict(
                    ei_block=e[0], ei_leaf_lo=e[1] & 0xFFFFFFFF, ei_leaf_hi=e[1] >> 32, ei_unused=0
                )
            )
        else:
            out += ext4_extent.build(
                dict(
                    ee_block=e[0],
                    ee_len=e[1],
                    ee_start_hi=e[2] >> 32,
                    ee_start_lo=e[2] & 0xFFFFFFFF,
                )
            )
    return out.ljust(size, b"\0")


class Blocks:
    def __init__(self, blocks: dict[int, bytes]) -> None:
        self.blocks = blocks
        self.reads: list[int] = []

    async def read(self, block: int) -> bytes:
        self.reads.append(block)
        return self.blocks[block]


def test_record_sizes() -> None:
    assert ext4_extent_header.sizeof() == ext4_extent.sizeof() == ext4_extent_idx.sizeof() == 12
    raw = node(0, [(0, 3, (5 << 32) + 7), (9, 32768 + 2, 8)], size=60)
    assert parse_node(raw, 1 << 40) == (0, [(0, 3, (5 << 32) + 7, False), (9, 2, 8, True)])
    index = node(1, [(0, (1 << 32) + 9), (100, 10)], size=60)
    assert parse_node(index, 1 << 40) == (1, [(0, (1 << 32) + 9), (100, 10)])


async def test_leaf_in_the_inode() -> None:
    root = node(0, [(0, 2, 100), (2, 3, 102), (10, 32768 + 4, 200), (20, 1, 300)], size=60)
    runs = await map_extents(root, 0, 25, blocks_count=1000, read_block=Blocks({}).read)
    assert runs == [
        Run(0, 100, 5),  # two extents contiguous on disk: one run
        Run(5, 0, 15),  # a gap, then an uninitialized extent, then a gap: zeros
        Run(20, 300, 1),
        Run(21, 0, 4),
    ]
    part = await map_extents(root, 3, 1, blocks_count=1000, read_block=Blocks({}).read)
    assert part == [Run(3, 103, 1)]


async def test_index_levels_are_clipped_and_read_lazily() -> None:
    image = Blocks(
        {
            50: node(1, [(0, 60), (100, 61)]),
            60: node(0, [(0, 10, 500), (90, 20, 600)]),  # overlaps its parent's next index
            61: node(0, [(100, 5, 700)]),
        }
    )
    root = node(2, [(0, 50)], size=60)
    runs = await map_extents(root, 0, 120, blocks_count=1000, read_block=image.read)
    assert runs == [
        Run(0, 500, 10),
        Run(10, 0, 80),
        Run(90, 600, 10),
        Run(100, 700, 5),
        Run(105, 0, 15),
    ]
    image.reads.clear()
    assert await map_extents(root, 101, 2, blocks_count=1000, read_block=image.read) == [
        Run(101, 701, 2)
    ]
    assert image.reads == [50, 61]


@pytest.mark.parametrize(
    ("root", "blocks"),
    [
        (node(0, [], size=60, eh_magic=0xF30B), {}),
        (node(0, [(0, 1, 5)] * 2, size=60, eh_max=1), {}),  # more entries than eh_max
        (node(0, [], size=60, eh_max=5), {}),  # eh_max beyond the node
        (node(6, [], size=60), {}),  # deeper than the kernel allows
        (node(1, [(0, 50)], size=60), {50: node(1, [])}),  # child depth not parent's - 1
        (node(1, [(0, 5000)], size=60), {}),  # child outside the filesystem
        (node(1, [(5, 50), (5, 51)], size=60), {}),  # indexes out of order
        (node(0, [(0, 0, 5)], size=60), {}),  # empty extent
        (node(0, [(0, 4, 5), (2, 1, 9)], size=60), {}),  # overlapping extents
        (node(0, [(0, 4, 998)], size=60), {}),  # past the end of the filesystem
        (node(0, [(0, 4, 0)], size=60), {}),  # at block 0
    ],
)
async def test_malformed_trees(root: bytes, blocks: dict[int, bytes]) -> None:
    with pytest.raises(FSError) as info:
        await map_extents(root, 0, 10, blocks_count=1000, read_block=Blocks(blocks).read)
    assert info.value.errno == errno.EIO
