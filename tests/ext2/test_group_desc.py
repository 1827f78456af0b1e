"""Group descriptors (32 and 64 bytes), superblock backups and descriptor placement."""

from __future__ import annotations

import dataclasses

from uvfs_fs.ext2.group_desc import (
    GroupDesc,
    decode_group_desc,
    desc_blocks_count,
    desc_location,
    ext2_group_desc,
    ext4_group_desc,
    group_has_super,
)
from uvfs_fs.ext2.superblock import Geometry

from .test_superblock import offsets


def test_sizes_and_offsets() -> None:
    assert ext2_group_desc.sizeof() == 32
    assert ext4_group_desc.sizeof() == 64
    found = offsets(ext4_group_desc)
    assert found["bg_inode_table"] == 0x08
    assert found["bg_itable_unused"] == 0x1C
    assert found["bg_block_bitmap_hi"] == 0x20
    assert found["bg_inode_table_hi"] == 0x28
    assert found["bg_free_inodes_count_hi"] == 0x2E
    assert found["bg_reserved"] == 0x3C
    assert offsets(ext2_group_desc) == {k: v for k, v in found.items() if v < 32}


FIELDS = {
    "bg_block_bitmap": 0x11111111,
    "bg_inode_bitmap": 0x22222222,
    "bg_inode_table": 0x33333333,
    "bg_free_blocks_count": 0x4444,
    "bg_free_inodes_count": 0x5555,
    "bg_used_dirs_count": 0x6666,
    "bg_flags": 0x7,
    "bg_exclude_bitmap_lo": 0,
    "bg_block_bitmap_csum_lo": 0,
    "bg_inode_bitmap_csum_lo": 0,
    "bg_itable_unused": 0x8888,
    "bg_checksum": 0x9999,
}
HIGH = {
    "bg_block_bitmap_hi": 1,
    "bg_inode_bitmap_hi": 2,
    "bg_inode_table_hi": 3,
    "bg_free_blocks_count_hi": 4,
    "bg_free_inodes_count_hi": 5,
    "bg_used_dirs_count_hi": 6,
    "bg_itable_unused_hi": 7,
    "bg_exclude_bitmap_hi": 0,
    "bg_block_bitmap_csum_hi": 0,
    "bg_inode_bitmap_csum_hi": 0,
    "bg_reserved": 0,
}


def test_32_byte_descriptor() -> None:
    raw = ext2_group_desc.build(FIELDS)
    assert ext2_group_desc.build(ext2_group_desc.parse(raw)) == raw
    assert decode_group_desc(raw, 32) == GroupDesc(
        block_bitmap=0x11111111,
        inode_bitmap=0x22222222,
        inode_table=0x33333333,
        free_blocks_count=0x4444,
        free_inodes_count=0x5555,
        used_dirs_count=0x6666,
        flags=7,
        itable_unused=0x8888,
    )


def test_64_byte_descriptor_joins_halves() -> None:
    raw = ext4_group_desc.build({**FIELDS, **HIGH})
    desc = decode_group_desc(raw + bytes(64), 128)  # larger descriptors: the rest is ignored
    assert desc.block_bitmap == 1 << 32 | 0x11111111
    assert desc.inode_table == 3 << 32 | 0x33333333
    assert desc.free_inodes_count == 5 << 16 | 0x5555
    assert desc.itable_unused == 7 << 16 | 0x8888
    # Read as a 32-byte descriptor, the high halves do not exist.
    assert decode_group_desc(raw, 32).inode_table == 0x33333333


GEO = Geometry(
    block_size=1024,
    blocks_count=100 * 8192 + 1,
    first_data_block=1,
    blocks_per_group=8192,
    inodes_per_group=1024,
    inodes_count=100 * 1024,
    inode_size=256,
    first_ino=11,
    desc_size=32,
    groups_count=100,
    first_meta_bg=100,
    backup_bgs=(0, 0),
    features=frozenset({"sparse_super"}),
)


def test_superblock_backups() -> None:
    assert [g for g in range(100) if group_has_super(GEO, g)] == [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]
    plain = dataclasses.replace(GEO, features=frozenset())
    assert all(group_has_super(plain, g) for g in range(100))
    two = dataclasses.replace(GEO, features=frozenset({"sparse_super2"}), backup_bgs=(1, 99))
    assert [g for g in range(100) if group_has_super(two, g)] == [0, 1, 99]


def test_descriptor_locations() -> None:
    assert desc_blocks_count(GEO) == 4  # 32 per 1 KiB block
    assert desc_location(GEO, 0) == (2, 0)
    assert desc_location(GEO, 33) == (3, 32)
    meta = dataclasses.replace(
        GEO, first_meta_bg=1, features=frozenset({"sparse_super", "meta_bg"})
    )
    assert desc_location(meta, 31) == (2, 31 * 32)  # below s_first_meta_bg: the classic table
    # Meta group 1 starts at group 32 (no backup there), meta group 3 at group 96.
    assert desc_location(meta, 40) == (1 + 32 * 8192, 8 * 32)
    assert desc_location(meta, 96) == (1 + 96 * 8192, 0)
    assert desc_location(dataclasses.replace(meta, features=frozenset({"meta_bg"})), 96) == (
        1 + 96 * 8192 + 1,  # without sparse_super every group has a backup to skip
        0,
    )
