"""Building inode-table slots: the inverse of `inode.decode_inode`, for the write side.

An `Inode` is written back over the slot it was read from, so whatever this code does not
model (osd fields, i_faddr, checksum halves, i_version) keeps its bytes. Split values are
cut into their halves again; a nanosecond time becomes seconds plus, where i_extra_isize
covers it, an ``_extra`` word (two epoch bits for dates past 2038, 30 bits of ns).
"""

from __future__ import annotations

import os

from uvfs_fs.ext2.inode import (
    EXT2_GOOD_OLD_INODE_SIZE,
    Inode,
    ext2_inode,
    ext2_inode_large_extra,
)
from uvfs_fs.ext2.record import FastRecord

# The records as struct-backed namedtuples: packing is on every inode change.
_INODE = FastRecord(ext2_inode, "ext2_inode")
_LARGE = FastRecord(ext2_inode_large_extra, "ext2_inode_large_extra")
_EXTRA = ext2_inode_large_extra.sizeof()  # 32: what new large inodes cover, as the kernel
_SECOND = 1_000_000_000
_S32_MIN, _S32_MAX = -(1 << 31), (1 << 31) - 1


def blank_slot(inode_size: int) -> bytes:
    """A zeroed slot for a new inode; a large one covers all extra fields (ns times)."""
    slot = bytearray(inode_size)
    if inode_size >= EXT2_GOOD_OLD_INODE_SIZE + _EXTRA:
        slot[EXT2_GOOD_OLD_INODE_SIZE : EXT2_GOOD_OLD_INODE_SIZE + 2] = _EXTRA.to_bytes(2, "little")
    return bytes(slot)


def encode_time(ns: int, *, extra: bool) -> tuple[int, int]:
    """A time in ns -> (32-bit seconds field, ``_extra`` word); see `inode.decode_time`."""
    secs, nsec = divmod(ns, _SECOND)
    if not extra:
        return min(max(secs, _S32_MIN), _S32_MAX) & 0xFFFFFFFF, 0
    secs = min(max(secs, _S32_MIN), _S32_MAX + (3 << 32))
    low = secs & 0xFFFFFFFF
    signed = low - (1 << 32) if low & 0x80000000 else low
    return low, ((secs - signed) >> 32) & 3 | nsec << 2


def encode_rdev(rdev: int) -> bytes:
    """st_rdev -> the first 8 bytes of i_block (old encoding when it fits, as the kernel)."""
    major, minor = os.major(rdev), os.minor(rdev)
    if major < 256 and minor < 256:
        return (major << 8 | minor).to_bytes(4, "little") + bytes(4)
    new = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
    return bytes(4) + (new & 0xFFFFFFFF).to_bytes(4, "little")


def encode_inode(inode: Inode, slot: bytes, *, huge_file: bool) -> bytes:
    """`inode` written over `slot` (the s_inode_size bytes it came from, or `blank_slot`)."""
    out = bytearray(slot)
    b = _INODE.unpack(out)
    x = _LARGE.unpack(out[EXT2_GOOD_OLD_INODE_SIZE:].ljust(_LARGE.size, b"\0"))
    extra_isize = x.i_extra_isize if len(out) > EXT2_GOOD_OLD_INODE_SIZE else 0
    has_ns = extra_isize >= 0x10  # i_ctime_extra .. i_atime_extra all covered
    atime, atime_x = encode_time(inode.atime_ns, extra=has_ns)
    ctime, ctime_x = encode_time(inode.ctime_ns, extra=has_ns)
    mtime, mtime_x = encode_time(inode.mtime_ns, extra=has_ns)
    b = b._replace(
        i_mode=inode.mode,
        i_uid=inode.uid & 0xFFFF,
        l_i_uid_high=inode.uid >> 16,
        i_gid=inode.gid & 0xFFFF,
        l_i_gid_high=inode.gid >> 16,
        i_size=inode.size & 0xFFFFFFFF,
        i_size_high=inode.size >> 32,
        i_atime=atime,
        i_ctime=ctime,
        i_mtime=mtime,
        i_dtime=inode.dtime,
        i_links_count=inode.links_count,
        i_blocks=inode.blocks_512 & 0xFFFFFFFF,
        l_i_blocks_hi=(inode.blocks_512 >> 32) if huge_file else b.l_i_blocks_hi,
        i_flags=inode.flags,
        i_block=inode.i_block,
        i_generation=inode.generation,
        i_file_acl=inode.file_acl & 0xFFFFFFFF,
        # h_i_mode_high on Hurd volumes: kept unless a 64bit block number needs it.
        l_i_file_acl_high=(inode.file_acl >> 32) or b.l_i_file_acl_high,
    )
    _INODE.struct.pack_into(out, 0, *b)
    if has_ns:
        x = x._replace(i_ctime_extra=ctime_x, i_mtime_extra=mtime_x, i_atime_extra=atime_x)
        if extra_isize >= 0x18 and inode.crtime_ns:
            crtime, crtime_x = encode_time(inode.crtime_ns, extra=True)
            x = x._replace(i_crtime=crtime, i_crtime_extra=crtime_x)
        covered = _LARGE.struct.pack(*x)[:extra_isize]  # fields past i_extra_isize do not exist
        out[EXT2_GOOD_OLD_INODE_SIZE : EXT2_GOOD_OLD_INODE_SIZE + len(covered)] = covered
    ibody_at = EXT2_GOOD_OLD_INODE_SIZE + extra_isize
    if len(out) > ibody_at:
        out[ibody_at:] = inode.xattr_ibody.ljust(len(out) - ibody_at, b"\0")
    return bytes(out)
