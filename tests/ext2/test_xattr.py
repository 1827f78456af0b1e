"""Extended attribute tables from byte strings: in-inode, in a block, names and ACLs."""

from __future__ import annotations

import errno
import struct

import pytest

from uvfs import FSError
from uvfs_fs.ext2.xattr import (
    EXT2_EXT_ATTR_MAGIC,
    EXT4_XATTR_INDEX_SYSTEM,
    ValueInode,
    acl_to_xattr,
    ext2_ext_attr_entry,
    ext2_ext_attr_header,
    ibody_value,
    parse_block,
    parse_ibody,
)

from .images import ACL_ACCESS


def table(entries: list[tuple[int, bytes, bytes]], size: int, first: int) -> bytes:
    """Entries from `first`, values packed from the end of a `size`-byte region."""
    heads, values = b"", b""
    for index, name, value in entries:
        values = value.ljust(-(-len(value) // 4) * 4, b"\0") + values
        fields = dict(
            e_name_len=len(name),
            e_name_index=index,
            e_value_offs=size - len(values),
            e_value_inum=0,
            e_value_size=len(value),
            e_hash=0,
        )
        heads += (ext2_ext_attr_entry.build(fields) + name).ljust(
            -(-(16 + len(name)) // 4) * 4, b"\0"
        )
    region = bytearray(size)
    region[first : first + len(heads)] = heads
    region[size - len(values) :] = values
    return bytes(region)


def test_record_sizes() -> None:
    assert ext2_ext_attr_header.sizeof() == 32
    assert ext2_ext_attr_entry.sizeof() == 16


def test_in_inode_attributes() -> None:
    entries = [
        (1, b"color", b"blue"),
        (4, b"t", b"x" * 5),
        (6, b"selinux", b"ctx"),
        (7, b"data", b""),
    ]
    area = struct.pack("<I", EXT2_EXT_ATTR_MAGIC) + table(entries, 160, 0)
    # system.data (index 7, inline data) is hidden as the kernel hides it.
    assert parse_ibody(area) == [
        (b"user.color", b"blue"),
        (b"trusted.t", b"xxxxx"),
        (b"security.selinux", b"ctx"),
    ]
    assert parse_ibody(bytes(92)) == []  # no magic: no attributes
    assert parse_ibody(b"") == []
    assert ibody_value(area, EXT4_XATTR_INDEX_SYSTEM, b"data") == b""
    assert ibody_value(area, 1, b"color") == b"blue"
    assert ibody_value(area, 1, b"colour") is None
    assert ibody_value(bytes(92), EXT4_XATTR_INDEX_SYSTEM, b"data") is None


def test_value_in_an_inode() -> None:
    """ea_inode: an entry with e_value_inum names the inode and size; e_value_offs is
    not used (it may hold anything), so the filesystem reads the value from the inode."""
    area = corrupt(bytearray(GOOD), 4 + 4, struct.pack("<I", 99))
    area = corrupt(bytearray(area), 4 + 2, struct.pack("<H", 0xFFFF))
    assert parse_ibody(area) == [(b"user.a", ValueInode(99, 5, 0, b"a", True))]


def test_block_attributes() -> None:
    header = ext2_ext_attr_header.build(
        dict(
            h_magic=EXT2_EXT_ATTR_MAGIC,
            h_refcount=1,
            h_blocks=1,
            h_hash=0,
            h_checksum=0,
            h_reserved=[0] * 3,
        )
    )
    body = table([(1, b"big", bytes(range(200))), (10, b"hurd", b"h")], 1024, 32)
    assert parse_block(header + body[32:]) == [
        (b"user.big", bytes(range(200))),
        (b"gnu.hurd", b"h"),
    ]
    with pytest.raises(FSError):
        parse_block(bytes(32) + body[32:])


def test_acl_is_shown_in_the_kernel_format() -> None:
    # ext4 stores short entries (tag, perm) for the owner, group, mask and other tags.
    disk = struct.pack("<I", 1) + struct.pack("<HH", 1, 6) + struct.pack("<HHI", 2, 4, 1000)
    disk += struct.pack("<HH", 4, 4) + struct.pack("<HH", 0x10, 4) + struct.pack("<HH", 0x20, 0)
    assert acl_to_xattr(disk) == ACL_ACCESS
    area = struct.pack("<I", EXT2_EXT_ATTR_MAGIC) + table([(2, b"", disk)], 92, 0)
    assert parse_ibody(area) == [(b"system.posix_acl_access", ACL_ACCESS)]


@pytest.mark.parametrize(
    "disk",
    [
        struct.pack("<I", 2),  # wrong version
        struct.pack("<I", 1) + struct.pack("<HH", 0x40, 0),  # unknown tag
        struct.pack("<I", 1) + struct.pack("<HH", 2, 4),  # named entry without its id
        struct.pack("<I", 1) + b"\x01",
    ],
)
def test_bad_acl(disk: bytes) -> None:
    with pytest.raises(FSError) as info:
        acl_to_xattr(disk)
    assert info.value.errno == errno.EIO


def corrupt(area: bytearray, offset: int, data: bytes) -> bytes:
    area[offset : offset + len(data)] = data
    return bytes(area)


GOOD = struct.pack("<I", EXT2_EXT_ATTR_MAGIC) + table([(1, b"a", b"value")], 60, 0)


@pytest.mark.parametrize(
    "area",
    [
        corrupt(bytearray(GOOD), 4 + 2, struct.pack("<H", 58)),  # value runs past the area
        corrupt(bytearray(GOOD), 4 + 2, struct.pack("<H", 4)),  # value over the entry table
        corrupt(bytearray(GOOD), 4, b"\xff"),  # name runs off the area
        GOOD[:24],  # no end marker
    ],
)
def test_malformed_tables(area: bytes) -> None:
    with pytest.raises(FSError) as info:
        parse_ibody(area)
    assert info.value.errno == errno.EUCLEAN  # EFSCORRUPTED, as ext4's xattr checks
