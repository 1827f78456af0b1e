"""The in-memory tree of ``_ramtree.py`` as a writable uvfs driver: the write floor's uvfs side.

Written as docs/writing-a-driver.md shows a driver, with the write operations of the driver
API, each a direct call on the shared `RamTree`; ``_bare_ram.py`` serves the same tree with
pyfuse3 alone. Mounted by module path, with a spec file as its source:
``uvfs mount -t tools.bench._ramfs:DRIVER SPEC MOUNTPOINT``.
"""

from __future__ import annotations

import errno

import uvfs

from ._driver import SpecDriver
from ._ramtree import ROOT, RamNode, RamTree


def _attr(node: RamNode) -> uvfs.Attr:
    return uvfs.Attr(
        ino=node.ino,
        mode=node.mode,
        nlink=node.nlink,
        uid=node.uid,
        gid=node.gid,
        size=len(node.data),
        blocks=(len(node.data) + 511) // 512,
        atime_ns=node.atime_ns,
        mtime_ns=node.mtime_ns,
        ctime_ns=node.ctime_ns,
    )


class RamFS:
    """The tree as a uvfs filesystem."""

    root = ROOT

    def __init__(self, tree: RamTree) -> None:
        self.tree = tree

    async def getattr(self, ino: int) -> uvfs.Attr:
        return _attr(self.tree.node(ino))

    async def lookup(self, parent: int, name: bytes) -> uvfs.Attr:
        node = self.tree.lookup(parent, name)
        if node is None:
            raise uvfs.FSError(errno.ENOENT)
        return _attr(node)

    async def readdir(self, ino: int) -> list[uvfs.DirEntry]:
        return [uvfs.DirEntry(name, _attr(node)) for name, node in self.tree.listing(ino)]

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return self.tree.read(ino, offset, size)

    async def write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        return self.tree.write(ino, offset, data)

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: uvfs.Caller
    ) -> tuple[uvfs.Attr, int]:
        return _attr(self.tree.create(parent, name, mode, caller.uid, caller.gid)), 0

    async def mkdir(self, parent: int, name: bytes, mode: int, caller: uvfs.Caller) -> uvfs.Attr:
        return _attr(self.tree.mkdir(parent, name, mode, caller.uid, caller.gid))

    async def unlink(self, parent: int, name: bytes) -> None:
        self.tree.unlink(parent, name)

    async def rmdir(self, parent: int, name: bytes) -> None:
        self.tree.rmdir(parent, name)

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        self.tree.rename(old_parent, old_name, new_parent, new_name, flags)

    async def setattr(self, ino: int, changes: uvfs.SetAttr, caller: uvfs.Caller) -> uvfs.Attr:
        return _attr(
            self.tree.setattr(
                ino,
                mode=changes.mode,
                uid=changes.uid,
                gid=changes.gid,
                size=changes.size,
                atime_ns=changes.atime_ns,
                mtime_ns=changes.mtime_ns,
            )
        )

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return self.tree.getxattr(ino, name)

    async def listxattr(self, ino: int) -> list[bytes]:
        return self.tree.listxattr(ino)

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        self.tree.setxattr(ino, name, value)

    async def removexattr(self, ino: int, name: bytes) -> None:
        self.tree.removexattr(ino, name)

    async def fsync(self, ino: int, handle: int, datasync: bool) -> None:
        pass  # in memory: nothing to make durable

    async def release(self, ino: int, handle: int) -> None:
        pass  # no per-handle state


class RamDriver(SpecDriver):
    """Mounted by path: ``uvfs mount -t tools.bench._ramfs:DRIVER SPEC MOUNTPOINT``."""

    name = "ram"
    description = "the benchmark's in-memory tree"

    def filesystem(self, spec: bytes) -> RamFS:
        return RamFS(RamTree.from_spec(spec, uvfs.FSError))


DRIVER = RamDriver()
