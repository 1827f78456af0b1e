"""ZPL attributes: the old znode_phys_t bonus, SA attributes, device numbers."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from uvfs import FSError
from uvfs_fs.zfs.znode import ZNODE_PHYS_SIZE, linux_rdev, parse_znode_phys, znode_from_sa


def znode_phys(bo: str, *, mode: int, size: int, tail: bytes = b"", rdev: int = 0) -> bytes:
    words = [1, 2, 3, 4, 5, 6, 7, 8, 99, mode, size, 4, 2, 0, rdev, 0x10, 1000, 100, 0, 0, 0, 0]
    return struct.pack(f"{bo}22Q", *words).ljust(ZNODE_PHYS_SIZE, b"\0") + tail


@pytest.mark.parametrize("bo", ["<", ">"])
def test_old_znode_fields(bo: str) -> None:
    z = parse_znode_phys(znode_phys(bo, mode=0o100644, size=12345), bo)
    assert (z.mode, z.size, z.uid, z.gid, z.links, z.parent) == (0o100644, 12345, 1000, 100, 2, 4)
    assert (z.atime, z.mtime, z.ctime, z.crtime) == ((1, 2), (3, 4), (5, 6), (7, 8))
    assert (z.gen, z.flags, z.xattr) == (99, 0x10, 0)
    assert z.symlink is None


def test_old_znode_inline_symlink() -> None:
    bonus = znode_phys("<", mode=0o120777, size=7, tail=b"../file")
    assert parse_znode_phys(bonus, "<").symlink == b"../file"


def test_old_znode_short_bonus() -> None:
    with pytest.raises(FSError) as e:
        parse_znode_phys(bytes(100), "<")
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("bo", ["<", ">"])
def test_from_sa(bo: str) -> None:
    u64 = struct.Struct(f"{bo}Q").pack
    attrs = {
        "ZPL_MODE": u64(0o020600),
        "ZPL_SIZE": u64(0),
        "ZPL_LINKS": u64(1),
        "ZPL_RDEV": u64(4 << 32 | 64),
        "ZPL_MTIME": struct.pack(f"{bo}2Q", 1700000000, 5),
        "ZPL_DXATTR": b"nvlist",
    }
    z = znode_from_sa(attrs, bo)
    assert (z.mode, z.links, z.mtime, z.uid, z.atime) == (0o020600, 1, (1700000000, 5), 0, (0, 0))
    assert linux_rdev(z.rdev) == os.makedev(4, 64)
    assert z.dxattr == b"nvlist" and z.symlink is None


def test_from_sa_needs_mode() -> None:
    with pytest.raises(FSError):
        znode_from_sa({"ZPL_SIZE": bytes(8)}, "<")


def test_rdev_small_values_are_linux_dev_t() -> None:
    assert linux_rdev(os.makedev(8, 1)) == os.makedev(8, 1)  # as zfs-fuse stores it
    assert linux_rdev(os.makedev(259, 70000)) == os.makedev(259, 70000)
