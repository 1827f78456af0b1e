"""Inode slots written back: decode(encode(inode)) is the inode, and untouched bytes stay."""

from __future__ import annotations

import os
import random

import pytest

from uvfs_fs.ext2.inode import decode_inode
from uvfs_fs.ext2.inode_build import blank_slot, encode_inode, encode_rdev, encode_time


@pytest.mark.parametrize("size", [128, 256])
def test_round_trip(size: int) -> None:
    rng = random.Random(size)
    slot = bytearray(blank_slot(size))
    slot[0x24:0x28] = b"VERS"  # l_i_version: not modelled, must survive
    base = decode_inode(bytes(slot), 12, huge_file=True, block_size=4096)
    for _ in range(200):
        ns = size > 128
        times = [rng.randrange(-(2**31), 2**31 + (3 << 32) * ns) * 10**9 for _ in range(3)]
        if ns:
            times = [t + rng.randrange(10**9) for t in times]
        inode = base._replace(
            mode=0o100644,
            uid=rng.randrange(2**32),
            gid=rng.randrange(2**32),
            size=rng.randrange(2**40),
            links_count=rng.randrange(1, 65000),
            blocks_512=rng.randrange(2**40),
            atime_ns=times[0],
            mtime_ns=times[1],
            ctime_ns=times[2],
            flags=rng.randrange(2**18),  # below EXT4_HUGE_FILE_FL, which rescales i_blocks
            generation=rng.randrange(2**32),
            file_acl=rng.randrange(2**40),
            i_block=rng.randbytes(60),
        )
        raw = encode_inode(inode, bytes(slot), huge_file=True)
        assert raw[0x24:0x28] == b"VERS"
        assert decode_inode(raw, 12, huge_file=True, block_size=4096) == inode


def test_times_clamp_without_extra_fields() -> None:
    assert encode_time(-(2**40) * 10**9, extra=False) == (2**31, 0)
    assert encode_time(2**40 * 10**9, extra=False) == (2**31 - 1, 0)
    assert encode_time(2**32 * 10**9 + 5, extra=True) == (0, 1 | 5 << 2)


def test_device_numbers() -> None:
    assert encode_rdev(os.makedev(1, 3)) == bytes([3, 1, 0, 0]) + bytes(4)
    new = encode_rdev(os.makedev(300, 70000))
    assert new[:4] == bytes(4)
    slot = bytearray(blank_slot(256))
    slot[0:2] = (0o020600).to_bytes(2, "little")
    slot[0x28:0x30] = new
    assert decode_inode(bytes(slot), 5, huge_file=False, block_size=1024).rdev == os.makedev(
        300, 70000
    )
