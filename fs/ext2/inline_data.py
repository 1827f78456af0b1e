"""Inline data: files, directories and symlinks kept inside their inode (ext4 inline_data).

An inode with EXT4_INLINE_DATA_FL keeps its data in i_block (60 bytes) followed by the
value of its in-inode ``system.data`` attribute (empty while the data fits in i_block); the
inline area is the two joined, and i_size bytes of it are the file (or the symlink target);
as in the kernel, a file whose i_size runs past the area reads zeros there.
The attribute must be present, in the inode body, even when empty.

An inline directory starts with the parent's inode number (4 bytes) in place of the "."
and ".." records; i_block's other 56 bytes are a chain of ordinary directory records, and
the attribute's value, when not empty, is a second chain (Documentation/filesystems/ext4/
inlinedata.rst; fs/ext4/inline.c). Both chains are walked by `scan_dirents`: as in the
kernel's listing, a record with rec_len 0 or running past its area ends the listing.
"""

from __future__ import annotations

import errno

from uvfs import FSError
from uvfs_fs.ext2 import xattr
from uvfs_fs.ext2.dirent import scan_dirents
from uvfs_fs.ext2.inode import Inode

EXT4_MIN_INLINE_DATA_SIZE = 60  # i_block
EXT4_INLINE_DOTDOT_SIZE = 4  # an inline directory's parent inode number
EXT4_XATTR_SYSTEM_DATA = (xattr.EXT4_XATTR_INDEX_SYSTEM, b"data")


def inline_area(inode: Inode) -> bytes:
    """i_block and the system.data value: all of `inode`'s inline area.

    Raises:
        FSError: EIO when the inode has no system.data attribute.
    """
    extra = xattr.ibody_value(inode.xattr_ibody, *EXT4_XATTR_SYSTEM_DATA)
    if extra is None:
        raise FSError(errno.EIO, f"inode {inode.ino}: inline data without system.data")
    return inode.i_block + extra


def inline_dirents(
    inode: Inode, *, filetype: bool, inodes_count: int
) -> tuple[list[tuple[int, bytes, int]], str | None]:
    """An inline directory's records as the kernel's ext4_read_inline_dir lists them: ".."
    first (from the parent number), then the used records of i_block and of system.data,
    in order, up to the first bad record, which ends the listing without an error.

    Returns:
        (inode, name, file_type) of the listed records, and what ended them early, or None.
    """
    area = inline_area(inode)
    records = [(int.from_bytes(area[:EXT4_INLINE_DOTDOT_SIZE], "little"), b"..", 0)]
    for chain in (
        area[EXT4_INLINE_DOTDOT_SIZE:EXT4_MIN_INLINE_DATA_SIZE],
        area[EXT4_MIN_INLINE_DATA_SIZE:],
    ):
        kept, problem = scan_dirents(chain, filetype=filetype, inodes_count=inodes_count)
        records += kept
        if problem is not None:
            return records, problem
    return records, None
