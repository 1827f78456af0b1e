"""Indirect block maps: paths, run coalescing, holes at every level, out-of-range pointers."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from uvfs import FSError
from uvfs_fs.ext2.blockmap import (
    Run,
    append_pointers,
    append_run,
    indirect_path,
    map_indirect,
    max_indirect_blocks,
)


def test_indirect_paths() -> None:
    per = 256  # 1 KiB blocks
    assert indirect_path(0, per) == (0,)
    assert indirect_path(11, per) == (11,)
    assert indirect_path(12, per) == (12, 0)
    assert indirect_path(12 + 255, per) == (12, 255)
    assert indirect_path(12 + 256, per) == (13, 0, 0)
    assert indirect_path(12 + 256 + 257, per) == (13, 1, 1)
    assert indirect_path(12 + 256 + 65536, per) == (14, 0, 0, 0)
    assert max_indirect_blocks(per) == 12 + 256 + 65536 + 256**3
    assert indirect_path(max_indirect_blocks(per) - 1, per) == (14, 255, 255, 255)
    with pytest.raises(FSError) as info:
        indirect_path(max_indirect_blocks(per), per)
    assert info.value.errno == errno.EIO


def test_runs_coalesce() -> None:
    runs: list[Run] = []
    append_pointers(runs, 10, np.array([5, 6, 7, 0, 0, 9, 11, 12], dtype="<u4"))
    assert runs == [Run(10, 5, 3), Run(13, 0, 2), Run(15, 9, 1), Run(16, 11, 2)]
    append_run(runs, Run(18, 13, 4))  # continues the last run on disk
    append_run(runs, Run(22, 0, 1))
    append_run(runs, Run(23, 0, 5))  # holes merge too
    assert runs[-2:] == [Run(16, 11, 6), Run(22, 0, 6)]


class Blocks:
    """An image of 16-byte blocks (4 pointers each) held in a dict, counting reads."""

    def __init__(self, blocks: dict[int, list[int]]) -> None:
        self.blocks = {n: np.array(p, dtype="<u4").tobytes() for n, p in blocks.items()}
        self.reads: list[int] = []

    async def read(self, block: int) -> bytes:
        self.reads.append(block)
        return self.blocks[block]


def i_block(direct: list[int], ind: int, dind: int, tind: int) -> bytes:
    return np.array([*direct, ind, dind, tind], dtype="<u4").tobytes()


async def test_map_indirect_walks_every_level() -> None:
    image = Blocks(
        {100: [40, 41, 0, 43], 101: [0, 102, 0, 0], 102: [0, 0, 103, 0], 103: [50, 51, 52, 53]}
    )
    root = i_block(list(range(20, 32)), 100, 0, 101)
    runs = await map_indirect(
        root, 0, 12 + 4 + 16 + 64, block_size=16, blocks_count=1000, read_block=image.read
    )
    tind = 12 + 4 + 16  # first block under the triple indirect pointer (16 per entry)
    assert runs == [
        Run(0, 20, 12),
        Run(12, 40, 2),
        Run(14, 0, 1),
        Run(15, 43, 1),
        Run(16, 0, 40),  # the whole double-indirect hole, then holes under TIND
        Run(tind + 16 + 2 * 4, 50, 4),
        Run(tind + 16 + 3 * 4, 0, 36),
    ]
    assert 0 not in image.reads  # a hole pointer is never followed
    # A range inside one leaf reads only the path to it.
    image.reads.clear()
    got = await map_indirect(
        root, tind + 25, 2, block_size=16, blocks_count=1000, read_block=image.read
    )
    assert got == [Run(tind + 25, 51, 2)]
    assert image.reads == [101, 102, 103]


async def test_pointers_are_checked_only_where_used() -> None:
    image = Blocks({100: [40, 41, 5000, 43]})
    root = i_block(list(range(20, 32)), 100, 7777, 0)
    assert await map_indirect(
        root, 12, 2, block_size=16, blocks_count=1000, read_block=image.read
    ) == [Run(12, 40, 2)]
    for first in (14, 16):  # a bad leaf pointer, a bad double-indirect pointer
        with pytest.raises(FSError) as info:
            await map_indirect(
                root, first, 1, block_size=16, blocks_count=1000, read_block=image.read
            )
        assert info.value.errno == errno.EIO
