"""Placement policy: Orlov for directories, the parent's group for files, block search order."""

from __future__ import annotations

import random

from uvfs_fs.ext2.alloc import GroupStats, block_groups, orlov_group, other_group

IPG, BPG = 1024, 8192


def stats(free_blocks: list[int], free_inodes: list[int], dirs: list[int]) -> GroupStats:
    return GroupStats(free_blocks, free_inodes, dirs)


def test_top_level_directories_go_where_space_is_and_directories_are_few() -> None:
    s = stats([8000, 100, 8000, 8000], [1000, 1000, 1000, 10], [5, 0, 1, 0])
    # Group 1 lacks blocks, group 3 inodes: of groups 0 and 2, 2 has fewer directories.
    for seed in range(10):
        assert orlov_group(s, 0, top_level=True, inodes_per_group=IPG,
                           blocks_per_group=BPG, rng=random.Random(seed)) == 2  # fmt: skip


def test_nested_directories_stay_with_their_parent_until_it_is_crowded() -> None:
    s = stats([8000] * 4, [1000] * 4, [10, 10, 10, 10])
    pick = dict(inodes_per_group=IPG, blocks_per_group=BPG, rng=random.Random(0))
    assert orlov_group(s, 2, top_level=False, **pick) == 2
    # Over average + ipg/16 directories: the next group that is not.
    s.used_dirs[2] = 10 + IPG // 16 + 50
    assert orlov_group(s, 2, top_level=False, **pick) == 3
    # Short of inodes (below average - ipg/4): skipped too.
    s.free_inodes[3] = 100
    assert orlov_group(s, 2, top_level=False, **pick) == 0


def test_files_follow_their_parent_then_probe() -> None:
    s = stats([8000] * 8, [1000] * 8, [0] * 8)
    assert other_group(s, 5) == 5
    s.free_blocks[5] = 0
    assert other_group(s, 5) == 6  # 5 + 1
    s.free_inodes[6] = 0
    assert other_group(s, 5) == 0  # 5 + 1 + 2, wrapped
    s.free_inodes[:] = 0
    s.free_inodes[4] = 1
    assert other_group(s, 5) == 4  # last resort: any group with an inode
    s.free_inodes[4] = 0
    assert other_group(s, 5) is None
    assert orlov_group(s, 5, top_level=True, inodes_per_group=IPG, blocks_per_group=BPG,
                       rng=random.Random(0)) is None  # fmt: skip


def test_block_search_starts_at_the_goal_group_and_wraps() -> None:
    s = stats([10, 0, 5, 7], [1] * 4, [0] * 4)
    assert list(block_groups(s, 2)) == [2, 3, 0]
    assert list(block_groups(s, 1)) == [2, 3, 0]
