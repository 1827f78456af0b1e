"""Inodes: the 128-byte ext2 record, the ext4 extra fields after it, and the in-core `Inode`.

An inode is s_inode_size bytes (128 on revision 0). Bytes 128 on are the "large inode":
i_extra_isize says how many of them are fields (ns timestamps, crtime ...), and the rest
up to s_inode_size holds in-inode extended attributes. A field past i_extra_isize does
not exist, whatever the bytes say. Several values are split in two halves (size, uid, gid,
i_blocks, i_file_acl); `decode_inode` joins them into one plain `Inode`.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable
from typing import NamedTuple

from construct import Bytes, Int16ul, Int32ul, Struct

from uvfs import FSError
from uvfs_fs.ext2.casefold import EXT4_CASEFOLD_FL
from uvfs_fs.ext2.encrypt import EXT4_ENCRYPT_FL
from uvfs_fs.ext2.extents import check_root
from uvfs_fs.ext2.record import FastRecord

EXT2_N_BLOCKS = 15  # i_block[] holds 15 32-bit words: 60 bytes
EXT2_NDIR_BLOCKS = 12  # the direct pointers among them, before IND, DIND and TIND

# i_flags
EXT2_IMMUTABLE_FL = 0x00000010
EXT2_APPEND_FL = 0x00000020
EXT2_INDEX_FL = 0x00001000  # an htree directory
EXT4_HUGE_FILE_FL = 0x00040000  # i_blocks counts file-system blocks, not 512-byte sectors
EXT4_EXTENTS_FL = 0x00080000  # i_block holds an extent tree root
EXT4_VERITY_FL = 0x00100000  # fs-verity: the file's Merkle tree lies past its end
EXT4_EA_INODE_FL = 0x00200000
EXT4_INLINE_DATA_FL = 0x10000000

# the file types an inode may have; any other i_mode is "bogus" to ext4_iget
FILE_TYPES = frozenset(
    {
        stat.S_IFREG,
        stat.S_IFDIR,
        stat.S_IFLNK,
        stat.S_IFCHR,
        stat.S_IFBLK,
        stat.S_IFIFO,
        stat.S_IFSOCK,
    }
)

EXT2_ROOT_INO = 2
EXT4_XATTR_MAGIC = 0xEA020000  # opens the in-inode attribute area
EXT4_XATTR_INDEX_SYSTEM = 7  # system.data holds inline data past i_block
EXT4_XATTR_SIZE_MAX = 1 << 24  # the largest value size the kernel accepts in an entry
# an attribute entry's fixed part: e_name_len, e_name_index, e_value_offs, e_value_inum,
# e_value_size, e_hash (as xattr.ext2_ext_attr_entry; the name follows, padded to 4 bytes)
_XATTR_ENTRY = struct.Struct("<BBHIII")
_DIRECT = struct.Struct(f"<{EXT2_NDIR_BLOCKS}I")  # i_block's direct pointers

# fmt: off
ext2_inode = Struct(
    "i_mode" / Int16ul,                     # 0x00
    "i_uid" / Int16ul,                      # 0x02
    "i_size" / Int32ul,                     # 0x04 (i_size_lo)
    "i_atime" / Int32ul,                    # 0x08
    "i_ctime" / Int32ul,                    # 0x0c
    "i_mtime" / Int32ul,                    # 0x10
    "i_dtime" / Int32ul,                    # 0x14
    "i_gid" / Int16ul,                      # 0x18
    "i_links_count" / Int16ul,              # 0x1a
    "i_blocks" / Int32ul,                   # 0x1c
    "i_flags" / Int32ul,                    # 0x20
    "l_i_version" / Int32ul,                # 0x24 (osd1)
    "i_block" / Bytes(4 * EXT2_N_BLOCKS),   # 0x28
    "i_generation" / Int32ul,               # 0x64
    "i_file_acl" / Int32ul,                 # 0x68
    "i_size_high" / Int32ul,                # 0x6c (i_dir_acl on old revision 0 dirs)
    "i_faddr" / Int32ul,                    # 0x70
    "l_i_blocks_hi" / Int16ul,              # 0x74 (osd2, Linux layout)
    "l_i_file_acl_high" / Int16ul,          # 0x76
    "l_i_uid_high" / Int16ul,               # 0x78
    "l_i_gid_high" / Int16ul,               # 0x7a
    "l_i_checksum_lo" / Int16ul,            # 0x7c
    "l_i_reserved" / Int16ul,               # 0x7e
).compile()

# The large-inode fields at 0x80; each exists only if i_extra_isize covers it.
ext2_inode_large_extra = Struct(
    "i_extra_isize" / Int16ul,              # 0x80
    "i_checksum_hi" / Int16ul,              # 0x82
    "i_ctime_extra" / Int32ul,              # 0x84
    "i_mtime_extra" / Int32ul,              # 0x88
    "i_atime_extra" / Int32ul,              # 0x8c
    "i_crtime" / Int32ul,                   # 0x90
    "i_crtime_extra" / Int32ul,             # 0x94
    "i_version_hi" / Int32ul,               # 0x98
    "i_projid" / Int32ul,                   # 0x9c
).compile()
# fmt: on

_INODE = FastRecord(ext2_inode, "ext2_inode")
_EXTRA = FastRecord(ext2_inode_large_extra, "ext2_inode_large_extra")

EXT2_GOOD_OLD_INODE_SIZE = 128
# A field of the large inode exists only if i_extra_isize reaches its end (relative to
# 0x80): i_ctime_extra 0x08, i_mtime_extra 0x0c, i_atime_extra 0x10, i_crtime 0x14,
# i_crtime_extra 0x18. Inodes of 128 bytes have none of them.
_NO_EXTRA = _EXTRA.tuple._make([0] * len(_EXTRA.tuple._fields))


class Inode(NamedTuple):
    """One inode as the driver uses it: halves joined, times in nanoseconds.

    A NamedTuple rather than a frozen dataclass: as immutable, and decoded or changed
    (``inode._replace(...)``) on nearly every request, several times faster.
    """

    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    links_count: int
    blocks_512: int  # allocated space in 512-byte units, as st_blocks
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    crtime_ns: int  # 0 when the inode has no i_crtime
    dtime: int
    flags: int
    generation: int
    file_acl: int  # block of the external xattr block, 0 if none
    i_block: bytes  # 60 bytes: block map, extent root, fast symlink text or device
    xattr_ibody: bytes  # in-inode xattr area (after i_extra_isize), may be empty

    @property
    def rdev(self) -> int:
        """The device number of a character or block special file, as st_rdev."""
        if not (stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode)):
            return 0
        old = int.from_bytes(self.i_block[0:4], "little")
        if old:
            # old_encode_dev: 8-bit major, 8-bit minor in i_block[0]
            return os.makedev((old >> 8) & 0xFF, old & 0xFF)
        new = int.from_bytes(self.i_block[4:8], "little")
        # new_encode_dev: minor's low byte, 12-bit major, then minor's upper bits
        return os.makedev((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))


def decode_time(seconds: int, extra: int | None) -> int:
    """A timestamp in ns from a 32-bit seconds field and its optional ``_extra`` word.

    Without ``_extra`` the seconds are signed (1901-2038). The two low bits of ``_extra``
    extend the seconds past 2038 (added to the signed value, as the kernel does); its
    upper 30 bits are nanoseconds.
    """
    secs = seconds - (1 << 32) if seconds & 0x80000000 else seconds
    if extra is None:
        return secs * 1_000_000_000
    secs += (extra & 3) << 32
    return secs * 1_000_000_000 + (extra >> 2)


def decode_inode(
    raw: bytes,
    ino: int,
    *,
    huge_file: bool,
    block_size: int,
    has_64bit: bool = True,
    large_dir: bool = False,
) -> Inode:
    """Parse one inode-table slot (`raw`: s_inode_size bytes) into an `Inode`.

    Args:
        raw: the inode's bytes, 128 or more.
        ino: its number, carried into the result.
        huge_file: the volume has the huge_file feature (i_blocks has 48 bits).
        block_size: the volume's block size, for EXT4_HUGE_FILE_FL inodes.
        has_64bit: the volume has the 64bit feature; only then is l_i_file_acl_high part
            of i_file_acl (elsewhere, on Hurd volumes, those bytes are h_i_mode_high).
        large_dir: the volume has the large_dir feature; only then, or for a regular
            file, is i_size_high part of the size (it was i_dir_acl), as the kernel reads it.

    Raises:
        FSError: EUCLEAN when i_extra_isize runs past the slot or is not a multiple of
            4, or for a size past 2^63 - 1, as the kernel's ext4_iget ("bad extra_isize",
            "bad i_size value").
    """
    b = _INODE.unpack(raw)
    extra_isize = 0
    x = _NO_EXTRA
    if len(raw) > EXT2_GOOD_OLD_INODE_SIZE:
        large = EXT2_GOOD_OLD_INODE_SIZE + _EXTRA.size  # a shorter slot is padded (a copy)
        x = _EXTRA.unpack(
            raw if len(raw) >= large else raw.ljust(large, b"\0"), EXT2_GOOD_OLD_INODE_SIZE
        )
        extra_isize = x.i_extra_isize
        if extra_isize & 3 or EXT2_GOOD_OLD_INODE_SIZE + extra_isize > len(raw):
            raise FSError(errno.EUCLEAN, f"inode {ino}: bad i_extra_isize {extra_isize}")
    size = b.i_size | (b.i_size_high << 32 if large_dir or stat.S_ISREG(b.i_mode) else 0)
    if size >> 63:
        raise FSError(errno.EUCLEAN, f"inode {ino}: bad i_size {size}")
    blocks = b.i_blocks
    if huge_file:
        blocks |= b.l_i_blocks_hi << 32
        if b.i_flags & EXT4_HUGE_FILE_FL:
            blocks *= block_size // 512
    return Inode(
        ino=ino,
        mode=b.i_mode,
        uid=b.i_uid | b.l_i_uid_high << 16,
        gid=b.i_gid | b.l_i_gid_high << 16,
        size=size,
        links_count=b.i_links_count,
        blocks_512=blocks,
        atime_ns=decode_time(b.i_atime, x.i_atime_extra if extra_isize >= 0x10 else None),
        mtime_ns=decode_time(b.i_mtime, x.i_mtime_extra if extra_isize >= 0x0C else None),
        ctime_ns=decode_time(b.i_ctime, x.i_ctime_extra if extra_isize >= 0x08 else None),
        crtime_ns=0
        if extra_isize < 0x14
        else decode_time(x.i_crtime, x.i_crtime_extra if extra_isize >= 0x18 else None),
        dtime=b.i_dtime,
        flags=b.i_flags,
        generation=b.i_generation,
        file_acl=b.i_file_acl | (b.l_i_file_acl_high << 32 if has_64bit else 0),
        i_block=b.i_block,
        xattr_ibody=raw[EXT2_GOOD_OLD_INODE_SIZE + extra_isize :],
    )


def check_iget(
    inode: Inode,
    *,
    block_ok: Callable[[int, int], bool],
    cluster_size: int,
    inline: bool,
    features: frozenset[str],
    orphan: bool = False,
) -> None:
    """The checks the kernel's ext4_iget makes of an inode it reads by number, after its
    checksum: whatever fails here is an error for the inode itself (stat, open), not just
    for its data.

    Args:
        inode: the decoded inode.
        block_ok: ``block_ok(start, count)``: blocks a file may own (ext4_inode_block_valid).
        cluster_size: the allocation unit in bytes, for a fast symlink's xattr block.
        inline: the inode's data is inline: flagged so, on an inline_data volume, with a
            system.data attribute (`check_ibody_xattrs`).
        features: the volume's feature names.
        orphan: read for the orphan cleanup (EXT4_ORPHAN_FS): an unlinked inode passes.

    Raises:
        FSError: EUCLEAN (EFSCORRUPTED), with the kernel's reason.
    """

    def bad(why: str) -> FSError:
        return FSError(errno.EUCLEAN, f"inode {inode.ino}: {why}")

    mode = stat.S_IFMT(inode.mode)
    if inode.flags & EXT4_INLINE_DATA_FL and inode.flags & EXT4_EXTENTS_FL:
        raise bad("both inline data and extents flags")
    # a name for a deleted inode: ext4_iget's ESTALE, which ext4_lookup makes EFSCORRUPTED
    # (the orphan cleanup reads unlinked inodes that have a mode)
    if inode.links_count == 0 and not (orphan and inode.mode):
        raise bad(f"deleted inode referenced (mode {inode.mode:o})")
    if mode not in FILE_TYPES:
        raise bad(f"bogus i_mode {inode.mode:o}")
    if inode.flags & EXT2_INDEX_FL and "dir_index" not in features and "metadata_csum" in features:
        raise bad("htree directory without the dir_index feature")
    fast = is_fast_symlink(inode, cluster_size, inline, "ea_inode" in features)
    if inode.file_acl and not block_ok(inode.file_acl, 1):
        raise bad(f"bad extended attribute block {inode.file_acl}")
    if not inline and (mode in (stat.S_IFREG, stat.S_IFDIR) or (mode == stat.S_IFLNK and not fast)):
        if inode.flags & EXT4_EXTENTS_FL:
            check_root(inode.i_block, block_ok)
        else:
            # ext4_ind_check_inode: the direct pointers only (EXT4_NDIR_BLOCKS)
            for block in _DIRECT.unpack_from(inode.i_block):
                if block and not block_ok(block, 1):
                    raise bad(f"invalid block {block}")
    if mode == stat.S_IFLNK:
        if inode.flags & (EXT2_APPEND_FL | EXT2_IMMUTABLE_FL):
            raise bad("immutable or append flags on a symlink")
        if fast and not inode.flags & EXT4_ENCRYPT_FL:  # an encrypted one is ciphertext
            text = inode.i_block
            # strnlen(i_data, size + 1) == size: no NUL before the end, one right after it
            size = inode.size
            if not 0 < size < len(text) or b"\0" in text[:size] or text[size]:
                raise bad(f"invalid fast symlink length {inode.size}")
    if inode.flags & EXT4_CASEFOLD_FL and "casefold" not in features:
        raise bad("casefold flag without casefold feature")


def check_ibody_xattrs(inode: Inode, *, ea_inode: bool, first_ino: int, inodes_count: int) -> bool:
    """The kernel's check of an inode's in-inode attributes, made when it reads the inode
    (ext4_iget_extra_inode, through check_xattrs): names inside the area and free of NULs,
    then each value inside it, past the names, and any value inode a valid number.

    Returns:
        Whether the area holds system.data, where the kernel finds inline data
        (ext4_find_inline_data_nolock): without it an inline-flagged inode is not inline.

    Raises:
        FSError: EUCLEAN (EFSCORRUPTED), with the kernel's reason.
    """
    area = inode.xattr_ibody
    if len(area) < 4 or int.from_bytes(area[:4], "little") != EXT4_XATTR_MAGIC:
        return False
    body = area[4:]  # entries from 0; in-inode values are addressed from here too
    end = len(body)

    def bad(why: str) -> FSError:
        return FSError(errno.EUCLEAN, f"inode {inode.ino}: in-inode xattrs: {why}")

    entries = []
    system_data = False
    at = 0
    while at + 4 <= end and body[at : at + 4] != b"\0\0\0\0":
        if at + _XATTR_ENTRY.size > end:
            raise bad("e_name out of bounds")
        name_len, index, offs, inum, size, _ = _XATTR_ENTRY.unpack_from(body, at)
        following = at + ((_XATTR_ENTRY.size + name_len + 3) & ~3)
        if following >= end:
            raise bad("e_name out of bounds")
        name = body[at + _XATTR_ENTRY.size : at + _XATTR_ENTRY.size + name_len]
        if b"\0" in name:
            raise bad("bad e_name length")
        system_data = system_data or (index, name) == (EXT4_XATTR_INDEX_SYSTEM, b"data")
        entries.append((offs, inum, size))
        at = following
    if at + 4 > end:
        raise bad("e_name out of bounds")
    for offs, inum, size in entries:
        if inum and not ea_inode:
            raise bad("ea_inode specified without ea_inode feature enabled")
        if inum and (inum == EXT2_ROOT_INO or not first_ino <= inum <= inodes_count):
            raise bad(f"invalid ea_ino {inum}")
        if size > EXT4_XATTR_SIZE_MAX:
            raise bad("e_value size too large")
        if size and not inum:
            if offs > end:
                raise bad("e_value out of bounds")
            if offs < at + 4 or size > end - offs or (size + 3) & ~3 > end - offs:
                raise bad("overlapping e_value")
    return system_data


def is_fast_symlink(inode: Inode, cluster_size: int, inline: bool, ea_inode: bool) -> bool:
    """As the kernel decides (ext4_inode_is_fast_symlink): on an ea_inode volume (where
    i_blocks counts the blocks of value inodes) a symlink shorter than i_block; elsewhere a
    symlink owning no block but its xattr block, whatever its flags say (some kernels set
    EXTENTS_FL on fast symlinks), and not inline."""
    if not stat.S_ISLNK(inode.mode):
        return False
    if ea_inode:
        return 0 < inode.size < EXT2_N_BLOCKS * 4
    if inline:
        return False
    xattr_blocks = cluster_size // 512 if inode.file_acl else 0
    return inode.blocks_512 == xattr_blocks
