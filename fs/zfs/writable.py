"""A pool mounted read-write: `WritableZfs`, the driver API's write side over PoolWriter.

Every request that changes something is one PoolWriter change followed by a txg sync,
under one lock, and the read side (a `ZfsFileSystem`) is then reopened on the new
uberblock. Reads therefore always see what was written, and everything a request
changed is on disk (flushed) when it answers: fsync, the periodic `sync` and unmount have
nothing left to do, and a kill at any moment leaves the pool at the last answered
change. Slow (a txg per request) but simple and correct; gathering changes into a txg
every few seconds needs the read side to read through the open txg, which is not done yet.

Inode numbers are the read side's (`index << 48 | object`, zpl.py): they stay valid
across syncs because no request adds or removes a dataset, so the index of each is fixed.

What is written (PoolWriter's limits, checked conservatively at mount time): pools of
versions 1-25, exported cleanly, every member present; filesystems of ZPL version 4 or
older (znode_phys_t files: no SA). Anything else mounts read-only and says why in one
line. Served: write, create, mkdir, unlink, rmdir, rename (no RENAME_EXCHANGE), setattr.
Not yet: symlink, link, mknod, and extended attribute changes (EOPNOTSUPP); snapshots
and the `.zfs` directories are read-only (EROFS); a child dataset's mount point cannot be
removed or renamed (EBUSY), nor can anything move between datasets (EXDEV). A file
unlinked while open is freed at once (the unlinked set is not kept yet).

Permissions are the kernel's and the broker's, as for every driver (uvfs/_broker.py);
new nodes are owned by the caller.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence

import trio

from uvfs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Attr,
    Caller,
    DirEntry,
    FSError,
    ImageFile,
    MemoryBudget,
    Refusal,
    SetAttr,
    StatFS,
)

from .writer import PoolWriter
from .zpl import OBJ_BITS, OBJ_MASK, OBJ_SEALED, ZfsFileSystem

log = logging.getLogger("uvfs.zfs")


class ReadOnlyPool(Refusal):
    """The pool can be read but not written here (see the module notes)."""


class WritableZfs:
    """One pool mounted read-write. Open with `WritableZfs.load`; `close` at unmount."""

    def __init__(self, writer: PoolWriter, view: ZfsFileSystem, memory: MemoryBudget) -> None:
        self.writer = writer
        self.view = view
        self.memory = memory
        self.root = view.root
        self._lock = trio.Lock()

    @classmethod
    async def load(cls, images: Sequence[ImageFile], memory: MemoryBudget) -> WritableZfs:
        """Open the pool of member `images` (opened writable) for writing.

        Raises:
            ReadOnlyPool: one line naming the version or feature this writer does not keep.
        """
        try:
            writer = await PoolWriter.open(images)
        except Refusal as e:
            raise ReadOnlyPool(f"zfs: {e}") from None
        try:
            view = await ZfsFileSystem.from_pool(writer.pool, memory)
            for m in view.datasets:
                if not m.ds.is_snapshot and m.objset is not None and m.sa_attrs_obj:
                    raise ReadOnlyPool(
                        f"zfs: {m.ds.name}: ZPL version 5 (SA attributes) is not written yet"
                    )
        except BaseException:
            writer.close()
            raise
        return cls(writer, view, memory)

    # --- reads: the view of the last synced txg, which is the last change -----------------

    async def getattr(self, ino: int) -> Attr:
        return await self.view.getattr(ino)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        return await self.view.lookup(parent, name)

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        return await self.view.readdir(ino)

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return await self.view.read(ino, handle, offset, size)

    async def readlink(self, ino: int) -> bytes:
        return await self.view.readlink(ino)

    async def statfs(self) -> StatFS:
        return await self.view.statfs()

    async def listxattr(self, ino: int) -> Sequence[bytes]:
        return await self.view.listxattr(ino)

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return await self.view.getxattr(ino, name)

    # --- changes ----------------------------------------------------------------------------

    def _where(self, ino: int) -> tuple[str, int]:
        """(filesystem name, object) of inode `ino`; EROFS for snapshots and `.zfs`."""
        index, obj = ino >> OBJ_BITS, ino & OBJ_MASK
        if index >= len(self.view.datasets):
            raise FSError(errno.ESTALE, f"inode {ino:#x}: no such dataset")
        m = self.view.datasets[index]
        if m.ds.is_snapshot or m.objset is None or obj >= OBJ_SEALED:
            raise FSError(errno.EROFS, f"{m.ds.name}: not writable")
        return m.ds.name, obj

    def _not_mountpoint(self, parent: int, name: bytes) -> None:
        """EBUSY when `name` in directory `parent` is where a child dataset is shown."""
        index, obj = parent >> OBJ_BITS, parent & OBJ_MASK
        if name in self.view.mounts.get((index, obj), {}):
            raise FSError(errno.EBUSY, f"{name!r}: a dataset is mounted there")

    async def _commit(self) -> None:
        """Sync the txg and reopen the read side on it (the lock is held)."""
        await self.writer.sync()
        self.view = await ZfsFileSystem.from_pool(self.writer.pool, self.memory)

    async def write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        async with self._lock:
            dataset, obj = self._where(ino)
            await self.writer.write_file_range(dataset, obj, offset, data)
            await self._commit()
        return len(data)

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[Attr, int]:
        async with self._lock:
            dataset, obj = self._where(parent)
            self._not_mountpoint(parent, name)
            await self.writer.create(dataset, (obj, name), mode, caller.uid, caller.gid)
            await self._commit()
            return await self.view.lookup(parent, name), 0

    async def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> Attr:
        async with self._lock:
            dataset, obj = self._where(parent)
            self._not_mountpoint(parent, name)
            await self.writer.mkdir(dataset, (obj, name), mode, caller.uid, caller.gid)
            await self._commit()
            return await self.view.lookup(parent, name)

    async def unlink(self, parent: int, name: bytes) -> None:
        async with self._lock:
            dataset, obj = self._where(parent)
            self._not_mountpoint(parent, name)
            await self.writer.unlink(dataset, (obj, name))
            await self._commit()

    async def rmdir(self, parent: int, name: bytes) -> None:
        async with self._lock:
            dataset, obj = self._where(parent)
            self._not_mountpoint(parent, name)
            await self.writer.rmdir(dataset, (obj, name))
            await self._commit()

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise FSError(errno.EOPNOTSUPP, "zfs: RENAME_EXCHANGE is not written yet")
        async with self._lock:
            dataset, src = self._where(old_parent)
            other, dst = self._where(new_parent)
            if other != dataset:
                raise FSError(errno.EXDEV, f"{dataset} -> {other}: another dataset")
            self._not_mountpoint(old_parent, old_name)
            self._not_mountpoint(new_parent, new_name)
            if flags & RENAME_NOREPLACE:
                try:
                    await self.view.lookup(new_parent, new_name)
                except FSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                else:
                    raise FSError(errno.EEXIST, f"{new_name!r}: exists")
            await self.writer.rename(dataset, (src, old_name), (dst, new_name))
            await self._commit()

    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        async with self._lock:
            dataset, obj = self._where(ino)
            await self.writer.setattr(
                dataset,
                obj,
                mode=changes.mode,
                uid=changes.uid,
                gid=changes.gid,
                atime=None if changes.atime_ns is None else divmod(changes.atime_ns, 10**9),
                mtime=None if changes.mtime_ns is None else divmod(changes.mtime_ns, 10**9),
                size=changes.size,
            )
            await self._commit()
            return await self.view.getattr(ino)

    async def fsync(self, ino: int, handle: int, datasync: bool) -> None:
        """Nothing waits: every change was synced before it answered."""

    async def close(self) -> None:
        self.writer.close()
