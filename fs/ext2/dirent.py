"""Directory entries: the linked list of ext2_dir_entry(_2) records filling a directory block.

Each record is an 8-byte header (inode, rec_len, name_len, file_type) and the name,
padded to 4 bytes; rec_len chains to the next record and the last one reaches the block's
end. inode 0 marks an unused record. Without the filetype feature the file_type byte is the
high half of a 16-bit name_len, always 0 for names of at most 255 bytes.

Indexed (htree) directories need no special case when read by linear scan: the index root
hides inside the rec_len of "..", index nodes are one unused record spanning the block,
and the metadata_csum tail is an unused 12-byte record.

Damaged blocks are read three ways: `iter_dirents` (the writer) refuses a block with any
malformed record; `scan_dirents` reads one as the kernel's listings do (the records before
the first bad one); `find_dirent` searches one as the kernel's lookups do (following
rec_len alone, checking only the record that matches).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator

from uvfs import FSError

# file_type values
EXT2_FT_UNKNOWN = 0
EXT2_FT_REG_FILE = 1
EXT2_FT_DIR = 2
EXT2_FT_CHRDEV = 3
EXT2_FT_BLKDEV = 4
EXT2_FT_FIFO = 5
EXT2_FT_SOCK = 6
EXT2_FT_SYMLINK = 7

EXT2_NAME_LEN = 255
EXT4_MAX_REC_LEN = 0xFFFF  # rec_len of a whole 64 KiB block

# ext2_dir_entry_2: inode (0x0), rec_len (0x4), name_len (0x6), file_type (0x7), name (0x8)
ext2_dir_entry_2 = struct.Struct("<IHBB")


def dirent_rec_len(name_len: int) -> int:
    """The smallest rec_len of a record with a `name_len`-byte name (EXT2_DIR_REC_LEN)."""
    return (ext2_dir_entry_2.size + name_len + 3) & ~3


def decode_rec_len(raw: int, block_size: int) -> int:
    """rec_len as stored -> bytes; 64 KiB blocks need 17 bits, folded into the low two."""
    if block_size < 65536:
        return raw
    if raw in (EXT4_MAX_REC_LEN, 0):
        return block_size
    return (raw & 0xFFFC) | ((raw & 3) << 16)


def encode_rec_len(length: int, block_size: int) -> int:
    """bytes -> rec_len as stored (the inverse of `decode_rec_len`)."""
    if block_size < 65536:
        return length
    if length == block_size:
        return EXT4_MAX_REC_LEN
    return (length & 0xFFFC) | ((length >> 16) & 3)


def pack_dirent(inode: int, name: bytes, file_type: int, rec_len: int, block_size: int) -> bytes:
    """One record, padded with zeros to `rec_len` bytes."""
    head = ext2_dir_entry_2.pack(inode, encode_rec_len(rec_len, block_size), len(name), file_type)
    return (head + name).ljust(rec_len, b"\0")


def iter_dirents(block: bytes, *, filetype: bool) -> Iterator[tuple[int, bytes, int]]:
    """The used records of one directory block, in order, as (inode, name, file_type).

    Every record must lie inside the block and hold its name, so the walk ends after at
    most len(block) / 8 steps.

    Raises:
        FSError: EIO for a record that is malformed (rec_len 0, unaligned or past the
            block's end, name longer than the record, "/" or NUL in a name).
    """
    size = len(block)
    offset = 0
    while offset < size:
        if offset + ext2_dir_entry_2.size > size:
            raise FSError(errno.EIO, f"directory record at {offset} cut by the block's end")
        inode, raw_len, name_len, file_type = ext2_dir_entry_2.unpack_from(block, offset)
        rec_len = decode_rec_len(raw_len, size)
        if (
            rec_len < ext2_dir_entry_2.size
            or rec_len & 3
            or offset + rec_len > size
            or ext2_dir_entry_2.size + name_len > rec_len
        ):
            raise FSError(errno.EIO, f"directory record at {offset}: bad rec_len {raw_len}")
        if inode:
            start = offset + ext2_dir_entry_2.size
            name = block[start : start + name_len]
            if not name or b"/" in name or b"\0" in name:
                raise FSError(errno.EIO, f"directory record at {offset}: bad name {name!r}")
            yield inode, name, file_type if filetype else EXT2_FT_UNKNOWN
        offset += rec_len


def _record_problem(block: bytes, offset: int, inodes_count: int) -> str | None:
    """What ext4_check_dir_entry finds wrong with the record at `offset`, or None: a
    rec_len under 12, unaligned, short of its name, past the block's end or ending in
    its last 12 bytes; an inode number past s_inodes_count."""
    size = len(block)
    if offset + ext2_dir_entry_2.size > size:
        return f"record at {offset} cut by the block's end"
    inode, raw_len, name_len, _ = ext2_dir_entry_2.unpack_from(block, offset)
    rec_len = decode_rec_len(raw_len, size)
    end = offset + rec_len
    if (
        rec_len < dirent_rec_len(1)
        or rec_len & 3
        or rec_len < dirent_rec_len(name_len)
        or end > size
        or (end > size - dirent_rec_len(1) and end != size)
    ):
        return f"record at {offset}: bad rec_len {raw_len}"
    if inode > inodes_count:
        return f"record at {offset}: inode {inode} out of bounds"
    return None


def scan_dirents(
    block: bytes, *, filetype: bool, inodes_count: int
) -> tuple[list[tuple[int, bytes, int]], str | None]:
    """The records ext4's readdir shows from one block, and what ended it early.

    The first record `_record_problem` finds wrong ends the block: the records before it
    are kept, the rest skipped, as the kernel's listings skip the rest of such a block.
    Names are kept whatever their bytes (the VFS judges them: filesystem.py).

    Returns:
        (inode, name, file_type) of the kept records, in order, and what ended the block
        early, or None.
    """
    size = len(block)
    records: list[tuple[int, bytes, int]] = []
    offset = 0
    while offset < size:
        problem = _record_problem(block, offset, inodes_count)
        if problem is not None:
            return records, problem
        inode, raw_len, name_len, file_type = ext2_dir_entry_2.unpack_from(block, offset)
        if inode:
            start = offset + ext2_dir_entry_2.size
            name = block[start : start + name_len]
            records.append((inode, name, file_type if filetype else EXT2_FT_UNKNOWN))
        offset += decode_rec_len(raw_len, size)
    return records, None


def find_dirent(block: bytes, matches: Callable[[bytes], bool], *, inodes_count: int) -> int | None:
    """The inode of the first used record of `block` whose name `matches`, or None, found
    as a lookup finds it (ext4_search_dir): records are followed by rec_len with no other
    check, and only the matching one is checked in full.

    Raises:
        FSError: EUCLEAN when the matching record is malformed or a rec_len of 0 stops
            the walk (the kernel's lookup fails there).
    """
    size = len(block)
    offset = 0
    while offset < size - ext2_dir_entry_2.size:
        inode, raw_len, name_len, _ = ext2_dir_entry_2.unpack_from(block, offset)
        start = offset + ext2_dir_entry_2.size
        if inode and start + name_len <= size and matches(block[start : start + name_len]):
            problem = _record_problem(block, offset, inodes_count)
            if problem is not None:
                raise FSError(errno.EUCLEAN, problem)
            return inode
        rec_len = decode_rec_len(raw_len, size)
        if rec_len == 0:
            raise FSError(errno.EUCLEAN, f"record at {offset}: rec_len 0")
        offset += rec_len
    return None
