"""Orphans left by a crash are cleaned up, in memory, where the driver replays the journal:
the free counts and the truncated inodes' i_blocks equal the kernel's after its recovery
(a read-write mount of a copy, which replays and cleans up), and the image is not written.

Crash images of the kernel's own (a file unlinked while open, copied while mounted, with
and without an orphan file, with bigalloc);
the others chain orphans with debugfs: a deleted file, then a file cut short whose
blocks past i_size are still mapped (extent leaves freed on ext4, indirect blocks
on ext3), then the end of the list; a journal flagged for recovery sends both the kernel
and the driver through recovery.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from uvfs_fs.ext2 import orphan

from .conftest import debugfs_field, debugfs_stat, open_image, resolve
from .images import debugfs
from .test_journal import assert_replayed_as_kernel, recovered_by_kernel

pytestmark = pytest.mark.slow

SECOND = 1_000_000_000
STAMP = 2_000_000_000 * SECOND  # one time for both cleanups, to compare all the rest


def make_orphans(tmp_path: Path, fstype: str, extra: tuple[str, ...]) -> Path:
    """A 1 KiB-block volume whose orphan list holds /gone (deleted) and /cut (i_size cut
    from 1.6 MB to 100,000 bytes), with needs_recovery set."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "gone").write_bytes(b"g" * 100_000)
    with open(tree / "cut", "wb") as f:  # pieces apart: 3 extent leaves, or holes in the map
        for i in range(200):
            f.seek(i * 8192)
            f.write(bytes([i]) * 4096)
    (tree / "keep").write_bytes(b"kept\n")
    image = tmp_path / "image"
    subprocess.run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            fstype,
            "-b",
            "1024",
            *extra,
            "-d",
            str(tree),
            str(image),
            "16M",
        ],
        check=True,
        capture_output=True,
    )
    gone = debugfs_field(debugfs_stat(image, "gone"), "Inode:")
    cut = debugfs_field(debugfs_stat(image, "cut"), "Inode:")
    for request in (
        "unlink /gone",
        f"sif <{gone}> links_count 0",
        f"sif <{gone}> dtime {cut}",  # NEXT_ORPHAN
        "sif /cut size 100000",
        "sif /cut dtime 0",
        f"ssv last_orphan {gone}",
        "feature needs_recovery",
    ):
        debugfs(image, request, "-w")
    return image


@pytest.mark.parametrize(
    ("fstype", "extra"),
    [
        pytest.param("ext4", (), id="ext4"),
        pytest.param("ext3", (), id="ext3"),
        # 16-block clusters: the cut at block 98 keeps the cluster of blocks 96-111
        pytest.param("ext4", ("-O", "bigalloc", "-C", "16384"), id="ext4-bigalloc"),
    ],
)
async def test_debugfs_orphans_cleaned_as_by_the_kernel(
    tmp_path: Path, kernel_mount, monkeypatch, fstype: str, extra: tuple[str, ...]
) -> None:
    image = make_orphans(tmp_path, fstype, extra)
    blocks = debugfs_field(debugfs_stat(image, "cut"), "Blockcount:")
    # ext4_truncate stamps the cut file's mtime and ctime with the time of the cleanup:
    # the kernel's, then the driver's, lie in the window of each one's recovery
    start = time.time_ns() // SECOND * SECOND
    recovered = recovered_by_kernel(image, tmp_path)
    theirs = os.lstat(kernel_mount(recovered, fstype) / "cut")
    assert start <= theirs.st_mtime_ns == theirs.st_ctime_ns <= time.time_ns()
    assert theirs.st_blocks < blocks  # the case holds what it claims: blocks were freed
    start = time.time_ns() // SECOND * SECOND
    img, fs = await open_image(image)
    with img:
        ours = await resolve(fs, "cut")
    assert start <= ours.mtime_ns == ours.ctime_ns <= time.time_ns()
    # then everything equals, the two stamps made one
    same_stamp = Path(shutil.copy(recovered, tmp_path / "same-stamp"))
    for field in ("mtime", "ctime"):
        debugfs(same_stamp, f"sif /cut {field} @{STAMP // SECOND}", "-w")
        debugfs(same_stamp, f"sif /cut {field}_extra 0", "-w")  # 256-byte inodes: no ns
    monkeypatch.setattr(orphan, "time_ns", lambda: STAMP)
    await assert_replayed_as_kernel(image, kernel_mount, tmp_path, fstype, same_stamp)


@pytest.mark.parametrize(
    "extra",
    [
        ("-O", "^orphan_file"),
        ("-O", "orphan_file"),
        ("-O", "bigalloc", "-C", "16384"),
        ("-O", "ea_inode"),
    ],
    ids=["list", "orphan_file", "bigalloc", "ea_inode"],
)
async def test_kernel_crash_orphan_cleaned_as_by_the_kernel(
    tmp_path: Path, kernel_mount, extra: tuple[str, ...]
) -> None:
    """The list in the superblock and inodes, or the orphan file (orphan_file); a file
    of 196 blocks in 13 clusters (bigalloc); a file whose attribute's value has its own
    inode, freed with it (ea_inode)."""
    live, image = tmp_path / "live", tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", *extra, str(live), "16M"],
        check=True,
        capture_output=True,
    )
    mountpoint = tmp_path / "live-mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(live), str(mountpoint)], check=True)
    try:
        (mountpoint / "keep").write_bytes(b"kept\n")
        with open(mountpoint / "open-unlinked", "wb") as f:
            f.write(b"o" * 200_000)
            f.flush()
            if "ea_inode" in extra:
                os.setxattr(f.fileno(), "user.big", b"v" * 3000)
            os.fsync(f.fileno())
            os.unlink(mountpoint / "open-unlinked")
            os.sync()  # the unlink committed: the inode is on the orphan list
            shutil.copy(live, image)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    assert "needs_recovery" in debugfs(image, "features")
    if "orphan_file" in extra:
        assert "orphan_present" in debugfs(image, "features")
    else:
        assert debugfs_field(debugfs(image, "stats"), "First orphan inode:")
    await assert_replayed_as_kernel(image, kernel_mount, tmp_path, "ext4")
