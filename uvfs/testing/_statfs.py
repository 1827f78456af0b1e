"""Checks on statfs: consistent counts, NAME_MAX, and space used by writes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from uvfs.testing._helpers import pattern
from uvfs.testing._registry import check


def _consistent(st: os.statvfs_result) -> None:
    assert st.f_bsize > 0
    assert st.f_frsize > 0
    assert st.f_blocks >= st.f_bfree >= st.f_bavail >= 0
    assert st.f_files >= st.f_ffree >= st.f_favail >= 0
    assert st.f_namemax == 255


@check("write")
def check_statfs_sane(d: Path) -> None:
    """statvfs counts are ordered (total >= free >= available), NAME_MAX is 255, fstatvfs agrees."""
    st = os.statvfs(d)
    _consistent(st)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fst = os.fstatvfs(fd)
    finally:
        os.close(fd)
    assert (fst.f_bsize, fst.f_blocks, fst.f_files) == (st.f_bsize, st.f_blocks, st.f_files)


@check("write")
def check_statfs_counts_writes(d: Path) -> None:
    """Writing and syncing 8 MiB lowers the free block count by at least that much."""
    before = os.statvfs(d)
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(8):
            os.write(fd, pattern(1 << 20, seed=i))
        os.fsync(fd)
    finally:
        os.close(fd)
    after = os.statvfs(d)
    used = (before.f_bfree - after.f_bfree) * after.f_frsize
    assert used >= 8 << 20, f"free space dropped by {used} bytes for 8 MiB written"


@check("read")
def check_statfs_tree(d: Path) -> None:
    """statvfs on the reference tree's mount is consistent, with NAME_MAX 255."""
    _consistent(os.statvfs(d))


@check("write")
def check_statfs_counts_inodes(d: Path) -> None:
    """Creating 20 files takes at least 20 free inodes; removing them gives them back.

    Within a second: a FUSE server learns that the kernel let go of an unlinked file only
    after the close's asynchronous release, and may keep the inode until then.
    """
    before = os.statvfs(d).f_ffree
    for i in range(20):
        os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    assert os.statvfs(d).f_ffree <= before - 20
    for i in range(20):
        os.unlink(d / f"f{i}")
    deadline = time.monotonic() + 1.0
    while os.statvfs(d).f_ffree != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.statvfs(d).f_ffree == before
