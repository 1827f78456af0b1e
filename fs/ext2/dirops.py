"""Editing directory blocks in place: adding, removing and retargeting names (sans-I/O).

The rules are the kernel's (fs/ext2/dir.c): a new name goes into the first record with
room, either an unused record (inode 0) big enough, or the slack after a used record's
name, which is split off into a record of its own; a removed name is merged into the
record before it (its rec_len grows over it), or, first in its block, just marked unused.
So records never move, every block stays a chain ending exactly at the block's end, and
a name is always 255 bytes or less (ENAMETOOLONG otherwise: fuse2fs corrupts its directory
on a 256-byte name). A `DirBlock` wraps a `bytearray` holding one directory block and
changes it in place; `dirent` parses what it writes.

On metadata_csum volumes a leaf block ends in a 12-byte checksum tail (`csum`) outside the
record chain: the chain ends `EXT2_DIR_TAIL_SIZE` bytes early, and the writer seals the
tail when it writes the block. A block read without one (an htree node whose index the
writer drops) gets one cut from its last record's slack when it is first edited.
"""

from __future__ import annotations

import errno

from uvfs import FSError
from uvfs_fs.ext2.csum import DIR_TAIL_HEAD, EXT2_DIR_TAIL_SIZE, has_dir_tail
from uvfs_fs.ext2.dirent import (
    EXT2_FT_DIR,
    EXT2_NAME_LEN,
    decode_rec_len,
    dirent_rec_len,
    encode_rec_len,
    ext2_dir_entry_2,
)

_HEAD = ext2_dir_entry_2.size  # 8 bytes before the name


def check_name(name: bytes) -> None:
    """Refuse a name no directory record can hold."""
    if len(name) > EXT2_NAME_LEN:
        raise FSError(errno.ENAMETOOLONG)
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FSError(errno.EINVAL, f"bad file name {name!r}")


def _records(block: bytearray, end: int) -> list[tuple[int, int, int, int]]:
    """(offset, inode, rec_len, name_len) of every record before `end`, used or not, in order.

    A tight loop over the raw bytes rather than a struct per record: every add and remove
    walks the whole block, so this is the directory code's inner loop.
    """
    size = len(block)
    wide = size >= 65536
    out = []
    offset = 0
    while offset < end:
        if offset + _HEAD > end:
            raise FSError(errno.EIO, f"directory record at {offset} cut by the block's end")
        raw = block[offset + 4] | block[offset + 5] << 8
        rec_len = decode_rec_len(raw, size) if wide else raw
        if rec_len < _HEAD or rec_len & 3 or offset + rec_len > end:
            raise FSError(errno.EIO, f"directory record at {offset}: bad rec_len {raw}")
        inode = int.from_bytes(block[offset : offset + 4], "little")
        out.append((offset, inode, rec_len, block[offset + 6]))
        offset += rec_len
    return out


def _put(block: bytearray, offset: int, inode: int, name: bytes, file_type: int, rec_len: int):
    size = len(block)
    ext2_dir_entry_2.pack_into(
        block, offset, inode, encode_rec_len(rec_len, size), len(name), file_type
    )
    block[offset + _HEAD : offset + _HEAD + len(name)] = name


def _name_at(block: bytearray, offset: int, name_len: int) -> bytes:
    return bytes(block[offset + _HEAD : offset + _HEAD + name_len])


def _chain_end(block: bytearray, tail: bool) -> int:
    """Where the record chain ends; with `tail`, the tail's head is written after it
    (its crc when sealed)."""
    if not tail:
        return len(block)
    block[-EXT2_DIR_TAIL_SIZE:] = DIR_TAIL_HEAD + bytes(4)
    return len(block) - EXT2_DIR_TAIL_SIZE


def empty_block(block_size: int, *, tail: bool = False) -> bytearray:
    """A directory block holding no name: one unused record spanning it (up to the
    checksum tail, when `tail`: sealed when written)."""
    block = bytearray(block_size)
    _put(block, 0, 0, b"", 0, _chain_end(block, tail))
    return block


def first_block(
    ino: int, parent: int, block_size: int, *, filetype: bool, tail: bool = False
) -> bytearray:
    """The first block of a new directory: "." (itself) and ".." (`parent`)."""
    block = bytearray(block_size)
    ft = EXT2_FT_DIR if filetype else 0
    end = _chain_end(block, tail)
    _put(block, 0, ino, b".", ft, dirent_rec_len(1))
    _put(block, dirent_rec_len(1), parent, b"..", ft, end - dirent_rec_len(1))
    return block


class DirBlock:
    """One directory block being edited, and its record chain parsed once.

    The parsed chain (offset, inode, rec_len, name_len per record) is kept in step with
    every change, so an edit costs one pass over it rather than a parse of the bytes:
    the same walk the kernel makes, without re-reading 4 KiB through Python per name.

    Args:
        data: the block, changed in place by the methods.
        tail: metadata_csum: the block ends in a checksum tail, cut from its last record
            here if it has none yet.
    """

    __slots__ = ("data", "records")

    def __init__(self, data: bytearray, *, tail: bool = False) -> None:
        self.data = data
        if tail and has_dir_tail(data):
            self.records = _records(data, len(data) - EXT2_DIR_TAIL_SIZE)
            return
        self.records = _records(data, len(data))
        if tail:
            self._cut_tail()

    def _cut_tail(self) -> None:
        """Shrink the last record by the tail's 12 bytes (its slack must hold them)."""
        offset, inode, rec_len, name_len = self.records[-1]
        used = (_HEAD + name_len + 3) & ~3 if inode else _HEAD
        if rec_len - used < EXT2_DIR_TAIL_SIZE:
            raise FSError(errno.EIO, "directory block has no room for its checksum tail")
        shrunk = rec_len - EXT2_DIR_TAIL_SIZE
        raw = encode_rec_len(shrunk, len(self.data))
        self.data[offset + 4 : offset + 6] = raw.to_bytes(2, "little")
        _chain_end(self.data, True)
        self.records[-1] = (offset, inode, shrunk, name_len)

    def room(self) -> int:
        """The largest record a new name could take here (compare with dirent_rec_len)."""
        return max(
            (rec_len - ((_HEAD + name_len + 3) & ~3) if inode else rec_len)
            for _, inode, rec_len, name_len in self.records
        )

    def add(self, inode: int, name: bytes, file_type: int) -> bool:
        """Add `name` -> `inode` in the first record with room; False when the block is full."""
        need = dirent_rec_len(len(name))
        block, records = self.data, self.records
        for i, (offset, used, rec_len, name_len) in enumerate(records):
            if not used and rec_len >= need:
                _put(block, offset, inode, name, file_type, rec_len)
                records[i] = (offset, inode, rec_len, len(name))
                return True
            actual = (_HEAD + name_len + 3) & ~3
            if used and rec_len - actual >= need:
                raw = encode_rec_len(actual, len(block))
                block[offset + 4 : offset + 6] = raw.to_bytes(2, "little")
                _put(block, offset + actual, inode, name, file_type, rec_len - actual)
                records[i : i + 1] = [
                    (offset, used, actual, name_len),
                    (offset + actual, inode, rec_len - actual, len(name)),
                ]
                return True
        return False

    def _find(self, name: bytes) -> int | None:
        block, size = self.data, len(name)
        for i, (offset, inode, _, name_len) in enumerate(self.records):
            if inode and name_len == size and _name_at(block, offset, name_len) == name:
                return i
        return None

    def remove(self, name: bytes) -> int | None:
        """Remove `name`, merging its record into the one before; its inode, or None."""
        i = self._find(name)
        if i is None:
            return None
        block, records = self.data, self.records
        offset, inode, rec_len, _ = records[i]
        if i == 0:
            ext2_dir_entry_2.pack_into(block, offset, 0, encode_rec_len(rec_len, len(block)), 0, 0)
            records[0] = (offset, 0, rec_len, 0)
        else:
            prev_offset, prev_inode, prev_len, prev_name_len = records[i - 1]
            merged = encode_rec_len(prev_len + rec_len, len(block))
            block[prev_offset + 4 : prev_offset + 6] = merged.to_bytes(2, "little")
            records[i - 1 : i + 1] = [(prev_offset, prev_inode, prev_len + rec_len, prev_name_len)]
        return inode

    def retarget(self, name: bytes, inode: int, file_type: int) -> bool:
        """Point the existing `name` at `inode` (rename over a target); False if absent."""
        i = self._find(name)
        if i is None:
            return False
        offset, _, rec_len, name_len = self.records[i]
        self.data[offset : offset + 4] = inode.to_bytes(4, "little")
        self.data[offset + 7] = file_type
        self.records[i] = (offset, inode, rec_len, name_len)
        return True

    def set_dotdot(self, parent: int) -> None:
        """Point ".." (the second record of a directory's first block) at `parent`."""
        if len(self.records) < 2 or _name_at(self.data, self.records[1][0], 2) != b"..":
            raise FSError(errno.EIO, "directory's first block has no '..' second")
        offset, _, rec_len, name_len = self.records[1]
        self.data[offset : offset + 4] = parent.to_bytes(4, "little")
        self.records[1] = (offset, parent, rec_len, name_len)
