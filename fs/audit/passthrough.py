"""A FileSystem passing a real directory tree through read-only, recording every access.

Theory of operation. The tree is reached only through a directory file descriptor opened
before the mount exists (`Passthrough.from_path`), so the mount can later cover the tree's own
path without the driver ever seeing itself. Every node is named relative to its parent:

* a node is (parent node, name), plus an ``O_PATH`` descriptor for directories, opened
  lazily with ``O_NOFOLLOW`` and checked against the (st_dev, st_ino) the node was created
  for (a swapped name gives ESTALE, not another file);
* every request is one *at() call on the parent's descriptor with a single name component
  and no symlink following (``AT_SYMLINK_NOFOLLOW``, ``O_NOFOLLOW``). Names holding ``/``,
  ``.`` and ``..`` are refused. The driver never resolves a symlink: it only reads it, and
  the kernel follows it, from the caller's root. So no request can leave the tree;
* inode numbers are the real ``st_ino`` with the index of its device in the top byte
  (device 1 is the first seen), stable for the life of the mount; the root is 1.

Directories keep their descriptor until the kernel forgets them and their last child
node is gone, so a deep tree costs one descriptor per directory the kernel still holds.

Changes are refused with EROFS, but recorded first (``open_write``): an open for
writing, a truncate or chmod (setattr), and creating, linking, renaming or removing a
name. The mount itself must be writable for these to reach the driver at all.

Every request is reported to a `Recorder` under the node's real path (the tree's path
joined with the names walked). `hidden(path)` lets ``--enforce`` hide files: a hidden name
is ENOENT to lookup and absent from readdir, and the attempt is recorded as ``hidden``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from uvfs import Attr, Caller, DirEntry, FSError, SetAttr, StatFS
from uvfs_fs.audit.recorder import Access, Kind, Recorder, classify_open

ROOT_INO = 1
_DEV_SHIFT = 56
_OVERFLOW_BASE = 0xFF << _DEV_SHIFT  # inode numbers that do not fit beside a device index


@dataclass(slots=True)
class _Node:
    parent: int  # 0 for the root
    name: bytes
    path: str  # the real path, for the recorder and `hidden`
    key: tuple[int, int]  # (st_dev, st_ino) this node was created for
    is_dir: bool
    fd: int = -1  # O_PATH descriptor, directories only, opened on first use
    children: int = 0  # nodes naming this one as parent: it outlives them
    forgotten: bool = False


def _check_name(name: bytes) -> None:
    if not name or b"/" in name or name in (b".", b".."):
        raise FSError(errno.EINVAL, f"bad name {name!r}")


class Passthrough:
    """The FileSystem of one audited tree.

    Args:
        root_fd: an ``O_PATH`` (or ordinary) descriptor of the tree's top directory; the
            filesystem owns it from now on and closes it in `close`.
        root_path: the tree's path as the audited command knows it, e.g. ``"/"``.
        recorder: where accesses go.
        hidden: real path -> whether ``--enforce`` hides it (default: nothing hidden).
    """

    def __init__(
        self,
        root_fd: int,
        root_path: str,
        recorder: Recorder,
        hidden: Callable[[str], bool] | None = None,
    ) -> None:
        st = os.fstat(root_fd)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(root_path)
        self.root = ROOT_INO
        self.recorder = recorder  # may be swapped between runs
        self.hidden = hidden or (lambda path: False)  # likewise
        self._devices: dict[int, int] = {}
        self._overflow: dict[tuple[int, int], int] = {}
        self._inos: dict[tuple[int, int], int] = {}
        root_key = (st.st_dev, st.st_ino)
        self._nodes: dict[int, _Node] = {
            ROOT_INO: _Node(0, b"", os.path.normpath(root_path), root_key, True, root_fd)
        }
        self._inos[root_key] = ROOT_INO

    @classmethod
    def from_path(
        cls, root_path: str, recorder: Recorder, hidden: Callable[[str], bool] | None = None
    ) -> Passthrough:
        """The filesystem of the directory at `root_path`, opened now, before any mount."""
        fd = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return cls(fd, root_path, recorder, hidden)
        except BaseException:
            os.close(fd)
            raise

    # --- nodes ------------------------------------------------------------------------

    def _ino(self, st: os.stat_result) -> int:
        key = (st.st_dev, st.st_ino)
        ino = self._inos.get(key)
        if ino is not None:
            return ino
        index = self._devices.setdefault(st.st_dev, len(self._devices) + 1)
        if st.st_ino < 1 << _DEV_SHIFT and index < 0xFF:
            return (index << _DEV_SHIFT) | st.st_ino
        return self._overflow.setdefault(key, _OVERFLOW_BASE + len(self._overflow))

    def _attr(self, ino: int, st: os.stat_result) -> Attr:
        return Attr(
            ino=ino,
            mode=st.st_mode,
            nlink=st.st_nlink,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size,
            rdev=st.st_rdev,
            blocks=st.st_blocks,
            blksize=st.st_blksize,
            atime_ns=st.st_atime_ns,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
        )

    def _node(self, ino: int) -> _Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise FSError(errno.ESTALE, f"unknown inode {ino}") from None

    def _dir_fd(self, node: _Node) -> int:
        if node.fd < 0:
            parent = self._dir_fd(self._node(node.parent))
            fd = os.open(
                node.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
            )
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != node.key:
                os.close(fd)
                raise FSError(errno.ESTALE, f"{node.path} was replaced")
            node.fd = fd
        return node.fd

    def _stat_child(self, parent: _Node, name: bytes) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=self._dir_fd(parent), follow_symlinks=False)
        except OSError as e:
            raise FSError(e.errno, f"{parent.path}/{os.fsdecode(name)}") from None

    def _adopt(self, parent_ino: int, name: bytes, path: str, st: os.stat_result) -> int:
        """The node for `name` (at `path`) in `parent_ino` with status `st`, created if new."""
        ino = self._ino(st)
        node = self._nodes.get(ino)
        if node is None:
            key = (st.st_dev, st.st_ino)
            self._inos[key] = ino
            self._nodes[ino] = _Node(parent_ino, name, path, key, stat.S_ISDIR(st.st_mode))
            self._nodes[parent_ino].children += 1
            return ino
        node.forgotten = False  # forgotten but pinned by children: known to the kernel again
        if node.parent != parent_ino or node.name != name:  # a hard link: the latest name
            self._nodes[parent_ino].children += 1
            self._release_child(node.parent)
            node.parent, node.name, node.path = parent_ino, name, path
        return ino

    def _release_child(self, ino: int) -> None:
        node = self._nodes[ino]
        node.children -= 1
        if node.forgotten and node.children == 0:
            self._drop(ino)

    def _drop(self, ino: int) -> None:
        node = self._nodes.pop(ino)
        del self._inos[node.key]
        if node.fd >= 0:
            os.close(node.fd)
        if node.parent:
            self._release_child(node.parent)

    def _record(self, node: _Node, access: Access) -> None:
        self.recorder.record(node.path, access, Kind.DIRECTORY if node.is_dir else Kind.FILE)

    # --- FileSystem -------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attr:
        _check_name(name)
        dir_node = self._node(parent)
        path = _join(dir_node.path, name)
        try:
            st = os.stat(name, dir_fd=self._dir_fd(dir_node), follow_symlinks=False)
        except FileNotFoundError:
            self.recorder.record(path, Access.MISS, Kind.ABSENT)
            raise FSError(errno.ENOENT) from None
        except OSError as e:
            raise FSError(e.errno, path) from None
        kind = Kind.DIRECTORY if stat.S_ISDIR(st.st_mode) else Kind.FILE
        if self.hidden(path):
            self.recorder.record(path, Access.HIDDEN, kind)
            raise FSError(errno.ENOENT)
        self.recorder.record(path, Access.LOOKUP, kind)
        return self._attr(self._adopt(parent, name, path, st), st)

    async def getattr(self, ino: int) -> Attr:
        node = self._node(ino)
        self._record(node, Access.GETATTR)
        if node.is_dir or ino == ROOT_INO:
            return self._attr(ino, os.fstat(self._dir_fd(node)))
        return self._attr(ino, self._stat_child(self._node(node.parent), node.name))

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        node = self._node(ino)
        self._record(node, Access.READDIR)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._dir_fd(node))
        entries = []
        try:
            with os.scandir(fd) as it:  # reads a duplicate of `fd`
                for entry in it:
                    name = os.fsencode(entry.name)
                    path = _join(node.path, name)
                    if self.hidden(path):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed since the listing was read
                        continue
                    attr = self._attr(self._adopt(ino, name, path, st), st)
                    entries.append(DirEntry(name, attr))
        finally:
            os.close(fd)
        return entries

    async def readlink(self, ino: int) -> bytes:
        node = self._node(ino)
        self._record(node, Access.READLINK)
        if node.is_dir:
            raise FSError(errno.EINVAL)
        try:
            return os.readlink(node.name, dir_fd=self._dir_fd(self._node(node.parent)))
        except OSError as e:
            raise FSError(e.errno, node.path) from None

    async def open(self, ino: int, flags: int, caller: Caller) -> int:
        node = self._node(ino)
        access = classify_open(flags)
        self._record(node, access)
        if access is Access.OPEN_WRITE:
            raise FSError(errno.EROFS)
        try:
            fd = os.open(
                node.name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=self._dir_fd(self._node(node.parent)),
            )
        except OSError as e:
            raise FSError(e.errno, node.path) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != node.key:
            os.close(fd)
            raise FSError(errno.ESTALE, f"{node.path} was replaced")
        return fd

    def _record_change(self, parent: int, name: bytes) -> None:
        """Record an attempt to create, replace or remove `name` in `parent` as a write."""
        _check_name(name)
        dir_node = self._node(parent)
        try:
            st = os.stat(name, dir_fd=self._dir_fd(dir_node), follow_symlinks=False)
            kind = Kind.DIRECTORY if stat.S_ISDIR(st.st_mode) else Kind.FILE
        except OSError:
            kind = Kind.ABSENT
        self.recorder.record(_join(dir_node.path, name), Access.OPEN_WRITE, kind)

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[Attr, int]:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, caller: Caller) -> Attr:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> Attr:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def symlink(self, parent: int, name: bytes, target: bytes, caller: Caller) -> Attr:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        self._record_change(new_parent, new_name)
        raise FSError(errno.EROFS)

    async def unlink(self, parent: int, name: bytes) -> None:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def rmdir(self, parent: int, name: bytes) -> None:
        self._record_change(parent, name)
        raise FSError(errno.EROFS)

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        self._record_change(old_parent, old_name)
        self._record_change(new_parent, new_name)
        raise FSError(errno.EROFS)

    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        # open(O_TRUNC) arrives as a truncating setattr before the open itself
        self._record(self._node(ino), Access.OPEN_WRITE)
        raise FSError(errno.EROFS)

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return os.pread(handle, size, offset)

    async def release(self, ino: int, handle: int) -> None:
        os.close(handle)

    async def statfs(self) -> StatFS:
        st = os.fstatvfs(self._nodes[ROOT_INO].fd)
        return StatFS(
            block_size=st.f_frsize,
            blocks=st.f_blocks,
            blocks_free=st.f_bfree,
            blocks_avail=st.f_bavail,
            files=st.f_files,
            files_free=st.f_ffree,
            name_max=st.f_namemax,
        )

    def forget(self, ino: int) -> None:
        node = self._nodes.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.forgotten = True
        if node.children == 0:
            self._drop(ino)

    async def close(self) -> None:
        for node in self._nodes.values():
            if node.fd >= 0:
                os.close(node.fd)
        self._nodes.clear()
        self._inos.clear()


def _join(directory: str, name: bytes) -> str:
    # every lookup builds a path: plain concatenation is several times os.path.join's speed
    return ("" if directory == "/" else directory) + "/" + os.fsdecode(name)
