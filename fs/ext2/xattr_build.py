"""Building extended attribute areas: the write side of `xattr` (e2fsprogs' ext_attr.c).

Attributes are handled as raw entries (namespace index, name suffix, value bytes), so
entries this code does not interpret (ACLs in ext4's compact form, system.data ...) are
written back byte for byte. Both areas hold a table of 16-byte entry headers followed by
their names, ended by four zero bytes, and the values packed from the area's end
downwards, each padded to 4 bytes. An external block starts with a 32-byte header and
addresses values from the block's start; the in-inode area starts with a 4-byte magic and
addresses them from its first entry. Every entry carries the hash e2fsck checks
(`entry_hash`), and a block the hash of its entries (`block_hash`), which the kernel
uses to share identical blocks.
"""

from __future__ import annotations

import errno
import struct
from typing import NamedTuple

from uvfs import FSError
from uvfs_fs.ext2.xattr import (
    EXT2_ATTR_INDEX_POSIX_ACL_ACCESS,
    EXT2_ATTR_INDEX_POSIX_ACL_DEFAULT,
    EXT2_EXT_ATTR_MAGIC,
    NAME_PREFIXES,
    xattr_to_acl,
)

_HEADER = struct.Struct("<IIIII12x")  # h_magic, h_refcount, h_blocks, h_hash, h_checksum
_ENTRY = struct.Struct("<BBHIII")  # e_name_len, e_name_index, e_value_offs, inum, size, hash
_NAME_HASH_SHIFT, _VALUE_HASH_SHIFT, _BLOCK_HASH_SHIFT = 5, 16, 16
_MASK = 0xFFFFFFFF

# Namespaces a caller may set: the ones whose values are plain bytes on disk too.
_SETTABLE = {b"user.": 1, b"trusted.": 4, b"security.": 6}
# The two ACLs: whole names with an empty suffix, stored in ext4's compact form.
_ACLS = {
    NAME_PREFIXES[index]: index
    for index in (EXT2_ATTR_INDEX_POSIX_ACL_ACCESS, EXT2_ATTR_INDEX_POSIX_ACL_DEFAULT)
}


def stored_value(index: int, value: bytes) -> bytes:
    """What is written on disk for a value set through the xattr API."""
    return xattr_to_acl(value) if index in _ACLS.values() else value


class RawEntry(NamedTuple):
    """One stored attribute: namespace index, name without its prefix, value."""

    index: int
    name: bytes
    value: bytes


def split_name(full: bytes) -> tuple[int, bytes]:
    """``b"user.color"`` -> (1, b"color"); ENOTSUP for namespaces that cannot be set here."""
    if full in _ACLS:
        return _ACLS[full], b""
    for prefix, index in _SETTABLE.items():
        if full.startswith(prefix) and len(full) > len(prefix):
            suffix = full[len(prefix) :]
            if len(suffix) > 255:
                raise FSError(errno.ERANGE)
            return index, suffix
    raise FSError(errno.ENOTSUP)


def _rotate(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def entry_hash(entry: RawEntry) -> int:
    """ext2fs_ext_attr_hash_entry: the name's bytes, then the value's 32-bit words."""
    h = 0
    for byte in entry.name:
        h = ((h << _NAME_HASH_SHIFT) & _MASK) ^ (h >> (32 - _NAME_HASH_SHIFT)) ^ byte
    padded = entry.value + bytes(-len(entry.value) % 4)
    for (word,) in struct.iter_unpack("<I", padded):
        h = ((h << _VALUE_HASH_SHIFT) & _MASK) ^ (h >> (32 - _VALUE_HASH_SHIFT)) ^ word
    return h


def block_hash(hashes: list[int]) -> int:
    """ext2fs_ext_attr_block_rehash: 0 as soon as one entry has no hash (never shared)."""
    h = 0
    for e in hashes:
        if e == 0:
            return 0
        h = _rotate(h, _BLOCK_HASH_SHIFT) ^ e
    return h


def _parse(region: bytes, entries_at: int) -> list[RawEntry]:
    """Every entry from `entries_at` to the end marker; values addressed from `region[0]`."""
    out = []
    offset = entries_at
    while offset + 4 <= len(region) and region[offset : offset + 4] != b"\0\0\0\0":
        if offset + _ENTRY.size > len(region):
            raise FSError(errno.EIO, "extended attribute table runs off its area")
        name_len, index, value_offs, inum, size, _ = _ENTRY.unpack_from(region, offset)
        name_end = offset + _ENTRY.size + name_len
        if inum or name_end > len(region) or value_offs + size > len(region):
            raise FSError(errno.EIO, "extended attribute entry outside its area")
        name = region[offset + _ENTRY.size : name_end]
        out.append(RawEntry(index, name, region[value_offs : value_offs + size]))
        offset = (name_end + 3) & ~3
    return out


def parse_ibody_raw(area: bytes) -> list[RawEntry]:
    """The raw entries of an in-inode area (empty without the magic)."""
    if len(area) < 4 or int.from_bytes(area[:4], "little") != EXT2_EXT_ATTR_MAGIC:
        return []
    return _parse(area[4:], 0)


def parse_block_raw(block: bytes) -> list[RawEntry]:
    """The raw entries of an external attribute block."""
    magic, _, blocks, _, _ = _HEADER.unpack_from(block)
    if magic != EXT2_EXT_ATTR_MAGIC or blocks != 1:
        raise FSError(errno.EIO, f"extended attribute block with magic {magic:#x}")
    return _parse(block, _HEADER.size)


def _sorted(entries: list[RawEntry]) -> list[RawEntry]:
    # The kernel's order inside a block: index, then name length, then name.
    return sorted(entries, key=lambda e: (e.index, len(e.name), e.name))


def _layout(entries: list[RawEntry], size: int, table_at: int, base: int) -> bytearray | None:
    """`size` bytes: the entry table at `table_at`, values from the end; None if too big.

    Value offsets are stored relative to `base`.
    """
    table = sum((_ENTRY.size + len(e.name) + 3) & ~3 for e in entries) + 4
    values = sum((len(e.value) + 3) & ~3 for e in entries)
    if table_at + table + values > size:
        return None
    out = bytearray(size)
    offset, value_end = table_at, size
    for e in entries:
        value_at = 0
        if e.value:
            value_end -= (len(e.value) + 3) & ~3
            value_at = value_end
            out[value_at : value_at + len(e.value)] = e.value
        _ENTRY.pack_into(out, offset, len(e.name), e.index, value_at - base if e.value else 0,
                         0, len(e.value), entry_hash(e))  # fmt: skip
        out[offset + _ENTRY.size : offset + _ENTRY.size + len(e.name)] = e.name
        offset = (offset + _ENTRY.size + len(e.name) + 3) & ~3
    return out


def build_block(entries: list[RawEntry], block_size: int, refcount: int = 1) -> bytes | None:
    """An external attribute block holding `entries`, or None when they do not fit."""
    ordered = _sorted(entries)
    out = _layout(ordered, block_size, _HEADER.size, 0)
    if out is None:
        return None
    digest = block_hash([entry_hash(e) for e in ordered])
    _HEADER.pack_into(out, 0, EXT2_EXT_ATTR_MAGIC, refcount, 1, digest, 0)
    return bytes(out)


def build_ibody(entries: list[RawEntry], size: int) -> bytes | None:
    """An in-inode area of `size` bytes holding `entries` (zeros if none); None if too big."""
    if not entries:
        return bytes(size)
    if size < 8:
        return None
    out = _layout(_sorted(entries), size, 4, 4)
    if out is None:
        return None
    out[0:4] = EXT2_EXT_ATTR_MAGIC.to_bytes(4, "little")
    return bytes(out)
