"""POSIX ACLs as the kernel keeps them in sync with file modes: pure functions, no I/O.

Why the broker needs this. Every uvfs mount lets the kernel check permissions
(``default_permissions``) and negotiates FUSE's POSIX ACL support, so the kernel applies
ACLs stored in the image exactly as it does for ext4. FUSE leaves three jobs to the
filesystem, which ext4 does in the kernel (fs/posix_acl.c) and the broker does here for
every driver that stores extended attributes:

* **create**: a new node in a directory with a default ACL gets an access ACL derived from
  it and the requested mode (`inherit`); a new directory also inherits the default ACL;
  without one, the caller's umask applies. (ext4 ignores the umask under a default ACL;
  FUSE applies it before the request arrives unless the server asks for FUSE_DONT_MASK,
  which pyfuse3 cannot, so there a new node's mode is the umask's and the ACL's both.)
* **chmod**: a node's access ACL follows its new mode (`chmod`);
* **setting an access ACL** changes the mode, and an ACL that says no more than the mode is
  not stored at all (`mode_from_acl`).

ACLs travel as the kernel's xattr value (``system.posix_acl_access`` / ``_default``): a
4-byte little-endian version (2), then 8-byte entries (tag u16, permissions u16, id u32).
The kernel validates and sorts an ACL before it reaches us, so `decode` only has to reject
what no kernel would send.
"""

from __future__ import annotations

import errno
import stat
import struct
from dataclasses import dataclass, replace

from uvfs._api import FSError

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"

XATTR_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_RWX = 0o7


@dataclass(frozen=True, slots=True)
class Entry:
    """One ACL entry: whom it names (`tag`, and `id` for USER and GROUP) and its rwx bits."""

    tag: int
    perm: int
    id: int = UNDEFINED_ID


Acl = tuple[Entry, ...]


def decode(value: bytes) -> Acl:
    """An xattr value -> its entries; EINVAL for anything that is not a version-2 ACL."""
    body = len(value) - _HEADER.size
    if body < 0 or body % _ENTRY.size or _HEADER.unpack_from(value)[0] != XATTR_VERSION:
        raise FSError(errno.EINVAL, "not a POSIX ACL")
    fields = _ENTRY.iter_unpack(memoryview(value)[_HEADER.size :])
    entries = tuple(Entry(tag, perm & _RWX, ident) for tag, perm, ident in fields)
    if any(e.tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) for e in entries):
        raise FSError(errno.EINVAL, "ACL entry with an unknown tag")
    return entries


def encode(acl: Acl) -> bytes:
    """Entries -> the xattr value the kernel reads."""
    return _HEADER.pack(XATTR_VERSION) + b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in acl)


def mode_from_acl(acl: Acl, mode: int) -> tuple[int, bool]:
    """`mode` with its rwx bits taken from `acl`, and whether the ACL says more than that.

    As posix_acl_equiv_mode: the group bits come from the mask when there is one. An ACL
    that says no more (only owner, group and other) need not be stored.
    """
    bits = 0
    extended = False
    mask = None
    for e in acl:
        if e.tag == USER_OBJ:
            bits |= e.perm << 6
        elif e.tag == GROUP_OBJ:
            bits |= e.perm << 3
        elif e.tag == OTHER:
            bits |= e.perm
        else:
            extended = True
            if e.tag == MASK:
                mask = e.perm
    if mask is not None:
        bits = (bits & ~0o070) | mask << 3
    return (mode & ~0o777) | bits, extended


def chmod(acl: Acl, mode: int) -> Acl:
    """`acl` after a chmod to `mode` (posix_acl_chmod): owner, mask (else group), other."""
    has_mask = any(e.tag == MASK for e in acl)
    wanted = {
        USER_OBJ: (mode >> 6) & _RWX,
        MASK: (mode >> 3) & _RWX,
        GROUP_OBJ: (mode >> 3) & _RWX,
        OTHER: mode & _RWX,
    }
    if has_mask:
        del wanted[GROUP_OBJ]
    return tuple(replace(e, perm=wanted[e.tag]) if e.tag in wanted else e for e in acl)


@dataclass(frozen=True, slots=True)
class Inherited:
    """What a new node gets from its directory: its mode and the ACLs to store on it."""

    mode: int
    access: bytes | None = None  # system.posix_acl_access, if it says more than the mode
    default: bytes | None = None  # system.posix_acl_default, for a new directory


def inherit(parent_default: bytes | None, mode: int, umask: int) -> Inherited:
    """The mode and ACLs of a node created with `mode` under a directory whose default ACL
    is `parent_default` (posix_acl_create). Without a default ACL the umask applies."""
    if parent_default is None:
        return Inherited(mode & ~umask)
    if stat.S_ISLNK(mode):
        return Inherited(mode)  # symlinks have no ACLs and always 0777
    bits = mode & 0o777
    masked = []
    group_at = mask_at = None
    for e in decode(parent_default):
        if e.tag == USER_OBJ:
            e = replace(e, perm=e.perm & (bits >> 6))
            bits &= (e.perm << 6) | ~0o700
        elif e.tag == OTHER:
            e = replace(e, perm=e.perm & bits)
            bits &= e.perm | ~0o007
        elif e.tag == GROUP_OBJ:
            group_at = len(masked)
        elif e.tag == MASK:
            mask_at = len(masked)
        masked.append(e)
    at = mask_at if mask_at is not None else group_at
    if at is None:
        raise FSError(errno.EIO, "default ACL without a group entry")
    e = masked[at]
    masked[at] = replace(e, perm=e.perm & (bits >> 3))
    bits &= (masked[at].perm << 3) | ~0o070
    access = tuple(masked)
    new_mode = (mode & ~0o777) | (bits & 0o777)
    extended = any(e.tag in (USER, GROUP, MASK) for e in access)
    return Inherited(
        mode=new_mode,
        access=encode(access) if extended else None,
        default=parent_default if stat.S_ISDIR(mode) else None,
    )
