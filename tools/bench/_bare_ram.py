"""The in-memory tree served by pyfuse3 alone: the floor of every pyfuse3 server on writes.

``python -m tools.bench._bare_ram SPEC MOUNTPOINT --timeouts ENTRY ATTR NEGATIVE [--acl]
--requests FILE`` mounts `RamTree` read-write and serves it until unmounted. Each handler
does the least a server can: one call on the tree, then fill pyfuse3's record. What the
kernel is told is chosen as uvfs chooses it for a writable mount, so both servers get the
same requests: the caller passes uvfs's own entry, attribute and negative timeouts, and
``--acl`` when uvfs would enable POSIX ACLs (it does for a driver with xattrs, as
``_ramfs``); then the kernel leaves the umask to the server, which applies it, as uvfs
does. Also as uvfs: ``keep_cache`` on open, no writeback cache, no "." lookups,
``default_permissions``, handlers for fsync and release (the kernel stops sending what
meets ENOSYS, so a missing one would save requests uvfs pays for) and none for flush or
access (uvfs has none either).

Every handler adds one to a counter kept in the 8-byte file `--requests` (mapped, so the
benchmark reads it while the server runs, as it reads uvfs's ``broker.requests``); forget
counts too, as in uvfs. The counting costs a fraction of a microsecond a request.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import pyfuse3

from ._ramtree import RamNode, RamTree
from ._serve import BareServer, command_line, serve


class BareRamOperations(BareServer):
    """The tree's requests, each one call on the tree."""

    def __init__(
        self,
        tree: RamTree,
        timeouts: Sequence[float],
        *,
        acl: bool,
        counter: memoryview,
    ) -> None:
        super().__init__(timeouts, acl=acl)
        self.tree = tree
        self.counter = counter  # one unsigned 64-bit count, in the mapped file

    def _entry(self, node: RamNode) -> pyfuse3.EntryAttributes:
        entry = self._attributes(node.ino, node.mode, node.nlink, len(node.data))
        entry.st_uid = node.uid
        entry.st_gid = node.gid
        entry.st_blocks = (len(node.data) + 511) // 512
        entry.st_atime_ns = node.atime_ns
        entry.st_mtime_ns = node.mtime_ns
        entry.st_ctime_ns = node.ctime_ns
        return entry

    def _mode(self, mode: int, ctx: pyfuse3.RequestContext) -> int:
        """With ACLs on, the kernel leaves the creator's umask to the server."""
        return mode & ~ctx.umask if self.enable_acl else mode

    # --- names and attributes ---------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self.counter[0] += 1
        node = self.tree.lookup(parent_inode, name)
        return self._absent() if node is None else self._entry(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.counter[0] += 1

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.counter[0] += 1
        return self._entry(self.tree.node(inode))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self.counter[0] += 1
        node = self.tree.setattr(
            inode,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._entry(node)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        self.counter[0] += 1
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    # --- directories ------------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self.counter[0] += 1
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self.counter[0] += 1
        listing = self.tree.listing(fh)
        for offset, (name, node) in enumerate(listing[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._entry(node), offset):
                break

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.counter[0] += 1

    async def releasedir(self, fh: int) -> None:
        self.counter[0] += 1

    # --- files ------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.counter[0] += 1
        if flags & os.O_TRUNC:  # the kernel leaves O_TRUNC to open (atomic_o_trunc)
            self.tree.setattr(inode, size=0)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.counter[0] += 1
        return self.tree.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.counter[0] += 1
        return self.tree.write(fh, off, buf)

    async def fsync(self, fh: int, datasync: bool) -> None:
        self.counter[0] += 1

    async def release(self, fh: int) -> None:
        self.counter[0] += 1

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self.counter[0] += 1
        node = self.tree.create(parent_inode, name, self._mode(mode, ctx), ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=node.ino, keep_cache=True), self._entry(node)

    # --- creating and removing names --------------------------------------------------------

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self.counter[0] += 1
        return self._entry(
            self.tree.mkdir(parent_inode, name, self._mode(mode, ctx), ctx.uid, ctx.gid)
        )

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.counter[0] += 1
        self.tree.unlink(parent_inode, name)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.counter[0] += 1
        self.tree.rmdir(parent_inode, name)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self.counter[0] += 1
        self.tree.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    # --- extended attributes ----------------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self.counter[0] += 1
        return self.tree.getxattr(inode, name)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        self.counter[0] += 1
        return self.tree.listxattr(inode)

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self.counter[0] += 1
        self.tree.setxattr(inode, name, value)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.counter[0] += 1
        self.tree.removexattr(inode, name)


def read_requests(path: str | os.PathLike[str]) -> int:
    """The count a running (or finished) server keeps in `path`."""
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


def main(argv: Sequence[str] | None = None) -> None:
    parser = command_line("python -m tools.bench._bare_ram")
    parser.add_argument("--acl", action="store_true", help="let the kernel check POSIX ACLs")
    parser.add_argument("--requests", required=True, metavar="FILE", help="the request count")
    args = parser.parse_args(argv)
    with open(args.spec, "rb") as f:
        tree = RamTree.from_spec(f.read(), pyfuse3.FUSEError)
    with open(args.requests, "w+b") as f:
        f.truncate(8)
        mapped = mmap.mmap(f.fileno(), 8)
    counter = memoryview(mapped).cast("Q")
    operations = BareRamOperations(tree, args.timeouts, acl=args.acl, counter=counter)
    serve(operations, args.spec, args.mountpoint, read_only=False)


if __name__ == "__main__":
    main()
