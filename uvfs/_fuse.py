"""The pyfuse3 glue: the request handlers (with `_mount.py`, the only users of pyfuse3).

Each handler converts pyfuse3's arguments to plain data, asks the broker, and converts the
answer back. Errors leave as `pyfuse3.FUSEError`; an exception of any other kind would stop
pyfuse3's main loop, so `_answer` turns it into EIO and logs it: one bad request never
takes the mount down.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence

import pyfuse3
import trio

from uvfs._api import Attr, Caller, FSError, SetAttr
from uvfs._broker import Broker

log = logging.getLogger("uvfs.fuse")


class _Answer:
    """Around each handler: counts the request, turns `FSError` into pyfuse3's error and
    anything else into a logged EIO. A class, not a generator: it runs on every request,
    and holds no state between them, so one instance serves all."""

    def __init__(self, broker: Broker) -> None:
        self._count = broker.count

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: object
    ) -> None:
        if kind is None:
            self._count(False)
            return
        if kind is pyfuse3.FUSEError or not issubclass(kind, Exception):
            return  # already an answer, or a cancellation: let it pass as it is
        self._count(True)
        if isinstance(error, FSError):
            raise pyfuse3.FUSEError(error.errno) from None
        log.error("request failed in the broker; answering EIO", exc_info=error)
        raise pyfuse3.FUSEError(errno.EIO) from None


class FuseOperations(pyfuse3.Operations):
    """pyfuse3's request handlers, each a thin translation to a `Broker` call.

    Args:
        broker: the mount's broker.
        fakeroot: the uid whose requests reach the driver as root's (``-o fakeroot``), or
            None. The kernel is then not asked to check permissions, so no ACLs either.
    """

    supports_dot_lookup = False  # no NFS export: the kernel never looks up "." or ".."
    enable_writeback_cache = False  # writes go through, so the broker's cache sees each one

    def __init__(self, broker: Broker, fakeroot: int | None = None) -> None:
        super().__init__()
        self.broker = broker
        self.fakeroot = fakeroot
        # Read by pyfuse3 at INIT: the kernel then checks ACLs and leaves the umask to us.
        self.enable_acl = broker.acls and fakeroot is None
        self.initialized = trio.Event()
        self._answering = _Answer(broker)

    def _caller(self, ctx: pyfuse3.RequestContext) -> Caller:
        if ctx.uid == self.fakeroot:
            return Caller(uid=0, gid=0, pid=ctx.pid, umask=ctx.umask)
        return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)

    def init(self) -> None:
        # Called while the kernel's INIT request is answered; the reply goes out before
        # any other task runs, so a task woken by this event sees an initialized mount.
        self.initialized.set()

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.ino
        entry.generation = attr.generation
        entry.entry_timeout = self.broker.timeouts.for_entry(attr.mode)
        entry.attr_timeout = self.broker.timeouts.attr
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_rdev = attr.rdev
        entry.st_size = attr.size
        entry.st_blksize = attr.blksize
        entry.st_blocks = attr.blocks
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        return entry

    def _negative(self) -> pyfuse3.EntryAttributes:
        """A cacheable "no such name": inode 0 with a timeout."""
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = 0
        entry.entry_timeout = self.broker.timeouts.negative
        return entry

    def _file_info(self, fh: int) -> pyfuse3.FileInfo:
        # The image is locked against other writers and every write passes through this
        # mount, so the kernel's page cache of a file stays valid across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    # --- names and attributes ---------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._answering:
            attr = await self.broker.lookup(parent_inode, name)
            return self._negative() if attr is None else self._entry(attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        with self._answering:
            for ino, count in inode_list:
                self.broker.forget(ino, count)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        with self._answering:
            return self._entry(await self.broker.getattr(inode))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changes = SetAttr(
            mode=attr.st_mode & 0o7777 if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        with self._answering:
            return self._entry(await self.broker.setattr(inode, changes, self._caller(ctx)))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        with self._answering:
            return await self.broker.readlink(inode)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        with self._answering:
            s = await self.broker.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = s.block_size
        data.f_blocks, data.f_bfree, data.f_bavail = s.blocks, s.blocks_free, s.blocks_avail
        data.f_files, data.f_ffree, data.f_favail = s.files, s.files_free, s.files_free
        data.f_namemax = s.name_max
        return data

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        with self._answering:
            return self.broker.opendir(inode)

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        with self._answering:
            entries = await self.broker.readdir(fh, start_id)
            for offset, entry in enumerate(entries, start_id + 1):
                attr = self._entry(self.broker.to_kernel(entry.attr))
                if not pyfuse3.readdir_reply(token, entry.name, attr, offset):
                    break
                self.broker.entry_sent(entry)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        with self._answering:
            await self.broker.fsyncdir(fh, datasync)

    async def releasedir(self, fh: int) -> None:
        with self._answering:
            self.broker.releasedir(fh)

    # --- files ------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        with self._answering:
            return self._file_info(await self.broker.open(inode, flags, self._caller(ctx)))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with self._answering:
            return await self.broker.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with self._answering:
            return await self.broker.write(fh, off, buf)

    # No flush handler: pyfuse3 answers ENOSYS, after which the kernel sends no FLUSH on
    # close at all (one request less per file). Nothing is held back per open file.

    async def fsync(self, fh: int, datasync: bool) -> None:
        with self._answering:
            await self.broker.fsync(fh, datasync)

    async def release(self, fh: int) -> None:
        with self._answering:
            await self.broker.release(fh)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        with self._answering:
            attr, fh = await self.broker.create(parent_inode, name, mode, flags, self._caller(ctx))
            return self._file_info(fh), self._entry(attr)

    # --- creating and removing names --------------------------------------------------------

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._answering:
            return self._entry(
                await self.broker.mknod(parent_inode, name, mode, rdev, self._caller(ctx))
            )

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._answering:
            return self._entry(await self.broker.mkdir(parent_inode, name, mode, self._caller(ctx)))

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._answering:
            return self._entry(
                await self.broker.symlink(parent_inode, name, target, self._caller(ctx))
            )

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._answering:
            return self._entry(await self.broker.link(inode, new_parent_inode, new_name))

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with self._answering:
            await self.broker.unlink(parent_inode, name)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with self._answering:
            await self.broker.rmdir(parent_inode, name)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        with self._answering:
            await self.broker.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        with self._answering:
            return await self.broker.getxattr(inode, name)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        with self._answering:
            return await self.broker.listxattr(inode)

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        # pyfuse3 does not pass setxattr(2)'s XATTR_CREATE/XATTR_REPLACE flags on.
        with self._answering:
            await self.broker.setxattr(inode, name, value, 0, self._caller(ctx))

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with self._answering:
            await self.broker.removexattr(inode, name)
