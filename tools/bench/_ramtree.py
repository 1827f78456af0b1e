"""A writable tree held in memory, as plain data: what the write floor's two servers share.

The write floor measures what serving the write workloads costs above the disk: one model,
`RamTree`, is served by uvfs (``_ramfs.py``, a driver) and by bare pyfuse3
(``_bare_ram.py``). Neither server holds state of its own beyond what pyfuse3 or uvfs
needs, so what one costs over the other is the framework alone, and what bare pyfuse3 costs
is the floor any pyfuse3 server pays for those requests.

The model does the least a filesystem can and still be one: names in dicts, file data in
bytearrays, attributes in slotted records, the times every change sets. It raises the
serving side's own errno-carrying exception (`uvfs.FSError` or `pyfuse3.FUSEError`, both
built from an errno), so neither server translates errors. Not modelled, as no workload
needs them: symlinks, hard links, device nodes, and an unlinked file held open (a node
goes with its last name).

A tree starts empty or seeded from a host directory (the write workloads that remove or
copy the small-file tree find it there, as they find it on the ext2 image after ``tar x``).
The spec file both servers are given says which: ``{"seed": PATH or null}``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = 1
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
Error = Callable[[int], Exception]  # errno -> the serving side's exception


@dataclass(slots=True)
class RamNode:
    """One file or directory; `children` is None for a file."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, RamNode] | None = None
    xattrs: dict[bytes, bytes] | None = None  # made on the first setxattr


class RamTree:
    """The tree: inode table and the operations the write workloads send.

    Args:
        error: builds the exception raised for an errno (``uvfs.FSError``, ...).
    """

    def __init__(self, error: Error) -> None:
        self.error = error
        now = time.time_ns()
        root = RamNode(ROOT, stat.S_IFDIR | 0o755, 0, 0, 2, now, now, now, children={})
        self.nodes: dict[int, RamNode] = {ROOT: root}
        self._next_ino = ROOT + 1

    @classmethod
    def from_spec(cls, text: str | bytes, error: Error) -> RamTree:
        """The tree a spec file describes (see the module docstring)."""
        tree = cls(error)
        seed = json.loads(text)["seed"]
        if seed is not None:
            tree.load(ROOT, Path(seed))
        return tree

    @staticmethod
    def write_spec(path: Path, seed: Path | None) -> None:
        """Write the spec of a tree that is empty, or holds a copy of `seed` named alike."""
        path.write_text(json.dumps({"seed": None if seed is None else str(seed)}))

    def load(self, parent: int, source: Path) -> None:
        """Copy the host directory `source` (files and directories) into `parent`."""
        info = source.lstat()
        node = self.mkdir(parent, os.fsencode(source.name), info.st_mode, info.st_uid, info.st_gid)
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                self.load(node.ino, Path(entry.path))
            else:
                s = entry.stat(follow_symlinks=False)
                new = self.create(node.ino, os.fsencode(entry.name), s.st_mode, s.st_uid, s.st_gid)
                new.data[:] = Path(entry.path).read_bytes()

    # --- nodes and names -------------------------------------------------------------------

    def node(self, ino: int) -> RamNode:
        """Node `ino`; ENOENT when it is gone."""
        node = self.nodes.get(ino)
        if node is None:
            raise self.error(errno.ENOENT)
        return node

    def _directory(self, ino: int) -> dict[bytes, RamNode]:
        children = self.node(ino).children
        if children is None:
            raise self.error(errno.ENOTDIR)
        return children

    def lookup(self, parent: int, name: bytes) -> RamNode | None:
        """The node `name` names in directory `parent`, None when absent."""
        return self._directory(parent).get(name)

    def listing(self, ino: int) -> list[tuple[bytes, RamNode]]:
        """Every (name, node) of directory `ino`, in creation order."""
        return list(self._directory(ino).items())

    def _new(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> RamNode:
        children = self._directory(parent)
        if name in children:
            raise self.error(errno.EEXIST)
        now = time.time_ns()
        is_dir = stat.S_ISDIR(mode)
        node = RamNode(self._next_ino, mode, uid, gid, 2 if is_dir else 1, now, now, now,
                       children={} if is_dir else None)  # fmt: skip
        self._next_ino += 1
        self.nodes[node.ino] = node
        children[name] = node
        directory = self.nodes[parent]
        directory.mtime_ns = directory.ctime_ns = now
        directory.nlink += is_dir
        return node

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> RamNode:
        """A new empty regular file (permission bits of `mode`) in `parent`."""
        return self._new(parent, name, stat.S_IFREG | (mode & 0o7777), uid, gid)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> RamNode:
        """A new empty directory (permission bits of `mode`) in `parent`."""
        return self._new(parent, name, stat.S_IFDIR | (mode & 0o7777), uid, gid)

    def _drop(self, directory: RamNode, name: bytes) -> None:
        """Remove `name` from `directory`; its node goes with its last name."""
        assert directory.children is not None
        node = directory.children.pop(name)
        now = time.time_ns()
        directory.mtime_ns = directory.ctime_ns = node.ctime_ns = now
        if node.children is not None:
            directory.nlink -= 1
            del self.nodes[node.ino]
            return
        node.nlink -= 1
        if not node.nlink:
            del self.nodes[node.ino]

    def unlink(self, parent: int, name: bytes) -> None:
        """Remove the file `name` from `parent`."""
        node = self.lookup(parent, name)
        if node is None:
            raise self.error(errno.ENOENT)
        if node.children is not None:
            raise self.error(errno.EISDIR)
        self._drop(self.nodes[parent], name)

    def rmdir(self, parent: int, name: bytes) -> None:
        """Remove the empty directory `name` from `parent`."""
        node = self.lookup(parent, name)
        if node is None:
            raise self.error(errno.ENOENT)
        if node.children is None:
            raise self.error(errno.ENOTDIR)
        if node.children:
            raise self.error(errno.ENOTEMPTY)
        self._drop(self.nodes[parent], name)

    def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        """Move `old_name` to `new_name`, as renameat2(2) with `flags`."""
        source, target = self._directory(old_parent), self._directory(new_parent)
        node = source.get(old_name)
        if node is None:
            raise self.error(errno.ENOENT)
        replaced = target.get(new_name)
        if flags & RENAME_EXCHANGE:
            if replaced is None:
                raise self.error(errno.ENOENT)
            source[old_name], target[new_name] = replaced, node
            # A directory moving to another parent takes its ".." link along.
            moved = (node.children is not None) - (replaced.children is not None)
            self.nodes[old_parent].nlink -= moved
            self.nodes[new_parent].nlink += moved
            return
        if replaced is not None:
            if flags & RENAME_NOREPLACE:
                raise self.error(errno.EEXIST)
            if replaced.children:
                raise self.error(errno.ENOTEMPTY)
            self._drop(self.nodes[new_parent], new_name)
        del source[old_name]
        target[new_name] = node
        if node.children is not None:
            self.nodes[old_parent].nlink -= 1
            self.nodes[new_parent].nlink += 1
        now = time.time_ns()
        for ino in (old_parent, new_parent):
            self.nodes[ino].mtime_ns = self.nodes[ino].ctime_ns = now
        node.ctime_ns = now

    # --- data and attributes ---------------------------------------------------------------

    def read(self, ino: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes of file `ino` at `offset`."""
        return bytes(self.node(ino).data[offset : offset + size])

    def write(self, ino: int, offset: int, data: bytes) -> int:
        """Write `data` into file `ino` at `offset` (a hole before it reads as zeros)."""
        node = self.node(ino)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = node.ctime_ns = time.time_ns()
        return len(data)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> RamNode:
        """Change what is not None (`mode`: permission bits; `size` truncates or extends)."""
        node = self.node(ino)
        if mode is not None:
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if size is not None:
            if node.children is not None:
                raise self.error(errno.EISDIR)
            del node.data[size:]
            node.data.extend(bytes(max(0, size - len(node.data))))
            node.mtime_ns = time.time_ns()
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        node.ctime_ns = time.time_ns()
        return node

    # --- extended attributes ---------------------------------------------------------------

    def getxattr(self, ino: int, name: bytes) -> bytes:
        """The value of `name`; ENODATA when unset."""
        value = (self.node(ino).xattrs or {}).get(name)
        if value is None:
            raise self.error(errno.ENODATA)
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self.node(ino).xattrs or ())

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        node = self.node(ino)
        if node.xattrs is None:
            node.xattrs = {}
        node.xattrs[name] = value
        node.ctime_ns = time.time_ns()

    def removexattr(self, ino: int, name: bytes) -> None:
        node = self.node(ino)
        if node.xattrs is None or node.xattrs.pop(name, None) is None:
            raise self.error(errno.ENODATA)
        node.ctime_ns = time.time_ns()
