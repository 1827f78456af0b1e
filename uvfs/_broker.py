"""The broker: kernel requests in, driver calls out, with the bookkeeping between them.

Theory of operation. The kernel names nodes by inode number and keeps a *lookup count* per
node: every successful lookup, create, mkdir, mknod, symlink, link and every entry of a
readdirplus reply adds one, and `forget` later takes them back. The broker mirrors those
counts and tells the driver (`Forget`) when a node's count drops to zero, which is when an
unlinked file may finally be freed. Inode numbers pass through unchanged, except that FUSE
insists the root is 1: the driver's root and the driver's inode 1 (if it has one) swap
numbers, which is its own inverse, so one function maps both ways.

Open files and directories get broker handles. A file handle remembers the node and the
driver's own handle (`read` and `write` arrive with the handle only). A directory handle
holds a snapshot of the listing taken when it is read from offset 0, so a readdir that spans
several kernel requests sees one consistent listing while entries come and go, as POSIX
allows; entry *i* of the snapshot has offset *i + 1*.

On a read-only mount nothing the driver says can change, so the broker also remembers
attributes, names (found or missing) and directory listings in a bounded LRU: after the
kernel lets them go (memory pressure, a dropped cache), they are answered again without
the driver. Not for a driver that implements `Forget`: its inode numbers are valid only
while the kernel holds them, so an answer remembered past a forget would name a node the
driver has dropped (ESTALE). On a writable mount the broker keeps no metadata: every
change passes through the kernel, which keeps its own name and attribute caches (and
cached misses) coherent as it makes them, so those caches may hold a minute there.

Permissions are the kernel's: every mount asks it to check modes (``default_permissions``)
and, for a driver that keeps extended attributes, POSIX ACLs too, exactly as it does for
ext4. What FUSE leaves to the filesystem the broker does for every driver: a new node in a
setgid directory takes the directory's group (a directory also the setgid bit), inherits
the directory's default ACL or else the caller's umask, and a chmod or an access ACL keeps
mode and ACL in step (`uvfs/_acl.py`). With ``fakeroot`` the mounting user's requests
reach the driver as root's, and the kernel checks nothing (no other user is let in).

Errors: a driver fails with `FSError`, which passes through. Anything else a driver raises
is a bug in the driver: it is logged with its traceback and the request fails with EIO; the
mount stays up. This module does not import pyfuse3 (the glue in `_fuse.py` does), so it can
be driven directly in tests.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from uvfs import _acl
from uvfs import _api as api
from uvfs._api import Attr, Caller, DirEntry, FSError, SetAttr, StatFS
from uvfs._lru import LRU

if TYPE_CHECKING:
    from uvfs._cache import BufferCache

log = logging.getLogger("uvfs.broker")

ROOT = 1  # FUSE's root inode number
NAME_MAX = 255  # bytes in one name, as every Linux filesystem
METADATA_ENTRIES = 100_000  # weight of the read-only metadata cache (a listing weighs its size)

_ABSENT = object()  # not in the metadata cache
_MISSING = object()  # cached: the name does not exist

_DAMAGE = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG})  # errnos of a damaged image
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _request(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Turn an unexpected exception from a driver into EIO for this request alone; log the
    driver's account of damage it met (EIO, EUCLEAN, EBADMSG with a message naming the
    object), as the kernel logs a filesystem error."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except FSError as e:
            if e.errno in _DAMAGE and e.message:
                log.warning("%s: %s", method.__name__, e.message)
            raise
        except Exception:
            log.exception("driver failed in %s; answering EIO", method.__name__)
            raise FSError(errno.EIO) from None

    return guarded


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the kernel may cache what the broker tells it, in seconds."""

    entry: float  # name -> inode
    attr: float  # inode -> attributes
    negative: float  # "no such name"; 0 disables caching it
    directory_entry: float | None = None  # name -> inode for directories; None: `entry`

    def for_entry(self, mode: int) -> float:
        """How long the kernel may keep a name that leads to a node of `mode`."""
        if self.directory_entry is not None and stat.S_ISDIR(mode):
            return self.directory_entry
        return self.entry


def in_group(caller: Caller, gid: int) -> bool:
    """Whether `gid` is the caller's group or one of its supplementary groups (which FUSE
    does not pass on, so they are read from /proc while the request is in flight)."""
    if caller.gid == gid:
        return True
    try:
        with open(f"/proc/{caller.pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return str(gid) in line.split()[1:]
    except OSError:
        pass  # the caller is gone: it is no member of anything any more
    return False


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """What `uvfs stats` shows about the broker itself."""

    requests: int
    errors: int  # requests answered with an errno
    nodes: int  # nodes the kernel holds references to
    open_files: int
    open_dirs: int
    metadata_hits: int  # answered from the read-only metadata cache
    metadata_misses: int


@dataclass(slots=True)
class _OpenFile:
    ino: int
    handle: int


@dataclass(slots=True)
class _OpenDir:
    ino: int
    entries: Sequence[DirEntry] = ()


class Broker:
    """Serves one mounted filesystem.

    Args:
        fs: the driver's filesystem object.
        read_only: the mount is read-only (nothing can change under the kernel's caches).
        cache: the process's buffer cache, which file data passes through; None reads and
            writes straight through to the driver (``-o cache_size=0``).
        mount_id: this mount's key in the cache.
    """

    def __init__(
        self,
        fs: api.FileSystem,
        *,
        read_only: bool,
        cache: BufferCache | None,
        mount_id: int,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.fs = fs
        self._protocols: dict[type, bool] = {}
        self.read_only = read_only
        self.cache = cache
        self.mount_id = mount_id
        self.timeouts = timeouts or (
            Timeouts(entry=300.0, attr=300.0, negative=300.0)
            if read_only
            else Timeouts(entry=60.0, attr=60.0, negative=60.0)
        )
        # The kernel applies POSIX ACLs only when the driver can show them as xattrs.
        self.acls = self._supports(api.GetXattr)
        self._root = fs.root
        self._lookups: dict[int, int] = {}
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _OpenDir] = {}
        self._handles = itertools.count(1)
        self._requests = 0
        self._errors = 0
        remember = read_only and not self._supports(api.Forget)
        self._metadata: LRU[tuple, Any] | None = LRU(METADATA_ENTRIES) if remember else None
        self._metadata_hits = 0
        self._metadata_misses = 0

    # --- numbering ------------------------------------------------------------------------

    def _swap(self, ino: int) -> int:
        """Kernel inode number <-> driver inode number (the same map both ways)."""
        if ino == ROOT:
            return self._root
        if ino == self._root:
            return ROOT
        return ino

    def to_kernel(self, attr: Attr) -> Attr:
        """`attr` with its inode number as the kernel knows it."""
        return (
            attr if attr.ino not in (ROOT, self._root) else attr._replace(ino=self._swap(attr.ino))
        )

    def _remember(self, attr: Attr) -> Attr:
        """Count one kernel reference to the node and return its kernel-side attributes."""
        self._lookups[attr.ino] = self._lookups.get(attr.ino, 0) + 1
        return self.to_kernel(attr)

    def _created(self, attr: Attr) -> Attr:
        """`_remember` a node just created: drop cached data of a freed node of that number."""
        if self.cache is not None:
            self.cache.invalidate((self.mount_id, attr.ino))
        return self._remember(attr)

    def _supports(self, protocol: type) -> bool:
        """Whether the filesystem implements `protocol`; asked once per protocol, because
        isinstance against a runtime-checkable protocol costs microseconds per call."""
        supported = self._protocols.get(protocol)
        if supported is None:
            supported = self._protocols[protocol] = isinstance(self.fs, protocol)
        return supported

    def _need(self, protocol: type, absent_errno: int) -> Any:
        if not self._supports(protocol):
            raise FSError(absent_errno)
        return self.fs

    def forget_driver_state(
        self, names: Iterable[tuple[int, bytes]] = ()
    ) -> tuple[set[int], list[tuple[int, bytes]]]:
        """Forget every answer of the driver kept here, after it lost changes it had
        answered (the process of an isolated driver was restarted): the mount's file data
        in the buffer cache and remembered metadata. Returned in the kernel's numbers: the
        nodes it holds, and the driver's `names` (parent, name) it may have lost changes
        of, whose cached data, attributes and entries the kernel must let go too."""
        if self.cache is not None:
            self.cache.invalidate_mount(self.mount_id)
        if self._metadata is not None:
            self._metadata.clear()
        entries = [(self._swap(parent), name) for parent, name in names]
        return {ROOT, *map(self._swap, self._lookups)}, entries

    # --- statistics -------------------------------------------------------------------------

    def count(self, failed: bool) -> None:
        """Record one request (the glue calls this for every request it answers)."""
        self._requests += 1
        self._errors += failed

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            requests=self._requests,
            errors=self._errors,
            nodes=len(self._lookups),
            open_files=len(self._files),
            open_dirs=len(self._dirs),
            metadata_hits=self._metadata_hits,
            metadata_misses=self._metadata_misses,
        )

    async def _remembered(self, key: tuple, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """`fetch()`, or what it returned before, on a read-only mount."""
        if self._metadata is None:
            return await fetch()
        value = self._metadata.get(key, _ABSENT)
        if value is not _ABSENT:
            self._metadata_hits += 1
            return value
        self._metadata_misses += 1
        value = await fetch()
        listing = not (value is _MISSING or isinstance(value, Attr))
        self._metadata.put(key, value, len(value) + 1 if listing else 1)
        return value

    # --- names and attributes ---------------------------------------------------------------

    @_request
    async def lookup(self, parent: int, name: bytes) -> Attr | None:
        """The named node, or None for a missing name the kernel may cache as missing."""
        if len(name) > NAME_MAX:
            # FUSE leaves NAME_MAX to the server; every create, link or rename of a name
            # looks it up first, so this one check covers them all, for every driver.
            raise FSError(errno.ENAMETOOLONG)
        parent = self._swap(parent)

        async def fetch() -> Any:
            try:
                return await self.fs.lookup(parent, name)
            except FSError as e:
                if e.errno == errno.ENOENT and self.timeouts.negative:
                    return _MISSING
                raise

        attr = await self._remembered(("entry", parent, name), fetch)
        return None if attr is _MISSING else self._remember(attr)

    def forget(self, ino: int, count: int) -> None:
        ino = self._swap(ino)
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        if self._supports(api.Forget):
            try:
                self.fs.forget(ino)
            except Exception:
                log.exception("driver failed in forget(%d)", ino)

    @_request
    async def getattr(self, ino: int) -> Attr:
        ino = self._swap(ino)
        return self.to_kernel(await self._remembered(("attr", ino), lambda: self.fs.getattr(ino)))

    @_request
    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        fs = self._need(api.SetAttrs, errno.EROFS)
        ino = self._swap(ino)
        if changes.size is None or self.cache is None:
            attr = await fs.setattr(ino, changes, caller)
        else:
            attr = await self.cache.truncate(
                (self.mount_id, ino), changes.size, lambda: fs.setattr(ino, changes, caller)
            )
        if changes.mode is not None and self.acls and not stat.S_ISLNK(attr.mode):
            await self._chmod_acl(ino, attr.mode)
        return self.to_kernel(attr)

    @_request
    async def readlink(self, ino: int) -> bytes:
        return await self._need(api.ReadLink, errno.EINVAL).readlink(self._swap(ino))

    @_request
    async def statfs(self) -> StatFS:
        if not self._supports(api.StatFs):
            return StatFS(
                block_size=4096, blocks=0, blocks_free=0, blocks_avail=0, files=0, files_free=0
            )
        return await self.fs.statfs()

    # --- directories ------------------------------------------------------------------------

    def opendir(self, ino: int) -> int:
        fh = next(self._handles)
        self._dirs[fh] = _OpenDir(self._swap(ino))
        return fh

    @_request
    async def readdir(self, fh: int, start: int) -> Sequence[DirEntry]:
        """Entries from offset `start` on; entry i of the result has offset start + i + 1.

        The attributes are driver-side (see `to_kernel`); pass each entry the kernel accepts
        to `entry_sent`.
        """
        handle = self._dirs[fh]
        if start == 0:
            listing = (
                await self._remembered(("dir", handle.ino), lambda: self.fs.readdir(handle.ino))
                if self._supports(api.ReadDir)
                else ()
            )
            # "." and ".." need only the directory's number and type: the kernel takes no
            # reference for them and ignores their other attributes (fuse_direntplus_link),
            # so the driver is not asked for them (for an isolated driver, a round trip per
            # directory listed: half of those `find` costs).
            own = Attr(handle.ino, stat.S_IFDIR, 2, 0, 0, 0)
            handle.entries = [DirEntry(b".", own), DirEntry(b"..", own), *listing]
        return handle.entries[start:]

    def entry_sent(self, entry: DirEntry) -> None:
        """The kernel accepted `entry` in a readdirplus reply and took a reference to it."""
        if entry.name not in (b".", b".."):
            self._remember(entry.attr)

    def releasedir(self, fh: int) -> None:
        del self._dirs[fh]

    # --- files ------------------------------------------------------------------------------

    async def _open(self, ino: int, flags: int, caller: Caller) -> int:
        if self._supports(api.Open):
            return await self.fs.open(ino, flags, caller)
        if flags & os.O_TRUNC:
            await self._need(api.SetAttrs, errno.EROFS).setattr(ino, SetAttr(size=0), caller)
        return 0

    @_request
    async def open(self, ino: int, flags: int, caller: Caller) -> int:
        ino = self._swap(ino)
        if flags & os.O_TRUNC and self.cache is not None:
            # libfuse's atomic O_TRUNC leaves the truncation to open: the cache must hear
            # of it, or it would answer reads with the file's old bytes.
            handle = await self.cache.truncate(
                (self.mount_id, ino), 0, lambda: self._open(ino, flags, caller)
            )
        else:
            handle = await self._open(ino, flags, caller)
        fh = next(self._handles)
        self._files[fh] = _OpenFile(ino, handle)
        return fh

    @_request
    async def read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._files[fh]
        fs = self._need(api.Read, errno.EIO)
        if self.cache is None:
            return await fs.read(f.ino, f.handle, offset, size)
        return await self.cache.read(
            (self.mount_id, f.ino),
            offset,
            size,
            lambda off, n: fs.read(f.ino, f.handle, off, n),
        )

    @_request
    async def write(self, fh: int, offset: int, data: bytes) -> int:
        f = self._files[fh]
        fs = self._need(api.Write, errno.EROFS)
        if self.cache is None:
            return await fs.write(f.ino, f.handle, offset, data)
        return await self.cache.write(
            (self.mount_id, f.ino),
            offset,
            data,
            lambda off, buf: fs.write(f.ino, f.handle, off, buf),
        )

    @_request
    async def fsync(self, fh: int, datasync: bool) -> None:
        f = self._files[fh]
        if self._supports(api.Fsync):
            await self.fs.fsync(f.ino, f.handle, datasync)

    @_request
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        if self._supports(api.Fsync):
            await self.fs.fsync(self._dirs[fh].ino, 0, datasync)

    @_request
    async def sync(self) -> None:
        """Let the driver write back what has waited (the mount calls this periodically)."""
        if self._supports(api.Sync):
            await self.fs.sync()

    @_request
    async def release(self, fh: int) -> None:
        f = self._files.pop(fh)
        if self._supports(api.Release):
            await self.fs.release(f.ino, f.handle)

    # --- creating and removing names --------------------------------------------------------

    async def _inherit(
        self, parent: int, mode: int, caller: Caller
    ) -> tuple[_acl.Inherited, Caller]:
        """The mode and ACLs a node made with `mode` under `parent` gets, and the caller
        whose group it takes (a setgid directory's own)."""
        directory = await self.fs.getattr(parent)
        if directory.mode & stat.S_ISGID:
            caller = replace(caller, gid=directory.gid)
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        if not self.acls:
            return _acl.Inherited(mode), caller  # the kernel applied the umask
        try:
            default = await self.fs.getxattr(parent, _acl.DEFAULT)
        except FSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
            default = None
        return _acl.inherit(default, mode, caller.umask), caller

    async def _store_acls(self, ino: int, inherited: _acl.Inherited) -> None:
        for name, value in ((_acl.ACCESS, inherited.access), (_acl.DEFAULT, inherited.default)):
            if value is not None:
                await self._need(api.SetXattr, errno.ENOTSUP).setxattr(ino, name, value, 0)

    async def _chmod_acl(self, ino: int, mode: int) -> None:
        """Keep the node's access ACL in step with its new mode, as chmod(2) does."""
        try:
            value = await self.fs.getxattr(ino, _acl.ACCESS)
        except FSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP):
                return
            raise
        await self.fs.setxattr(
            ino, _acl.ACCESS, _acl.encode(_acl.chmod(_acl.decode(value), mode)), 0
        )

    @_request
    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[Attr, int]:
        fs = self._need(api.Create, errno.EROFS)
        parent = self._swap(parent)
        new, caller = await self._inherit(parent, mode, caller)
        attr, handle = await fs.create(parent, name, new.mode, flags, caller)
        fh = next(self._handles)
        self._files[fh] = _OpenFile(attr.ino, handle)
        await self._store_acls(attr.ino, new)
        return self._created(attr), fh

    @_request
    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, caller: Caller) -> Attr:
        fs = self._need(api.MkNod, errno.EROFS)
        parent = self._swap(parent)
        new, caller = await self._inherit(parent, mode, caller)
        attr = await fs.mknod(parent, name, new.mode, rdev, caller)
        await self._store_acls(attr.ino, new)
        return self._created(attr)

    @_request
    async def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> Attr:
        fs = self._need(api.MkDir, errno.EROFS)
        parent = self._swap(parent)
        new, caller = await self._inherit(parent, (mode & 0o7777) | stat.S_IFDIR, caller)
        attr = await fs.mkdir(parent, name, new.mode, caller)
        await self._store_acls(attr.ino, new)
        return self._created(attr)

    @_request
    async def symlink(self, parent: int, name: bytes, target: bytes, caller: Caller) -> Attr:
        fs = self._need(api.SymLink, errno.EROFS)
        parent = self._swap(parent)
        _, caller = await self._inherit(parent, stat.S_IFLNK | 0o777, caller)
        return self._created(await fs.symlink(parent, name, target, caller))

    @_request
    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        fs = self._need(api.Link, errno.EROFS)
        return self._remember(await fs.link(self._swap(ino), self._swap(new_parent), new_name))

    @_request
    async def unlink(self, parent: int, name: bytes) -> None:
        await self._need(api.Unlink, errno.EROFS).unlink(self._swap(parent), name)

    @_request
    async def rmdir(self, parent: int, name: bytes) -> None:
        await self._need(api.RmDir, errno.EROFS).rmdir(self._swap(parent), name)

    @_request
    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        await self._need(api.Rename, errno.EROFS).rename(
            self._swap(old_parent), old_name, self._swap(new_parent), new_name, flags
        )

    # --- extended attributes ----------------------------------------------------------------

    @_request
    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return await self._need(api.GetXattr, errno.ENODATA).getxattr(self._swap(ino), name)

    @_request
    async def listxattr(self, ino: int) -> Sequence[bytes]:
        if not self._supports(api.ListXattr):
            return ()
        return await self.fs.listxattr(self._swap(ino))

    @_request
    async def setxattr(
        self, ino: int, name: bytes, value: bytes, flags: int, caller: Caller
    ) -> None:
        fs = self._need(api.SetXattr, errno.ENOTSUP)
        ino = self._swap(ino)
        if name != _acl.ACCESS or not self.acls:
            await fs.setxattr(ino, name, value, flags)
            return
        # An access ACL sets the mode's rwx bits; one that says no more is not stored.
        attr = await fs.getattr(ino)
        mode, extended = _acl.mode_from_acl(_acl.decode(value), attr.mode)
        if caller.uid != 0 and not in_group(caller, attr.gid):
            mode &= ~stat.S_ISGID
        if extended:
            await fs.setxattr(ino, name, value, flags)
        else:
            try:
                await self._need(api.RemoveXattr, errno.ENOTSUP).removexattr(ino, name)
            except FSError as e:
                if e.errno != errno.ENODATA:
                    raise
        if mode != attr.mode:
            await self._need(api.SetAttrs, errno.EROFS).setattr(
                ino, SetAttr(mode=mode & 0o7777), caller
            )

    @_request
    async def removexattr(self, ino: int, name: bytes) -> None:
        await self._need(api.RemoveXattr, errno.ENOTSUP).removexattr(self._swap(ino), name)

    # --- unmount ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Unmount: release what the kernel left open, then let the driver write back."""
        for fh in list(self._files):
            with contextlib.suppress(FSError):
                await self.release(fh)
        if self.cache is not None:
            self.cache.drop_mount(self.mount_id)
        if self._supports(api.Close):
            await self.fs.close()
