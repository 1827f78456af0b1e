"""Extended attributes: in-inode and external-block entry tables, names and POSIX ACLs.

Attributes live in two places: after an inode's i_extra_isize fields (a 4-byte magic, then
entries whose values are addressed from the first entry) and in the block i_file_acl
points at (a 32-byte header, then entries whose values are addressed from the block's
start). An entry names its attribute by a namespace index and a suffix; the kernel shows
user.*, trusted.*, security.*, gnu.* and the two POSIX ACLs, and hides the rest
(system.data of inline data, encryption context ...). ACLs are stored in a compact ext4
format (`ext4_acl_header` version 1, short entries for the owner/group/mask/other tags) and
shown in the kernel's xattr format (version 2, every entry 8 bytes, undefined ids -1).

With ea_inode, an entry may keep its value in the data of another inode (e_value_inum):
parsing gives a `ValueInode` in its place, and the filesystem reads and checks that inode.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from construct import Array, Int8ul, Int16ul, Int32ul, Struct

from uvfs import FSError
from uvfs_fs.ext2.record import FastRecord

EXT2_EXT_ATTR_MAGIC = 0xEA020000

# fmt: off
ext2_ext_attr_header = Struct(
    "h_magic" / Int32ul,                    # 0x00
    "h_refcount" / Int32ul,                 # 0x04
    "h_blocks" / Int32ul,                   # 0x08 always 1
    "h_hash" / Int32ul,                     # 0x0c
    "h_checksum" / Int32ul,                 # 0x10
    "h_reserved" / Array(3, Int32ul),       # 0x14
).compile()

ext2_ext_attr_entry = Struct(
    "e_name_len" / Int8ul,                  # 0x00
    "e_name_index" / Int8ul,                # 0x01
    "e_value_offs" / Int16ul,               # 0x02
    "e_value_inum" / Int32ul,               # 0x04 ea_inode: value stored in an inode
    "e_value_size" / Int32ul,               # 0x08
    "e_hash" / Int32ul,                     # 0x0c
).compile()                                 # 0x10 name, padded to 4 bytes
# fmt: on

_ENTRY = FastRecord(ext2_ext_attr_entry, "ext2_ext_attr_entry")

# e_name_index -> what the kernel shows before the suffix (lib/ext2fs/ext_attr.c)
EXT2_ATTR_INDEX_USER = 1
EXT2_ATTR_INDEX_POSIX_ACL_ACCESS = 2
EXT2_ATTR_INDEX_POSIX_ACL_DEFAULT = 3
NAME_PREFIXES: dict[int, bytes] = {
    EXT2_ATTR_INDEX_USER: b"user.",
    EXT2_ATTR_INDEX_POSIX_ACL_ACCESS: b"system.posix_acl_access",
    EXT2_ATTR_INDEX_POSIX_ACL_DEFAULT: b"system.posix_acl_default",
    4: b"trusted.",
    6: b"security.",
    10: b"gnu.",
}
_ACL_NAMES = frozenset(
    NAME_PREFIXES[i] for i in (EXT2_ATTR_INDEX_POSIX_ACL_ACCESS, EXT2_ATTR_INDEX_POSIX_ACL_DEFAULT)
)
EXT4_XATTR_INDEX_SYSTEM = 7  # system.data (inline data), not shown

# POSIX ACLs: on-disk (ext4_acl_*) and xattr (posix_acl_xattr_*) forms
EXT4_ACL_VERSION = 1
POSIX_ACL_XATTR_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
_acl_header = struct.Struct("<I")
_acl_entry_short = struct.Struct("<HH")  # e_tag, e_perm
_acl_entry = struct.Struct("<HHI")  # e_tag, e_perm, e_id


def _corrupt(why: str) -> FSError:
    """Damaged attribute storage: EUCLEAN (EFSCORRUPTED), as ext4's xattr checks answer."""
    return FSError(errno.EUCLEAN, f"extended attributes: {why}")


def _bad_acl(why: str) -> FSError:
    return FSError(errno.EIO, f"extended attributes: {why}")


def acl_to_xattr(disk: bytes) -> bytes:
    """An ACL in ext4's on-disk form, re-encoded as the kernel's posix_acl xattr value."""
    if len(disk) < _acl_header.size or _acl_header.unpack_from(disk)[0] != EXT4_ACL_VERSION:
        raise _bad_acl("ACL with a bad version")
    out = [_acl_header.pack(POSIX_ACL_XATTR_VERSION)]
    offset = _acl_header.size
    while offset < len(disk):
        if offset + _acl_entry_short.size > len(disk):
            raise _bad_acl("ACL entry cut short")
        tag, perm = _acl_entry_short.unpack_from(disk, offset)
        if tag in (ACL_USER, ACL_GROUP):
            if offset + _acl_entry.size > len(disk):
                raise _bad_acl("ACL entry cut short")
            _, _, ident = _acl_entry.unpack_from(disk, offset)
            offset += _acl_entry.size
        elif tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            ident = ACL_UNDEFINED_ID
            offset += _acl_entry_short.size
        else:
            raise _bad_acl(f"ACL entry with tag {tag:#x}")
        out.append(_acl_entry.pack(tag, perm, ident))
    return b"".join(out)


def xattr_to_acl(value: bytes) -> bytes:
    """The kernel's posix_acl xattr value, re-encoded in ext4's compact on-disk form."""
    if len(value) < _acl_header.size or (len(value) - _acl_header.size) % _acl_entry.size:
        raise FSError(errno.EINVAL)
    if _acl_header.unpack_from(value)[0] != POSIX_ACL_XATTR_VERSION:
        raise FSError(errno.EINVAL)
    out = [_acl_header.pack(EXT4_ACL_VERSION)]
    for tag, perm, ident in _acl_entry.iter_unpack(value[_acl_header.size :]):
        if tag in (ACL_USER, ACL_GROUP):
            out.append(_acl_entry.pack(tag, perm, ident))
        elif tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            out.append(_acl_entry_short.pack(tag, perm))
        else:
            raise FSError(errno.EINVAL)
    return b"".join(out)


class ValueInode(NamedTuple):
    """An ea_inode attribute's value: the first `size` bytes of inode `inum`'s data; the
    entry's e_hash and name suffix, and whether it is in the inode (not in the block),
    for `entry_hash_ok`."""

    inum: int
    size: int
    e_hash: int
    suffix: bytes
    in_inode: bool


def entry_hash(suffix: bytes, words: Iterable[int], *, signed: bool = False) -> int:
    """An entry's e_hash (ext4_xattr_hash_entry): its name suffix, then its value as 32-bit
    words; `signed` hashes the name's bytes as signed chars (the old, buggy variant)."""
    h = 0
    for byte in suffix:
        byte = byte - 256 if signed and byte >= 128 else byte
        h = ((h << 5) ^ (h >> 27) ^ byte) & 0xFFFFFFFF
    for word in words:
        h = ((h << 16) ^ (h >> 16) ^ word) & 0xFFFFFFFF
    return h


def entry_hash_ok(value: ValueInode, value_hash: int) -> bool:
    """Whether an in-inode entry's e_hash is that of its name and its EA inode's value hash,
    with either char signedness (ext4_xattr_inode_verify_hashes); block entries are not
    checked."""
    if not value.in_inode:
        return True
    return value.e_hash in {
        entry_hash(value.suffix, [value_hash], signed=signed) for signed in (False, True)
    }


Value = bytes | ValueInode


def _entries(
    region: bytes, entries_at: int, *, in_inode: bool
) -> Iterator[tuple[int, bytes, Value]]:
    """(name index, name suffix, value) of every entry from `entries_at` to the end marker.

    In-place values are at e_value_offs from the start of `region`; an entry with
    e_value_inum gives a `ValueInode` instead. Each entry advances by at least 16 bytes and
    must fit in `region`, so the walk is bounded by its size.
    """
    offset = entries_at
    while True:
        if offset + 4 > len(region):
            raise _corrupt("entry table runs off its area")
        if region[offset : offset + 4] == b"\0\0\0\0":
            return
        if offset + _ENTRY.size > len(region):
            raise _corrupt("entry table runs off its area")
        e = _ENTRY.unpack(region, offset)
        name_end = offset + _ENTRY.size + e.e_name_len
        if name_end > len(region):
            raise _corrupt("entry name runs off its area")
        suffix = region[offset + _ENTRY.size : name_end]
        start = e.e_value_offs
        if e.e_value_inum:
            value = ValueInode(e.e_value_inum, e.e_value_size, e.e_hash, suffix, in_inode)
            yield e.e_name_index, suffix, value
        elif e.e_value_size and (start < name_end or start + e.e_value_size > len(region)):
            raise _corrupt("entry value outside its area")
        else:
            yield e.e_name_index, suffix, region[start : start + e.e_value_size]
        offset = (name_end + 3) & ~3


def shown_value(name: bytes, value: bytes) -> bytes:
    """An attribute's value as the kernel shows it: ACLs in the posix_acl xattr form."""
    if name in _ACL_NAMES:
        return acl_to_xattr(value)
    return value


def _shown(entries: Iterator[tuple[int, bytes, Value]]) -> list[tuple[bytes, Value]]:
    """(name, value) of the entries the kernel shows; ea_inode values left to the caller."""
    attrs = []
    for index, suffix, value in entries:
        prefix = NAME_PREFIXES.get(index)
        if prefix is not None:
            name = prefix + suffix
            attrs.append(
                (name, value if isinstance(value, ValueInode) else shown_value(name, value))
            )
    return attrs


def _ibody_entries(area: bytes) -> Iterator[tuple[int, bytes, Value]]:
    if len(area) < 4 or int.from_bytes(area[:4], "little") != EXT2_EXT_ATTR_MAGIC:
        return iter(())  # no magic: the inode simply has no in-inode attributes
    return _entries(area[4:], 0, in_inode=True)


def ibody_value(area: bytes, index: int, suffix: bytes) -> bytes | None:
    """The in-place value of in-inode attribute (`index`, `suffix`), shown or not; None
    when absent (system.data of inline data lives here)."""
    for got_index, got_suffix, value in _ibody_entries(area):
        if (got_index, got_suffix) == (index, suffix) and isinstance(value, bytes):
            return value
    return None


def parse_ibody(area: bytes) -> list[tuple[bytes, Value]]:
    """The shown attributes stored inside an inode, from its area after i_extra_isize."""
    return _shown(_ibody_entries(area))


def check_block_header(block: bytes) -> None:
    """EUCLEAN unless `block` starts as an attribute block of one block: the kernel's first
    check, before the block's checksum and its entries."""
    magic, _, blocks = struct.unpack_from("<III", block)
    if magic != EXT2_EXT_ATTR_MAGIC or blocks != 1:
        raise _corrupt(f"bad block magic {magic:#x}")


def parse_block(block: bytes) -> list[tuple[bytes, Value]]:
    """The shown attributes stored in an external attribute block (i_file_acl)."""
    check_block_header(block)
    return _shown(_entries(block, ext2_ext_attr_header.sizeof(), in_inode=False))


def block_value(block: bytes, index: int, suffix: bytes) -> bytes | None:
    """The in-place value of attribute (`index`, `suffix`) of an external attribute block,
    shown or not; None when absent."""
    check_block_header(block)
    for got_index, got_suffix, value in _entries(
        block, ext2_ext_attr_header.sizeof(), in_inode=False
    ):
        if (got_index, got_suffix) == (index, suffix) and isinstance(value, bytes):
            return value
    return None
