"""Helpers of the read-write ext2 tests: fresh images, e2fsck as the oracle, tree snapshots."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from uvfs import Caller, ImageFile, MountOptions
from uvfs_fs.ext2.writable import WritableExt2

ROOT = Caller(uid=0, gid=0)
FSTYPE = "ext2"  # the registered driver: WritableExt2 for rw mounts
RW = "rw"


def fresh_image(
    path: Path, *, block_size: int, size_mb: int, fstype: str = "ext2", extra: tuple = ()
) -> Path:
    """An empty image made by mke2fs."""
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-b", str(block_size), *extra, str(path),
         f"{size_mb}M"],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


def fsck(image: Path) -> str:
    """Run ``e2fsck -fn``; fail the test with its report unless it finds nothing at all."""
    done = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextlib.asynccontextmanager
async def open_rw(image: Path, *, force: bool = False) -> AsyncIterator[WritableExt2]:
    """`image` opened writable in this process; closed (written back, clean) at exit."""
    with ImageFile(str(image), writable=True) as file:
        fs = await WritableExt2.load(file, MountOptions(writable=True, force=force))
        try:
            yield fs
        finally:
            await fs.close()


def snapshot(root: Path, *, times: bool = True) -> dict[str, tuple]:
    """Everything a tree shows that the write side must keep: one entry per path.

    Directory sizes are left out (they depend on the filesystem), and so are times when
    not `times` (a model tree on another filesystem is changed at other moments).
    """
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            rel = os.fsencode(path.relative_to(root))
            if rel == b"lost+found":
                continue
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFREG:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif kind == stat.S_IFLNK:
                content = os.readlink(path)
            else:
                content = None
            size = 0 if kind == stat.S_IFDIR else st.st_size
            mtime = st.st_mtime_ns if times and kind != stat.S_IFLNK else 0
            xattrs = (
                ()
                if kind == stat.S_IFLNK
                else tuple((name, os.getxattr(path, name)) for name in sorted(os.listxattr(path)))
            )
            out[os.fsdecode(rel)] = (st.st_mode, size, st.st_nlink, st.st_uid, st.st_gid,
                                     st.st_rdev, mtime, content, xattrs)  # fmt: skip
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return out
