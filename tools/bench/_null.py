"""The null file system: a tree answered from memory, to measure the framework alone.

One tree, two servers. `NullTree` is the tree as plain data: the root holds ``files/`` (N
empty files named like ``NULL_NAME``) and ``data.bin`` (a file of some MiB). `DRIVER` serves
it through uvfs (a driver as docs/writing-a-driver.md shows one); ``_bare.py`` serves the
very same tree with pyfuse3 alone. What one costs over the other is uvfs's own cost per
request: the glue, the broker, the buffer cache.

The "image" both are given is a small JSON file, ``{"files": N, "file_bytes": B}``: a uvfs
mount must name a source, and it carries the tree's size to both servers.
"""

from __future__ import annotations

import errno
import json
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvfs

from ._driver import SpecDriver
from ._probe import NULL_NAME

ROOT, FILES, DATA = 1, 2, 3
FIRST_FILE = 16  # inode of the first file in FILES; the rest follow in order


@dataclass(frozen=True, slots=True)
class Node:
    """What stat(2) shows of one node of the tree."""

    ino: int
    mode: int
    nlink: int
    size: int


class NullTree:
    """The tree of `files` empty files and one file of `file_bytes`, all in memory."""

    def __init__(self, files: int, file_bytes: int) -> None:
        self.files = files
        # A byte pattern, not zeros, so a wrong offset shows; bytes, so slices are cheap.
        self.data = bytes(range(256)) * (file_bytes // 256)
        self._names = {NULL_NAME.format(i).encode(): FIRST_FILE + i for i in range(files)}
        self._root = {b"files": FILES, b"data.bin": DATA}

    @classmethod
    def from_spec(cls, text: str | bytes) -> NullTree:
        """The tree a spec file describes."""
        spec = json.loads(text)
        return cls(spec["files"], spec["file_bytes"])

    @staticmethod
    def write_spec(path: Path, files: int, file_bytes: int) -> None:
        """Write the spec file of a tree (the source both servers are given)."""
        path.write_text(json.dumps({"files": files, "file_bytes": file_bytes}))

    def node(self, ino: int) -> Node | None:
        """The node numbered `ino`, None when there is none."""
        if ino in (ROOT, FILES):
            return Node(ino, stat.S_IFDIR | 0o755, 2, 0)
        if ino == DATA:
            return Node(ino, stat.S_IFREG | 0o444, 1, len(self.data))
        if FIRST_FILE <= ino < FIRST_FILE + self.files:
            return Node(ino, stat.S_IFREG | 0o444, 1, 0)
        return None

    def lookup(self, parent: int, name: bytes) -> int | None:
        """The inode `name` leads to in directory `parent`, None when absent."""
        names = self._root if parent == ROOT else self._names if parent == FILES else {}
        return names.get(name)

    def listing(self, ino: int) -> Sequence[tuple[bytes, int]]:
        """(name, inode) of every entry of directory `ino`."""
        return list((self._root if ino == ROOT else self._names if ino == FILES else {}).items())

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes of ``data.bin`` at `offset` (fewer at its end)."""
        return self.data[offset : offset + size]


def _attr(node: Node) -> uvfs.Attr:
    return uvfs.Attr(ino=node.ino, mode=node.mode, nlink=node.nlink, uid=0, gid=0, size=node.size)


class NullFS:
    """The tree as a uvfs file system (read-only: it has no `Write`)."""

    root = ROOT

    def __init__(self, tree: NullTree) -> None:
        self.tree = tree

    async def getattr(self, ino: int) -> uvfs.Attr:
        node = self.tree.node(ino)
        if node is None:
            raise uvfs.FSError(errno.ENOENT)
        return _attr(node)

    async def lookup(self, parent: int, name: bytes) -> uvfs.Attr:
        ino = self.tree.lookup(parent, name)
        if ino is None:
            raise uvfs.FSError(errno.ENOENT)
        return await self.getattr(ino)

    async def readdir(self, ino: int) -> list[uvfs.DirEntry]:
        return [uvfs.DirEntry(name, await self.getattr(i)) for name, i in self.tree.listing(ino)]

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return self.tree.read(offset, size)


class NullDriver(SpecDriver):
    """Mounted by path: ``uvfs mount -t tools.bench._null:DRIVER SPEC MOUNTPOINT``."""

    name = "null"
    description = "the benchmark's null tree"

    def filesystem(self, spec: bytes) -> NullFS:
        return NullFS(NullTree.from_spec(spec))


DRIVER = NullDriver()
