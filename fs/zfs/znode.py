"""ZPL file attributes: the old znode_phys_t bonus (ZPL <= 4) and SA attributes (ZPL >= 5).

Both decode to one in-core record, `Znode`. The old layout (zfs_znode.h, bonus type
DMU_OT_ZNODE), in the dnode's byte order:

    0   zp_atime[2]  16 zp_mtime[2]  32 zp_ctime[2]  48 zp_crtime[2]   (seconds, nanoseconds)
    64  zp_gen       72 zp_mode      80 zp_size      88 zp_parent
    96  zp_links     104 zp_xattr    112 zp_rdev     120 zp_flags
    128 zp_uid       136 zp_gid      144 zp_zap      152 zp_pad[3]
    176 zp_acl (zfs_acl_phys_t, 88 bytes)                               264 end

A short symlink target sits in the bonus right after the znode (when size + 264 fits the
bonus), a longer one in the object's data. SA files carry the same values as named
attributes (ZPL_MODE ...); the target is ZPL_SYMLINK and SA xattrs a packed nvlist in
ZPL_DXATTR.

Values are checked as the Linux port takes them into an inode: the mode is a umode_t (its
low 16 bits), times are signed seconds and nanoseconds (taken modulo 10^9: a damaged
field must not carry into the seconds), and a size past 2^63 - 1, which no loff_t holds,
is corruption (EUCLEAN) for that file alone.

Device numbers are stored "expanded" (zfs_expldev) by Solaris and ZFS on Linux: major << 32
| minor. zfs-fuse stores the Linux dev_t it was given as is (glibc's encoding, below 2^32
for every major below 4096), and shows it back unchanged; a value below 2^32 is taken as
such, since an expanded device number that small would have major 0.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, replace

from uvfs import FSError

from .dnode import DMU_OT_ZNODE, DnodePhys

ZNODE_PHYS_SIZE = 264
_U64_FIELDS = 22  # zp_atime .. zp_gid, as u64 words


@dataclass(frozen=True, slots=True)
class Znode:
    """A file's ZPL attributes, whatever their on-disk form. Times are (seconds, ns)."""

    mode: int
    size: int
    uid: int
    gid: int
    links: int
    parent: int
    gen: int
    flags: int
    rdev: int  # as stored (see `linux_rdev`)
    xattr: int  # object of the xattr directory, 0 for none
    atime: tuple[int, int]
    mtime: tuple[int, int]
    ctime: tuple[int, int]
    crtime: tuple[int, int]
    symlink: bytes | None = None  # the target when stored with the attributes
    dxattr: bytes | None = None  # packed nvlist of SA xattrs


_LOFF_MAX = (1 << 63) - 1


def _time(sec: int, nsec: int) -> tuple[int, int]:
    """A stored (u64 seconds, u64 nanoseconds) pair as signed seconds and nanoseconds."""
    return (sec - (1 << 64) if sec >> 63 else sec, nsec % 1_000_000_000)


def _checked(z: Znode) -> Znode:
    """`z` with its fields in the ranges the kernel keeps them in (see the module notes)."""
    if z.size > _LOFF_MAX:
        raise FSError(errno.EUCLEAN, f"znode: size {z.size} past 2^63 - 1")
    return replace(
        z,
        mode=z.mode & 0xFFFF,
        atime=_time(*z.atime),
        mtime=_time(*z.mtime),
        ctime=_time(*z.ctime),
        crtime=_time(*z.crtime),
    )


def linux_rdev(stored: int) -> int:
    """The Linux dev_t for a stored device number."""
    if stored >> 32:
        return os.makedev(stored >> 32, stored & 0xFFFFFFFF)
    return stored


def parse_znode_phys(bonus: bytes, byteorder: str) -> Znode:
    """Decode an old-style znode_phys_t bonus buffer (with an inline symlink target, if any)."""
    if len(bonus) < ZNODE_PHYS_SIZE:
        raise FSError(errno.EIO, f"znode: bonus of {len(bonus)} bytes")
    w = struct.unpack_from(f"{byteorder}{_U64_FIELDS}Q", bonus)
    size = w[10]
    symlink = None
    if size + ZNODE_PHYS_SIZE <= len(bonus):
        symlink = bytes(bonus[ZNODE_PHYS_SIZE : ZNODE_PHYS_SIZE + size])
    return _checked(
        Znode(
            mode=w[9],
            size=size,
            uid=w[16],
            gid=w[17],
            links=w[12],
            parent=w[11],
            gen=w[8],
            flags=w[15],
            rdev=w[14],
            xattr=w[13],
            atime=(w[0], w[1]),
            mtime=(w[2], w[3]),
            ctime=(w[4], w[5]),
            crtime=(w[6], w[7]),
            symlink=symlink,
        )
    )


def znode_phys_set_times(
    bonus: bytes, byteorder: str, mtime: tuple[int, int], ctime: tuple[int, int]
) -> bytes:
    """An old-style znode_phys_t bonus with new zp_mtime and zp_ctime (seconds, ns), as
    a write sets them (zfs_write: ZFS_ACTIME_CHANGED)."""
    out = bytearray(bonus)
    struct.pack_into(f"{byteorder}4Q", out, 16, mtime[0] & (2**64 - 1), mtime[1],
                     ctime[0] & (2**64 - 1), ctime[1])  # fmt: skip
    return bytes(out)


def encode_znode_phys(z: Znode, acl: bytes, byteorder: str) -> bytes:
    """The 264-byte old-style znode_phys_t of `z` with zp_acl `acl` (88 bytes), the
    inverse of parse_znode_phys for files without an inline symlink."""
    if len(acl) != ZNODE_PHYS_SIZE - 8 * _U64_FIELDS:
        raise ValueError(f"zfs_acl_phys_t of {len(acl)} bytes")
    mask = (1 << 64) - 1
    times = (*z.atime, *z.mtime, *z.ctime, *z.crtime)
    words = (*times, z.gen, z.mode, z.size, z.parent, z.links, z.xattr, z.rdev, z.flags,
             z.uid, z.gid, 0, 0, 0, 0)  # fmt: skip
    return struct.pack(f"{byteorder}{_U64_FIELDS}Q", *(w & mask for w in words)) + acl


def znode_phys_set_size(bonus: bytes, byteorder: str, size: int) -> bytes:
    """An old-style znode_phys_t bonus with a new zp_size."""
    out = bytearray(bonus)
    struct.pack_into(f"{byteorder}Q", out, 80, size)
    return bytes(out)


def znode_owner_ids(dn: DnodePhys) -> tuple[int, int] | None:
    """(uid, gid) whose space the object of `dn` is, for its object set's user and group
    usage (zpl_get_file_info); None for an object without an old-style znode (SA files
    are not written yet)."""
    if dn.dn_bonustype != DMU_OT_ZNODE or len(dn.dn_bonus) < ZNODE_PHYS_SIZE:
        return None
    uid, gid = struct.unpack_from(dn.byteorder + "2Q", dn.dn_bonus, 128)
    return uid, gid


def znode_from_sa(attrs: dict[str, bytes], byteorder: str) -> Znode:
    """Build a Znode from decoded SA attributes (see sa.parse_sa)."""

    def u64(name: str, default: int | None = None) -> int:
        raw = attrs.get(name)
        if raw is None or len(raw) < 8:
            if default is None:
                raise FSError(errno.EIO, f"znode: no {name}")
            return default
        return int.from_bytes(raw[:8], "little" if byteorder == "<" else "big")

    def time(name: str) -> tuple[int, int]:
        raw = attrs.get(name)
        if raw is None or len(raw) < 16:
            return (0, 0)
        sec, nsec = struct.unpack_from(f"{byteorder}2Q", raw)
        return sec, nsec

    return _checked(
        Znode(
            mode=u64("ZPL_MODE"),
            size=u64("ZPL_SIZE"),
            uid=u64("ZPL_UID", 0),
            gid=u64("ZPL_GID", 0),
            links=u64("ZPL_LINKS", 1),
            parent=u64("ZPL_PARENT", 0),
            gen=u64("ZPL_GEN", 0),
            flags=u64("ZPL_FLAGS", 0),
            rdev=u64("ZPL_RDEV", 0),
            xattr=u64("ZPL_XATTR", 0),
            atime=time("ZPL_ATIME"),
            mtime=time("ZPL_MTIME"),
            ctime=time("ZPL_CTIME"),
            crtime=time("ZPL_CRTIME"),
            symlink=attrs.get("ZPL_SYMLINK"),
            dxattr=attrs.get("ZPL_DXATTR"),
        )
    )
