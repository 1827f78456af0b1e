"""Editing directory blocks in place: adding, removing and retargeting names (sans-I/O).

The rules are the kernel's (fs/ext2/dir.c): a new name goes into the first record with
room, either an unused record (inode 0) big enough, or the slack after a used record's
name, which is split off into a record of its own; a removed name is merged into the
record before it (its rec_len grows over it), or, first in its block, just marked unused.
So records never move, every block stays a chain ending exactly at the block's end, and
a name is always 255 bytes or less (ENAMETOOLONG otherwise: fuse2fs corrupts its directory
on a 256-byte name). The functions take a `bytearray` holding one directory block and
change it in place; `dirent` parses what they write.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from uvfs_fs.ext2.dirent import (
    EXT2_FT_DIR,
    EXT2_NAME_LEN,
    decode_rec_len,
    dirent_rec_len,
    encode_rec_len,
    ext2_dir_entry_2,
)

from uvfs._api import FSError

_HEAD = ext2_dir_entry_2.size  # 8 bytes before the name


def check_name(name: bytes) -> None:
    """Refuse a name no directory record can hold."""
    if len(name) > EXT2_NAME_LEN:
        raise FSError(errno.ENAMETOOLONG)
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FSError(errno.EINVAL, f"bad file name {name!r}")


def _records(block: bytearray) -> Iterator[tuple[int, int, int, int]]:
    """(offset, inode, rec_len, name_len) of every record, used or not, in order."""
    size = len(block)
    offset = 0
    while offset < size:
        inode, raw, name_len, _ = ext2_dir_entry_2.unpack_from(block, offset)
        rec_len = decode_rec_len(raw, size)
        if rec_len < _HEAD or rec_len & 3 or offset + rec_len > size:
            raise FSError(errno.EIO, f"directory record at {offset}: bad rec_len {raw}")
        yield offset, inode, rec_len, name_len
        offset += rec_len


def _put(block: bytearray, offset: int, inode: int, name: bytes, file_type: int, rec_len: int):
    size = len(block)
    ext2_dir_entry_2.pack_into(
        block, offset, inode, encode_rec_len(rec_len, size), len(name), file_type
    )
    block[offset + _HEAD : offset + _HEAD + len(name)] = name


def _name_at(block: bytearray, offset: int, name_len: int) -> bytes:
    return bytes(block[offset + _HEAD : offset + _HEAD + name_len])


def empty_block(block_size: int) -> bytearray:
    """A directory block holding no name: one unused record spanning it."""
    block = bytearray(block_size)
    _put(block, 0, 0, b"", 0, block_size)
    return block


def first_block(ino: int, parent: int, block_size: int, *, filetype: bool) -> bytearray:
    """The first block of a new directory: "." (itself) and ".." (`parent`)."""
    block = bytearray(block_size)
    ft = EXT2_FT_DIR if filetype else 0
    _put(block, 0, ino, b".", ft, dirent_rec_len(1))
    _put(block, dirent_rec_len(1), parent, b"..", ft, block_size - dirent_rec_len(1))
    return block


def room(block: bytearray) -> int:
    """The largest record a new name could take in `block` (compare with dirent_rec_len)."""
    best = 0
    for _, inode, rec_len, name_len in _records(block):
        best = max(best, rec_len - dirent_rec_len(name_len) if inode else rec_len)
    return best


def add_entry(block: bytearray, inode: int, name: bytes, file_type: int) -> bool:
    """Add `name` -> `inode` in the first record with room; False when the block is full."""
    need = dirent_rec_len(len(name))
    for offset, used, rec_len, name_len in _records(block):
        if not used and rec_len >= need:
            _put(block, offset, inode, name, file_type, rec_len)
            return True
        actual = dirent_rec_len(name_len)
        if used and rec_len - actual >= need:
            ext2_dir_entry_2.pack_into(
                block, offset, used, encode_rec_len(actual, len(block)), name_len, block[offset + 7]
            )
            _put(block, offset + actual, inode, name, file_type, rec_len - actual)
            return True
    return False


def remove_entry(block: bytearray, name: bytes) -> int | None:
    """Remove `name`, merging its record into the one before; its inode, or None if absent."""
    previous = None
    for offset, inode, rec_len, name_len in _records(block):
        if inode and name_len == len(name) and _name_at(block, offset, name_len) == name:
            if previous is None:
                ext2_dir_entry_2.pack_into(
                    block, offset, 0, encode_rec_len(rec_len, len(block)), 0, 0
                )
            else:
                prev_offset, prev_len = previous
                merged = encode_rec_len(prev_len + rec_len, len(block))
                block[prev_offset + 4 : prev_offset + 6] = merged.to_bytes(2, "little")
            return inode
        previous = offset, rec_len
    return None


def retarget_entry(block: bytearray, name: bytes, inode: int, file_type: int) -> bool:
    """Point the existing `name` at `inode` (rename over a target); False if absent."""
    for offset, used, _, name_len in _records(block):
        if used and name_len == len(name) and _name_at(block, offset, name_len) == name:
            block[offset : offset + 4] = inode.to_bytes(4, "little")
            block[offset + 7] = file_type
            return True
    return False


def set_dotdot(block: bytearray, parent: int) -> None:
    """Point ".." (the second record of a directory's first block) at `parent`."""
    records = _records(block)
    next(records)
    offset, _, _, name_len = next(records)
    if _name_at(block, offset, name_len) != b"..":
        raise FSError(errno.EIO, "directory's first block has no '..' second")
    block[offset : offset + 4] = parent.to_bytes(4, "little")
