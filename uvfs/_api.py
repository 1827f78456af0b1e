"""The driver API: what a filesystem server implements, in plain data.

A driver is two objects:

* a **driver type** (`DriverType`), registered under the ``uvfs.drivers`` entry-point
  group, which recognises its images (`probe`), describes them (`describe`) and opens them
  (`open`);
* a **filesystem** (`FileSystem`), one per mount, holding all of that mount's state (no
  module globals), whose async methods answer requests.

Every call takes and returns plain data: ints, bytes, strs and the frozen records below.
Names are ``bytes`` (file names on disk are bytes, not text). A node is named by its
inode number, an int the driver chooses; the broker shows it to the kernel unchanged
(except that the root is renumbered 1, which FUSE requires). A driver fails a request by
raising `FSError` with an errno; anything else it raises becomes EIO for that request
and a logged message, and the mount stays up. Drivers never import pyfuse3, so the same
driver can run inside the broker or in a process of its own.

Operations are one `Protocol` each, named after the syscall. A filesystem implements the
ones it supports; each protocol's docstring says what the broker does when it is absent.
The broker recognises an operation by its method name alone, so a filesystem must not use
those names (``open``, ``read``, ``close`` ...) for anything else, such as a constructor.
`lookup` and `getattr` are the only required ones. A filesystem that lacks `Write` is
read-only: the broker mounts it read-only and says so.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from uvfs._memory import MemoryBudget

if TYPE_CHECKING:
    from uvfs._image import ImageFile


class FSError(Exception):
    """A request failed with an errno: the one way a driver reports failure.

    Args:
        errno: the error number (``errno.ENOENT`` ...), passed to the kernel as is.
        message: optional detail for logs and for refusals shown to the user.
    """

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message or _errno.errorcode.get(self.errno, str(self.errno))


class Refusal(Exception):
    """An image cannot be mounted (unknown feature, bad version ...): one line for the user."""


class Attr(NamedTuple):
    """The attributes of one node, as stat(2) shows them. Times are in nanoseconds.

    Attr and DirEntry are NamedTuples, not frozen dataclasses like the other records: as
    immutable, and one is built for every node a request touches (every entry of a listing)
    at under half the cost. Change one with ``attr._replace(size=...)``.
    """

    ino: int
    mode: int  # file type bits (S_IFREG ...) and permission bits
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: int = 0  # device number of a character or block special file
    blocks: int = 0  # 512-byte units actually allocated
    blksize: int = 4096  # preferred I/O size
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    generation: int = 0


class DirEntry(NamedTuple):
    """One name in a directory and the attributes of the node it names."""

    name: bytes
    attr: Attr


@dataclass(frozen=True, slots=True)
class StatFS:
    """What statfs(2) shows. Counts are in units of `block_size`."""

    block_size: int
    blocks: int
    blocks_free: int
    blocks_avail: int
    files: int
    files_free: int
    name_max: int = 255


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: the calling process's credentials."""

    uid: int
    gid: int
    pid: int = 0
    umask: int = 0o022


@dataclass(frozen=True, slots=True)
class SetAttr:
    """The changes of one setattr call; fields left None are not changed."""

    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What the user asked for at mount time, for the driver's `open`."""

    writable: bool = False
    force: bool = False  # mount even an image whose state says it needs checking
    # The budget of the server's caches (-o cache_size), the broker's file data included:
    # a driver keeps what it caches of the image in `memory.lru(...)` maps, not its own.
    memory: MemoryBudget = field(default_factory=MemoryBudget)


# --- the filesystem: one protocol per operation -------------------------------------------


@runtime_checkable
class FileSystem(Protocol):
    """One mounted filesystem. Required: `root`, `lookup` and `getattr`."""

    root: int  # inode number of the root directory

    async def lookup(self, parent: int, name: bytes) -> Attr:
        """The node called `name` in directory `parent`; ENOENT when absent."""
        ...

    async def getattr(self, ino: int) -> Attr:
        """The attributes of node `ino`."""
        ...


@runtime_checkable
class ReadDir(Protocol):
    """Absent: every directory lists as empty."""

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        """All entries of directory `ino`, without "." and ".." (the broker adds those)."""
        ...


@runtime_checkable
class Open(Protocol):
    """Absent: opening always succeeds and the handle passed to `read` is 0."""

    async def open(self, ino: int, flags: int, caller: Caller) -> int:
        """Open file `ino` with open(2) `flags`; returns a handle the driver chooses.

        With O_TRUNC in `flags` the driver truncates the file to zero bytes: the kernel
        leaves that to open (absent, the broker truncates through `setattr`).
        """
        ...


@runtime_checkable
class Read(Protocol):
    """Absent: reading a file fails with EIO."""

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; shorter only at end of file."""
        ...


class Extent(NamedTuple):
    """`length` bytes of a file from file offset `offset`, stored as they are in source
    `source` (its index among the sources `DriverType.open` was given) from byte `position`."""

    offset: int
    length: int
    source: int
    position: int


@dataclass(frozen=True, slots=True)
class Layout:
    """Where bytes [start, end) of a file lie in the images (`ReadLayout`).

    `extents` are sorted, disjoint and inside [start, end); a byte of the range that none
    covers reads as zero (a hole). `size` is the file's size and ``end <= size``: a read at
    or past `size` is at end of file.
    """

    start: int
    end: int
    size: int
    extents: tuple[Extent, ...]


@runtime_checkable
class ReadLayout(Protocol):
    """Absent, or answering None: every read is the driver's `read`."""

    async def read_layout(self, ino: int, offset: int, size: int) -> Layout | None:
        """Where the bytes of regular file `ino` from `offset` lie in the images, for a
        caller that reads them there itself instead of calling `read` for each range (an
        isolated driver's broker does: a read then costs no message to the driver process).

        The layout covers at least [offset, min(offset + size, file size)); more is
        welcome, the caller keeps it. It must stay true until the file is written or
        truncated through this mount or the driver restarts: the caller drops it then.
        Return None for bytes not stored as they are (compressed, encrypted, inline in
        the inode, or a journal replayed in memory over the image) or that may change
        otherwise: `read` answers those. Errors as `read`'s.
        """
        ...


@runtime_checkable
class Release(Protocol):
    """Absent: nothing happens when the last reference to a handle goes."""

    async def release(self, ino: int, handle: int) -> None:
        """The handle returned by `open` or `create` is no longer used."""
        ...


@runtime_checkable
class ReadLink(Protocol):
    """Absent: readlink fails with EINVAL."""

    async def readlink(self, ino: int) -> bytes:
        """The target of symbolic link `ino`."""
        ...


@runtime_checkable
class StatFs(Protocol):
    """Absent: statfs shows an empty filesystem of 4 KiB blocks."""

    async def statfs(self) -> StatFS:
        """Totals for the whole filesystem."""
        ...


@runtime_checkable
class GetXattr(Protocol):
    """Absent: every node has no extended attributes (ENODATA)."""

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        """The value of extended attribute `name` (e.g. b"user.color"); ENODATA when unset."""
        ...


@runtime_checkable
class ListXattr(Protocol):
    """Absent: every node lists no extended attributes."""

    async def listxattr(self, ino: int) -> Sequence[bytes]:
        """The names of all extended attributes of `ino`."""
        ...


@runtime_checkable
class Forget(Protocol):
    """Absent: the broker forgets nodes without telling the driver."""

    def forget(self, ino: int) -> None:
        """The kernel holds no more references to `ino` (an unlinked file may now go)."""
        ...


@runtime_checkable
class Close(Protocol):
    """Absent: nothing happens at unmount."""

    async def close(self) -> None:
        """Unmount: write back everything and mark the image clean."""
        ...


# --- the write side -----------------------------------------------------------------------


@runtime_checkable
class Write(Protocol):
    """Absent: the filesystem is read-only and the broker mounts it read-only."""

    async def write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        """Write `data` at `offset`; returns the number of bytes written."""
        ...


@runtime_checkable
class Create(Protocol):
    """Absent: creating files fails with EROFS."""

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[Attr, int]:
        """Create and open regular file `name`; returns its attributes and a handle."""
        ...


@runtime_checkable
class MkNod(Protocol):
    """Absent: mknod fails with EROFS."""

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, caller: Caller) -> Attr:
        """Create a fifo, socket, device or regular file (type in `mode`)."""
        ...


@runtime_checkable
class MkDir(Protocol):
    """Absent: mkdir fails with EROFS."""

    async def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> Attr:
        """Create directory `name` in `parent`."""
        ...


@runtime_checkable
class SymLink(Protocol):
    """Absent: symlink fails with EROFS."""

    async def symlink(self, parent: int, name: bytes, target: bytes, caller: Caller) -> Attr:
        """Create symbolic link `name` pointing at `target`."""
        ...


@runtime_checkable
class Link(Protocol):
    """Absent: link fails with EROFS."""

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        """Add hard link `new_name` in `new_parent` to node `ino`."""
        ...


@runtime_checkable
class Unlink(Protocol):
    """Absent: unlink fails with EROFS."""

    async def unlink(self, parent: int, name: bytes) -> None:
        """Remove the non-directory `name` from `parent`."""
        ...


@runtime_checkable
class RmDir(Protocol):
    """Absent: rmdir fails with EROFS."""

    async def rmdir(self, parent: int, name: bytes) -> None:
        """Remove the empty directory `name` from `parent` (ENOTEMPTY otherwise)."""
        ...


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@runtime_checkable
class Rename(Protocol):
    """Absent: rename fails with EROFS."""

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        """Move `old_name` to `new_name`, replacing it; `flags` as renameat2(2)."""
        ...


@runtime_checkable
class SetAttrs(Protocol):
    """Absent: chmod, chown, truncate and utimens fail with EROFS."""

    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        """Apply `changes` (truncate when `size` is set); returns the new attributes."""
        ...


@runtime_checkable
class Fsync(Protocol):
    """Absent: fsync succeeds once the broker has passed every write to the driver."""

    async def fsync(self, ino: int, handle: int, datasync: bool) -> None:
        """Make everything written to `ino` durable on the image."""
        ...


@runtime_checkable
class Sync(Protocol):
    """Absent: the driver writes back only when asked to (fsync, unmount) or on its own."""

    async def sync(self) -> None:
        """Write back what has waited long enough; called every few seconds while mounted
        writable, so an idle mount does not keep changes in memory indefinitely."""
        ...


@runtime_checkable
class SetXattr(Protocol):
    """Absent: setxattr fails with ENOTSUP."""

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        """Set extended attribute `name`; `flags` as setxattr(2) (XATTR_CREATE/REPLACE)."""
        ...


@runtime_checkable
class RemoveXattr(Protocol):
    """Absent: removexattr fails with ENOTSUP."""

    async def removexattr(self, ino: int, name: bytes) -> None:
        """Remove extended attribute `name`; ENODATA when unset."""
        ...


# --- the driver type -----------------------------------------------------------------------

PROBE_SIZE = 512 * 1024  # how much of the first source `probe` sees: all of a ZFS label 0


@runtime_checkable
class DriverType(Protocol):
    """A kind of filesystem: registered under the ``uvfs.drivers`` entry-point group."""

    name: str  # what `uvfs mount -t NAME` selects

    def probe(self, head: bytes) -> bool:
        """Whether `head` (the first `PROBE_SIZE` bytes of the first source) is ours."""
        ...

    async def open(self, sources: Sequence[ImageFile], options: MountOptions) -> FileSystem:
        """Open the images for mounting; raises `Refusal` when they cannot be mounted."""
        ...

    async def describe(self, sources: Sequence[ImageFile]) -> str:
        """A human-readable summary for ``uvfs info`` (like ``dumpe2fs -h``)."""
        ...

    # Optional: ``identify(head) -> str``, what a recognised `head` holds as blkid names
    # it (``ext4``, ``zfs member``), for ``uvfs info`` of a disk's partitions. Without it,
    # the driver's `name`.
