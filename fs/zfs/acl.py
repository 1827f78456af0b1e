"""The trivial NFSv4 ACL a new file gets from its mode (zfs_acl.c, zfs_acl_chmod of the
pool generation written here), as a zfs_acl_phys_t for an old-style znode.

zfs_acl_phys_t (88 bytes at zp_acl): z_acl_extern_obj u64 (0: the ACEs are inline),
z_acl_size u32 (bytes of ACEs), z_acl_version u16 (1: ZFS_ACL_VERSION_FUID), z_acl_count
u16, then z_ace_data[72]. Each ACE here is a zfs_ace_hdr_t (8 bytes: type u16, flags u16,
access mask u32), as owner@, group@ and everyone@ take no id.

The ACL has six entries, a deny and an allow for owner@, group@ and everyone@ in that
order: each denies the read, write (and append) and execute rights its class lacks in the
mode and allows those it has; owner@ is also allowed to change attributes, extended
attributes, the ACL and the owner, which everyone@ is denied, and everyone@ is allowed to
read attributes, extended attributes and the ACL, and to synchronize. The znode's flags
then say the ACL is trivial, and that nobody is denied execute when all three classes
have it (ZFS_NO_EXECS_DENIED); directories carry ZFS_ACL_AUTO_INHERIT as well. This is
what zfs-fuse writes (the tests compare both with its files and directories).
"""

from __future__ import annotations

import struct

ZFS_ACL_VERSION_FUID = 1
ZFS_ACL_PHYS_SIZE = 88
ACE_ACCESS_ALLOWED, ACE_ACCESS_DENIED = 0, 1
ACE_OWNER, ACE_GROUP, ACE_IDENTIFIER_GROUP, ACE_EVERYONE = 0x1000, 0x2000, 0x40, 0x4000
ACE_READ_DATA, ACE_WRITE_DATA, ACE_APPEND_DATA, ACE_EXECUTE = 0x1, 0x2, 0x4, 0x20
ACE_READ_NAMED_ATTRS, ACE_WRITE_NAMED_ATTRS = 0x8, 0x10
ACE_READ_ATTRIBUTES, ACE_WRITE_ATTRIBUTES = 0x80, 0x100
ACE_READ_ACL, ACE_WRITE_ACL, ACE_WRITE_OWNER, ACE_SYNCHRONIZE = 0x20000, 0x40000, 0x80000, 0x100000
OWNER_ALLOW_MASK = ACE_WRITE_ACL | ACE_WRITE_OWNER | ACE_WRITE_ATTRIBUTES | ACE_WRITE_NAMED_ATTRS
EVERYONE_DENY_MASK = OWNER_ALLOW_MASK
EVERYONE_ALLOW_MASK = ACE_READ_ACL | ACE_READ_ATTRIBUTES | ACE_READ_NAMED_ATTRS | ACE_SYNCHRONIZE

# zp_flags (zfs_znode.h)
ZFS_ACL_TRIVIAL = 0x4
ZFS_ACL_AUTO_INHERIT = 0x40
ZFS_NO_EXECS_DENIED = 0x100
ZFS_ARCHIVE = 0x0000000800000000
ZFS_AV_MODIFIED = 0x0000040000000000


def _rights(bits: int) -> int:
    """The ACE rights of one rwx triple."""
    read = ACE_READ_DATA if bits & 4 else 0
    write = ACE_WRITE_DATA | ACE_APPEND_DATA if bits & 2 else 0
    return read | write | (ACE_EXECUTE if bits & 1 else 0)


def trivial_acl(mode: int, byteorder: str) -> bytes:
    """The 88-byte zfs_acl_phys_t of a new file or directory of permission bits `mode`."""
    classes = (
        (ACE_OWNER, (mode >> 6) & 7, 0, OWNER_ALLOW_MASK),
        (ACE_GROUP | ACE_IDENTIFIER_GROUP, (mode >> 3) & 7, 0, 0),
        (ACE_EVERYONE, mode & 7, EVERYONE_DENY_MASK, EVERYONE_ALLOW_MASK),
    )
    aces = b""
    for who, bits, deny_extra, allow_extra in classes:
        aces += struct.pack(
            f"{byteorder}HHI", ACE_ACCESS_DENIED, who, _rights(~bits & 7) | deny_extra
        )
        aces += struct.pack(f"{byteorder}HHI", ACE_ACCESS_ALLOWED, who, _rights(bits) | allow_extra)
    head = struct.pack(f"{byteorder}QIHH", 0, len(aces), ZFS_ACL_VERSION_FUID, len(aces) // 8)
    return (head + aces).ljust(ZFS_ACL_PHYS_SIZE, b"\0")


def trivial_acl_flags(mode: int, is_dir: bool) -> int:
    """The zp_flags of a new file or directory with the trivial ACL of `mode`."""
    flags = ZFS_ARCHIVE | ZFS_AV_MODIFIED | ZFS_ACL_TRIVIAL
    if mode & 0o111 == 0o111:
        flags |= ZFS_NO_EXECS_DENIED
    return flags | (ZFS_ACL_AUTO_INHERIT if is_dir else 0)
