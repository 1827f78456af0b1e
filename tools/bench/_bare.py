"""The null tree served by pyfuse3 alone: the floor uvfs's own cost is measured against.

``python -m tools.bench._bare SPEC MOUNTPOINT --timeouts ENTRY ATTR NEGATIVE`` mounts
`NullTree` read-only and serves it until unmounted. Each handler does the least a server
can: look the node up in memory and fill pyfuse3's record. Whatever the kernel is told is
chosen as uvfs chooses it for a read-only mount, so both servers get the same requests:
the same entry, attribute and negative-entry timeouts (the caller passes uvfs's own),
``keep_cache`` on open, no writeback cache, no ACLs (uvfs enables them only for drivers
with xattrs), no "." lookups, ``ro`` and ``default_permissions``, and pyfuse3's default
worker tasks. Not copied: uvfs's 1 MiB read-ahead, as the measured reads are O_DIRECT
and never read ahead.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

import pyfuse3

from ._null import Node, NullTree
from ._serve import BareServer, command_line, serve


class BareOperations(BareServer):
    """The tree's requests, answered straight from memory."""

    def __init__(self, tree: NullTree, timeouts: Sequence[float]) -> None:
        super().__init__(timeouts, acl=False)
        self.tree = tree

    def _entry(self, node: Node | None) -> pyfuse3.EntryAttributes:
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(node.ino, node.mode, node.nlink, node.size)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = self.tree.lookup(parent_inode, name)
        return self._absent() if ino is None else self._entry(self.tree.node(ino))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self.tree.node(inode))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.tree.listing(fh)
        for offset, (name, ino) in enumerate(listing[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._entry(self.tree.node(ino)), offset):
                break

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.tree.read(off, size)


def main(argv: Sequence[str] | None = None) -> None:
    args = command_line("python -m tools.bench._bare").parse_args(argv)
    with open(args.spec, "rb") as f:
        tree = NullTree.from_spec(f.read())
    serve(BareOperations(tree, args.timeouts), args.spec, args.mountpoint, read_only=True)


if __name__ == "__main__":
    main()
