"""Volumes with metadata checksums (metadata_csum, or uninit_bg's crc16) written by uvfs.

On real FUSE mounts of mke2fs images whose groups start uninitialised and whose big
directory e2fsck -D has indexed: a workload that fills uninitialised groups, changes the
indexed directory (its index dropped, its nodes given checksum tails), sets xattrs in the
inode and in a block, renames, links and removes, leaves a volume `e2fsck -fn` finds
clean (every checksum right, group flags and unused-inode marks consistent) and the
kernel shows as uvfs showed it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import run_uvfs
from .writing import FSTYPE, RW, fsck, snapshot

pytestmark = pytest.mark.slow


def csum_image(tmp_path: Path, features: str, block_size: int) -> Path:
    """An ext3 image of 8 groups with `features`, holding big/ (300 names, indexed)."""
    src = tmp_path / "src"
    (src / "big").mkdir(parents=True)
    for i in range(300):
        (src / "big" / f"name_number_{i}").write_text(str(i))
    image = tmp_path / "img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext3", "-O", features, "-b", str(block_size),
         "-g", "8192", "-d", str(src), str(image), f"{block_size // 16}M"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, check=False)
    fsck(image)
    return image


def uninit_groups(image: Path) -> int:
    dumped = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    return dumped.count("BLOCK_UNINIT")


@pytest.mark.parametrize(
    ("features", "block_size"),
    [("metadata_csum", 1024), ("metadata_csum,flex_bg", 4096), ("uninit_bg", 1024)],
)
def test_workload_is_clean_and_reads_the_same_in_the_kernel(
    tmp_path: Path, mount, kernel_mount, features: str, block_size: int
) -> None:
    image = csum_image(tmp_path, features, block_size)
    before = uninit_groups(image)
    assert before  # the workload below must initialise some
    mnt = mount(image, options=RW, fstype=FSTYPE)
    for j in range(6):  # top-level directories spread over the groups (Orlov)
        (mnt / f"top{j}").mkdir()
        (mnt / f"top{j}" / "blob").write_bytes(os.urandom(5_000_000 + j))
        (mnt / f"top{j}" / "small").write_bytes(b"s" * j)
    os.unlink(mnt / "top2" / "blob")
    os.setxattr(mnt / "top1" / "small", "user.in_inode", b"v")
    os.setxattr(mnt / "top1" / "small", "user.in_block", b"x" * 700)
    os.setxattr(mnt / "top3" / "small", "user.gone", b"y" * 600)
    os.removexattr(mnt / "top3" / "small", "user.gone")
    (mnt / "big" / "added").write_bytes(b"new")
    os.unlink(mnt / "big" / "name_number_7")
    os.rename(mnt / "big", mnt / "top4" / "big")  # its ".." changes
    os.link(mnt / "top0" / "small", mnt / "top4" / "big" / "hard")
    os.symlink("top0/small", mnt / "link")
    os.truncate(mnt / "top5" / "blob", 12345)
    (mnt / "top5" / "d").mkdir()
    os.rmdir(mnt / "top5" / "d")
    seen = snapshot(mnt)
    run_uvfs("umount", str(mnt))
    fsck(image)
    assert uninit_groups(image) < before
    assert snapshot(kernel_mount(image, "ext4")) == seen
