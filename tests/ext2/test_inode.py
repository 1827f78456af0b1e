"""Inode records: offsets, joined halves, timestamps, device numbers, i_extra_isize checks."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from uvfs import FSError
from uvfs_fs.ext2.inode import (
    EXT4_HUGE_FILE_FL,
    decode_inode,
    decode_time,
    ext2_inode,
    ext2_inode_large_extra,
)

from .test_superblock import offsets


def test_sizes_and_offsets() -> None:
    assert ext2_inode.sizeof() == 128
    assert ext2_inode_large_extra.sizeof() == 32
    found = offsets(ext2_inode)
    assert (found["i_mode"], found["i_size"], found["i_mtime"], found["i_flags"]) == (
        0,
        4,
        0x10,
        0x20,
    )
    assert (found["i_block"], found["i_generation"], found["i_size_high"]) == (0x28, 0x64, 0x6C)
    assert (found["l_i_blocks_hi"], found["l_i_uid_high"], found["l_i_checksum_lo"]) == (
        0x74,
        0x78,
        0x7C,
    )
    extra = {k: v + 0x80 for k, v in offsets(ext2_inode_large_extra).items()}
    assert (extra["i_ctime_extra"], extra["i_crtime"], extra["i_projid"]) == (0x84, 0x90, 0x9C)


def raw_inode(extra_isize: int | None = 32, size: int = 256, **fields: int | bytes) -> bytes:
    values = {sub.name: 0 for sub in ext2_inode.defersubcon.subcons}
    values.update(i_block=bytes(60), i_mode=stat.S_IFREG | 0o644, i_links_count=1)
    values.update({k: v for k, v in fields.items() if k in values})
    raw = ext2_inode.build(values)
    if extra_isize is not None:
        extra = {sub.name: 0 for sub in ext2_inode_large_extra.defersubcon.subcons}
        extra.update({k: v for k, v in fields.items() if k in extra}, i_extra_isize=extra_isize)
        raw += ext2_inode_large_extra.build(extra)
    return raw.ljust(size, b"\0")


def test_round_trip() -> None:
    raw = raw_inode(i_uid=7, i_size=1234, i_block=bytes(range(60)))
    assert ext2_inode.build(ext2_inode.parse(raw[:128])) == raw[:128]


def test_halves_are_joined() -> None:
    raw = raw_inode(
        i_uid=0x1234,
        l_i_uid_high=0x5,
        i_gid=0x4321,
        l_i_gid_high=0x6,
        i_size=0x89ABCDEF,
        i_size_high=0x2,
        i_file_acl=0x1000,
        l_i_file_acl_high=0x3,
        i_blocks=0x10,
        l_i_blocks_hi=0x1,
    )
    inode = decode_inode(raw, 12, huge_file=True, block_size=4096)
    assert (inode.uid, inode.gid) == (0x51234, 0x64321)
    assert inode.size == 0x2_89ABCDEF
    assert inode.file_acl == 0x3_00001000
    # i_size_high of anything but a regular file was i_dir_acl: only large_dir revives it.
    folder = raw_inode(i_mode=stat.S_IFDIR | 0o755, i_size=4096, i_size_high=7)
    assert decode_inode(folder, 12, huge_file=True, block_size=4096).size == 4096
    assert decode_inode(folder, 12, huge_file=True, block_size=4096, large_dir=True).size == (
        7 << 32 | 4096
    )
    # Without 64bit (and on Hurd, whose h_i_mode_high sits there) the high half is not used.
    narrow = decode_inode(raw, 12, huge_file=True, block_size=4096, has_64bit=False)
    assert narrow.file_acl == 0x1000
    assert inode.blocks_512 == 1 << 32 | 0x10
    # Without huge_file, l_i_blocks_hi is not part of the count.
    assert decode_inode(raw, 12, huge_file=False, block_size=4096).blocks_512 == 0x10


def test_huge_file_flag_counts_fs_blocks() -> None:
    raw = raw_inode(i_blocks=3, i_flags=EXT4_HUGE_FILE_FL)
    assert decode_inode(raw, 12, huge_file=True, block_size=4096).blocks_512 == 3 * 8


def test_decode_time() -> None:
    assert decode_time(5, None) == 5 * 10**9
    assert decode_time(0xFFFFFF9C, None) == -100 * 10**9  # signed without an extra word
    assert decode_time(0xFFFFFF9C, 0) == -100 * 10**9
    assert decode_time(0x83AA7E80, 1) == 2208988800 * 10**9  # epoch bits extend past 2038
    assert decode_time(0, 999_999_999 << 2 | 3) == (3 << 32) * 10**9 + 999_999_999


def test_times_exist_only_within_extra_isize() -> None:
    fields = dict(i_mtime=10, i_mtime_extra=7 << 2, i_ctime=20, i_ctime_extra=9 << 2, i_crtime=30)
    full = decode_inode(raw_inode(32, **fields), 12, huge_file=False, block_size=1024)
    assert (full.mtime_ns, full.ctime_ns, full.crtime_ns) == (
        10 * 10**9 + 7,
        20 * 10**9 + 9,
        30 * 10**9,
    )
    # i_extra_isize 8 covers i_ctime_extra (0x84) but not i_mtime_extra (0x88).
    part = decode_inode(raw_inode(8, **fields), 12, huge_file=False, block_size=1024)
    assert (part.mtime_ns, part.ctime_ns, part.crtime_ns) == (10 * 10**9, 20 * 10**9 + 9, 0)
    small = decode_inode(raw_inode(None, 128, **fields), 12, huge_file=False, block_size=1024)
    assert (small.mtime_ns, small.xattr_ibody) == (10 * 10**9, b"")
    assert len(full.xattr_ibody) == 256 - 128 - 32


@pytest.mark.parametrize("extra_isize", [6, 160, 0xFFFF])
def test_bad_extra_isize(extra_isize: int) -> None:
    with pytest.raises(FSError) as info:
        decode_inode(raw_inode(extra_isize), 12, huge_file=False, block_size=1024)
    assert info.value.errno == errno.EUCLEAN  # ext4_iget: "bad extra_isize"


def test_device_numbers() -> None:
    def rdev(mode: int, word0: int, word1: int) -> int:
        block = word0.to_bytes(4, "little") + word1.to_bytes(4, "little") + bytes(52)
        return decode_inode(
            raw_inode(i_mode=mode, i_block=block), 12, huge_file=False, block_size=1024
        ).rdev

    assert rdev(stat.S_IFCHR, 0x0103, 0) == os.makedev(1, 3)  # old: major << 8 | minor
    new = (70000 & 0xFF) | (300 << 8) | ((70000 & ~0xFF) << 12)
    assert rdev(stat.S_IFBLK, 0, new) == os.makedev(300, 70000)
    assert rdev(stat.S_IFREG, 0x0103, 0) == 0
