"""The superblock record, feature names and geometry checks, from byte strings and mke2fs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from construct import Container

from uvfs import Refusal
from uvfs_fs.ext2.superblock import (
    SUPERBLOCK_OFFSET,
    SUPPORTED_INCOMPAT,
    ext2_super_block,
    ext_generation,
    feature_names,
    geometry,
)

# Offsets from e2fsprogs' lib/ext2fs/ext2_fs.h (its /*xxx*/ markers and the fields between).
OFFSETS = {
    "s_inodes_count": 0x000,
    "s_free_inodes_count": 0x010,
    "s_log_block_size": 0x018,
    "s_blocks_per_group": 0x020,
    "s_wtime": 0x030,
    "s_magic": 0x038,
    "s_state": 0x03A,
    "s_lastcheck": 0x040,
    "s_rev_level": 0x04C,
    "s_def_resuid": 0x050,
    "s_first_ino": 0x054,
    "s_inode_size": 0x058,
    "s_feature_compat": 0x05C,
    "s_feature_incompat": 0x060,
    "s_feature_ro_compat": 0x064,
    "s_uuid": 0x068,
    "s_volume_name": 0x078,
    "s_last_mounted": 0x088,
    "s_algorithm_usage_bitmap": 0x0C8,
    "s_reserved_gdt_blocks": 0x0CE,
    "s_journal_uuid": 0x0D0,
    "s_journal_inum": 0x0E0,
    "s_hash_seed": 0x0EC,
    "s_def_hash_version": 0x0FC,
    "s_desc_size": 0x0FE,
    "s_default_mount_opts": 0x100,
    "s_first_meta_bg": 0x104,
    "s_jnl_blocks": 0x10C,
    "s_blocks_count_hi": 0x150,
    "s_min_extra_isize": 0x15C,
    "s_flags": 0x160,
    "s_mmp_block": 0x168,
    "s_raid_stripe_width": 0x170,
    "s_log_groups_per_flex": 0x174,
    "s_kbytes_written": 0x178,
    "s_snapshot_inum": 0x180,
    "s_snapshot_list": 0x190,
    "s_first_error_block": 0x1A0,
    "s_first_error_line": 0x1C8,
    "s_last_error_ino": 0x1D0,
    "s_last_error_func": 0x1E0,
    "s_mount_opts": 0x200,
    "s_usr_quota_inum": 0x240,
    "s_overhead_clusters": 0x248,
    "s_backup_bgs": 0x24C,
    "s_encrypt_algos": 0x254,
    "s_encrypt_pw_salt": 0x258,
    "s_lpf_ino": 0x268,
    "s_checksum_seed": 0x270,
    "s_wtime_hi": 0x274,
    "s_encoding": 0x27C,
    "s_orphan_file_inum": 0x280,
    "s_reserved": 0x284,
    "s_checksum": 0x3FC,
}


def offsets(struct: object) -> dict[str, int]:
    """Each field's byte offset, from the sizes of the fields before it."""
    result, at = {}, 0
    for sub in struct.defersubcon.subcons:  # type: ignore[attr-defined]
        result[sub.name] = at
        at += sub.sizeof()
    return result


def test_size_and_offsets() -> None:
    assert ext2_super_block.sizeof() == 1024
    found = offsets(ext2_super_block)
    assert {name: found[name] for name in OFFSETS} == OFFSETS


@pytest.fixture(scope="module")
def raw_superblock(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    image = tmp_path_factory.mktemp("sb") / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "label", str(image), "16M"], check=True
    )
    return Path(image).read_bytes()[1024:2048]


def test_round_trip(raw_superblock: bytes) -> None:
    sb = ext2_super_block.parse(raw_superblock)
    assert ext2_super_block.build(sb) == raw_superblock
    assert sb.s_magic == 0xEF53
    assert sb.s_volume_name.rstrip(b"\0") == b"label"
    sb.s_volume_name = b"other".ljust(16, b"\0")
    rebuilt = ext2_super_block.build(sb)
    assert rebuilt[0x78:0x88] == b"other".ljust(16, b"\0")
    assert rebuilt[:0x78] == raw_superblock[:0x78]


def test_feature_names() -> None:
    assert feature_names(0x4 | 0x20, 0x2 | 0x40 | 0x80, 0x1 | 0x400) == [
        "has_journal",
        "dir_index",
        "filetype",
        "extent",
        "64bit",
        "sparse_super",
        "metadata_csum",
    ]
    assert feature_names(1 << 20, 1 << 5, 1 << 2) == ["FEATURE_C20", "FEATURE_I5", "FEATURE_R2"]
    assert "needs_recovery" not in SUPPORTED_INCOMPAT


def good(**changes: int) -> Container:
    """A minimal consistent revision 1 superblock: 4 groups of 1 KiB blocks, then `changes`."""
    sb = ext2_super_block.parse(bytes(1024))
    fields = {
        "s_magic": 0xEF53,
        "s_rev_level": 1,
        "s_inode_size": 256,
        "s_first_ino": 11,
        "s_blocks_count": 4 * 8192 + 1,
        "s_first_data_block": 1,
        "s_blocks_per_group": 8192,
        "s_inodes_per_group": 1024,
        "s_inodes_count": 4 * 1024,
        "s_feature_incompat": 0x2,
    }
    for name, value in {**fields, **changes}.items():
        sb[name] = value
    return sb


def test_geometry() -> None:
    geo = geometry(good(), 64 << 20)
    assert (geo.block_size, geo.groups_count, geo.desc_size, geo.descs_per_block) == (
        1024,
        4,
        32,
        32,
    )
    assert geo.features == {"filetype"}
    wide = geometry(good(s_feature_incompat=0x80, s_desc_size=64, s_blocks_count_hi=0), 64 << 20)
    assert wide.desc_size == 64
    # Revision 0: no feature words, 128-byte inodes, first inode 11, whatever the bytes say.
    old = geometry(
        good(s_rev_level=0, s_inode_size=0, s_first_ino=0, s_feature_incompat=-1 & 0xFFFFFFFF),
        64 << 20,
    )
    assert (old.inode_size, old.first_ino, old.features) == (128, 11, frozenset())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"s_rev_level": 2}, "unsupported ext2 revision 2"),
        ({"s_log_block_size": 7}, "corrupt ext2 superblock: block size 2^17"),
        ({"s_inode_size": 200}, "corrupt ext2 superblock: inode size 200"),
        ({"s_inode_size": 2048}, "corrupt ext2 superblock: inode size 2048"),
        (
            {"s_feature_incompat": 0x80, "s_desc_size": 48},
            "corrupt ext2 superblock: group descriptor size 48",
        ),
        (
            {"s_blocks_per_group": 0},
            "corrupt ext2 superblock: blocks or inodes per group out of range",
        ),
        (
            {"s_inodes_per_group": 9000},
            "corrupt ext2 superblock: blocks or inodes per group out of range",
        ),
        ({"s_inodes_count": 5}, "corrupt ext2 superblock: 5 inodes for 4 groups of 1024"),
        (
            {"s_first_data_block": 1 << 30},
            "corrupt ext2 superblock: first data block beyond the end",
        ),
        (
            {"s_feature_incompat": 0x1 | 0x8},
            "unsupported ext2 feature(s): compression, journal_dev",
        ),
    ],
)
def test_geometry_refusals(changes: dict[str, int], message: str) -> None:
    with pytest.raises(Refusal) as info:
        geometry(good(**changes), 64 << 20)
    assert str(info.value) == message


@pytest.mark.parametrize("fstype", ["ext2", "ext3", "ext4"])
def test_generation_as_blkid_names_it(tmp_path: Path, fstype: str) -> None:
    image = tmp_path / "img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", fstype, str(image), "8M"], check=True)
    raw = image.read_bytes()[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + 1024]
    blkid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(image)],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert ext_generation(raw) == blkid == fstype
