"""Tree records: a file tree as plain data, taken through the kernel or through our driver.

`record_os` walks a directory with os.lstat (the oracle: zfs-fuse's own view through its
FUSE mount); `record_fs` walks one of our FileSystems through lookup/readdir/read/readlink/
listxattr/getxattr, with no mount. Both give `{relative path: Node}` and compare with ==.
`Node.obj` is the ZPL object number (st_ino under zfs-fuse; our inode number's low 48
bits), so hard links and object identity are checked too, except at a dataset's root: a
FUSE mount's root is always inode 1, so `obj` is -1 wherever a path crosses into another
dataset (another st_dev; another dataset index in our inode number). Times are whole seconds: that
is all zfs-fuse passes to the kernel.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pytest
import zfsfuse

from uvfs_fs.zfs import ZfsFileSystem
from uvfs_fs.zfs.zpl import OBJ_BITS, OBJ_MASK

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Node:
    """What one path shows."""

    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    mtime: int  # seconds
    ctime: int
    rdev: int
    blocks: int
    obj: int
    digest: str | None = None  # sha256 of a regular file's contents
    target: bytes | None = None  # a symlink's
    xattrs: tuple[tuple[bytes, bytes], ...] = ()  # sorted (name, value)


def record_os(root: Path, *, skip: frozenset[str] = frozenset()) -> dict[str, Node]:
    """Everything below `root` (not `root` itself), seen through the kernel."""
    out: dict[str, Node] = {}
    stack = [("", os.lstat(root).st_dev)]
    while stack:
        rel, dev = stack.pop()
        for name in sorted(os.listdir(root / rel if rel else root)):
            path = f"{rel}/{name}" if rel else name
            if path in skip:
                continue
            full = root / path
            st = os.lstat(full)
            node = Node(
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_nlink,
                int(st.st_mtime),
                int(st.st_ctime),
                st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
                st.st_blocks,
                st.st_ino if st.st_dev == dev else -1,
                xattrs=tuple(
                    sorted(
                        (n.encode(), os.getxattr(full, n, follow_symlinks=False))
                        for n in os.listxattr(full, follow_symlinks=False)
                    )
                ),
            )
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    while chunk := f.read(READ_CHUNK):
                        h.update(chunk)
                node = replace(node, digest=h.hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                node = replace(node, target=os.readlink(os.fsencode(full)))
            elif stat.S_ISDIR(st.st_mode):
                stack.append((path, st.st_dev))
            out[path] = node
    return out


async def record_fs(fs: ZfsFileSystem, ino: int) -> dict[str, Node]:
    """Everything below directory `ino` of our driver, without a mount."""
    out: dict[str, Node] = {}
    stack: list[tuple[str, int]] = [("", ino)]
    while stack:
        rel, dir_ino = stack.pop()
        entries = await fs.readdir(dir_ino)
        for e in entries:
            path = f"{rel}/{e.name.decode()}" if rel else e.name.decode()
            a = await fs.lookup(dir_ino, e.name)
            assert a == e.attr, f"{path}: readdir and lookup disagree"
            assert await fs.getattr(a.ino) == a
            names = await fs.listxattr(a.ino)
            node = Node(
                a.mode,
                a.uid,
                a.gid,
                a.size,
                a.nlink,
                a.mtime_ns // 1_000_000_000,
                a.ctime_ns // 1_000_000_000,
                a.rdev,
                a.blocks,
                a.ino & OBJ_MASK if a.ino >> OBJ_BITS == dir_ino >> OBJ_BITS else -1,
                xattrs=tuple(sorted([(n, await fs.getxattr(a.ino, n)) for n in names])),
            )
            if stat.S_ISREG(a.mode):
                h = hashlib.sha256()
                for offset in range(0, a.size, READ_CHUNK):
                    chunk = await fs.read(a.ino, 0, offset, READ_CHUNK)
                    assert len(chunk) == min(READ_CHUNK, a.size - offset), path
                    h.update(chunk)
                assert await fs.read(a.ino, 0, a.size, 10) == b""
                node = replace(node, digest=h.hexdigest())
            elif stat.S_ISLNK(a.mode):
                node = replace(node, target=await fs.readlink(a.ino))
            elif stat.S_ISDIR(a.mode):
                stack.append((path, a.ino))
            out[path] = node
    return out


def differences(ours: dict[str, Node], theirs: dict[str, Node]) -> list[str]:
    """One line per path or field where two records disagree (empty when equal)."""
    out = [f"{p}: only ours" for p in sorted(set(ours) - set(theirs))]
    out += [f"{p}: only theirs" for p in sorted(set(theirs) - set(ours))]
    for p in sorted(set(ours) & set(theirs)):
        for f in fields(Node):
            a, b = getattr(ours[p], f.name), getattr(theirs[p], f.name)
            if a != b:
                out.append(f"{p}: {f.name} ours {a!r:.80} theirs {b!r:.80}")
    return out


@contextmanager
def xattr_daemon(workdir: Path) -> Iterator[zfsfuse.ZfsFuse]:
    """A zfs-fuse daemon started with -x (xattrs on), stopped on the way out.

    The shared session daemon runs without -x: zfs-fuse then refuses setxattr.
    """
    reason = zfsfuse.available()
    if reason:
        pytest.skip(reason)
    daemon = zfsfuse.ZfsFuse(workdir, options=["-x"])
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
