"""ext4 made by `mke2fs -t ext4` with its defaults, mounted read-write through uvfs.

On real FUSE mounts (1 KiB and 4 KiB blocks: extent, 64bit, flex_bg, metadata_csum,
huge_file, dir_nlink, extra_isize, has_journal): a workload of new files (extent-mapped,
as the kernel makes them), sparse files whose extents need a tree of depth 1 and more,
large files, truncates down and up, renames, links, directories, symlinks and xattrs
leaves a volume `e2fsck -fn` finds clean, and the kernel shows the same tree. In process:
the extent tree grows a level when its root fills and shrinks back when a truncate
leaves it small.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from uvfs import SetAttr
from uvfs_fs.ext2.inode import EXT4_EXTENTS_FL, Inode

from ..conftest import run_uvfs
from .images import debugfs
from .writing import FSTYPE, ROOT, RW, fresh_image, fsck, open_rw, snapshot

pytestmark = pytest.mark.slow


def ext4_image(path: Path, block_size: int, size_mb: int = 64) -> Path:
    return fresh_image(path, block_size=block_size, size_mb=size_mb, fstype="ext4")


def tree_depth(image: Path, path: str) -> int:
    """The depth of `path`'s extent tree, as debugfs reports it."""
    dumped = debugfs(image, f"dump_extents {path}")
    return max(int(line.split("/")[0]) for line in dumped.splitlines()[1:] if "/" in line)


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_workload_is_clean_and_reads_the_same_in_the_kernel(
    tmp_path: Path, mount, kernel_mount, block_size: int
) -> None:
    image = ext4_image(tmp_path / "img", block_size)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    rng = random.Random(block_size)
    (mnt / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (mnt / "a" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(0, 70_000)))
    # Every other block written: one extent each, more than a leaf holds at 1 KiB.
    with open(mnt / "sparse", "wb") as f:
        for i in range(0, 400, 2):
            f.seek(i * block_size)
            f.write(i.to_bytes(4, "little") * 3)
    (mnt / "large").write_bytes(rng.randbytes(6_000_000))
    os.truncate(mnt / "large", 2_500_001)  # down, mid-block
    os.truncate(mnt / "large", 4_000_000)  # up: a hole after zeros
    os.truncate(mnt / "a" / "f3", 0)
    for i in range(0, 40, 4):
        os.rename(mnt / "a" / f"f{i}", mnt / "a" / "b" / f"moved{i}")
    for i in range(1, 40, 4):
        os.unlink(mnt / "a" / f"f{i}")
    os.link(mnt / "a" / "f2", mnt / "hard")
    os.symlink("a/f2", mnt / "fast")
    os.symlink("x" * 300, mnt / "slow")
    (mnt / "gone").mkdir()
    os.rmdir(mnt / "gone")
    os.setxattr(mnt / "a" / "f2", "user.small", b"v")
    os.setxattr(mnt / "a" / "f6", "user.block", b"w" * 500)
    os.setxattr(mnt / "a" / "b", "trusted.t", b"t" * 40)
    seen = snapshot(mnt)
    run_uvfs("umount", str(mnt))
    fsck(image)
    assert tree_depth(image, "/sparse") >= 1
    assert snapshot(kernel_mount(image, "ext4")) == seen


@pytest.mark.parametrize("block_size", [1024, 4096])
async def test_extent_trees_grow_and_shrink(tmp_path: Path, block_size: int) -> None:
    """Depth 0 for four extents, 1 past them, 2 past four full leaves; a truncate to a
    few blocks brings the root back into i_block, its node blocks freed."""
    image = ext4_image(tmp_path / "img", block_size)
    per_leaf = (block_size - 12) // 12
    async with open_rw(image) as fs:
        attr, handle = await fs.create(fs.root, b"f", 0o644, os.O_WRONLY, ROOT)
        for i in range(4):
            await fs.write(attr.ino, handle, 2 * i * block_size, b"x")
        depths = [root_depth(await fs._inode(attr.ino))]
        await fs.write(attr.ino, handle, 8 * block_size, b"x")
        depths.append(root_depth(await fs._inode(attr.ino)))
        for i in range(5, 4 * per_leaf + 1):
            await fs.write(attr.ino, handle, 2 * i * block_size, b"x")
        depths.append(root_depth(await fs._inode(attr.ino)))
        inode = await fs._inode(attr.ino)
        assert inode.flags & EXT4_EXTENTS_FL
        blocks_before = inode.blocks_512
        await fs.setattr(attr.ino, SetAttr(size=3 * block_size), ROOT)
        inode = await fs._inode(attr.ino)
        depths.append(root_depth(inode))
        assert inode.blocks_512 == 2 * block_size // 512  # blocks 0 and 2: no node left
        assert blocks_before > (4 * per_leaf + 1 + 5) * block_size // 512
    assert depths == [0, 1, 2, 0]
    fsck(image)


def root_depth(inode: Inode) -> int:
    """eh_depth of the root in `inode`'s i_block."""
    return int.from_bytes(inode.i_block[6:8], "little")


async def test_names_filling_new_directory_blocks_stay_out_of_their_tails(
    tmp_path: Path,
) -> None:
    """metadata_csum: a block a directory grows by ends in its checksum tail, which no
    name takes, however well a short one would fit there."""
    image = ext4_image(tmp_path / "img", 1024)
    async with open_rw(image) as fs:
        d = await fs.mkdir(fs.root, b"d", 0o755, ROOT)
        for i in range(300):
            await fs.create(d.ino, b"%04d" % i, 0o644, os.O_WRONLY, ROOT)
        assert len(await fs.readdir(d.ino)) == 300
    fsck(image)
    listed = debugfs(image, "ls /d").split()
    assert sum(name.startswith("0") for name in listed) == 300


async def test_freed_extent_inodes_keep_an_empty_root(tmp_path: Path) -> None:
    """A freed extent-mapped inode keeps an empty root in i_block, as the kernel leaves
    it: e2fsck counts a flagged inode without one as insane, and an inode table block
    mostly of those as garbage, live inodes in it included."""
    image = ext4_image(tmp_path / "img", 1024)
    async with open_rw(image) as fs:
        inos = []
        for name in (b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"):
            attr, handle = await fs.create(fs.root, name, 0o644, os.O_WRONLY, ROOT)
            await fs.write(attr.ino, handle, 0, b"data")
            inos.append(attr.ino)
        for name in (b"a", b"b", b"c", b"e", b"f", b"g"):
            await fs.unlink(fs.root, name)
    fsck(image)
    assert "EXTENTS:\n" in debugfs(image, f"stat <{inos[0]}>")


async def test_writes_into_uninitialized_extents_convert_them_in_place(tmp_path: Path) -> None:
    """Blocks the kernel's fallocate left uninitialized are written where they lie, zeros
    around the data, and only they become initialized: the rest still reads as zeros."""
    if os.geteuid() != 0:
        pytest.skip("the kernel's read-write loop mount needs root")
    image = ext4_image(tmp_path / "img", 4096)
    mnt = tmp_path / "kernel"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        subprocess.run(["fallocate", "-l", "1M", str(mnt / "pre")], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    before = debugfs(image, "stat /pre")
    async with open_rw(image) as fs:
        attr = await fs.lookup(fs.root, b"pre")
        await fs.write(attr.ino, 0, 10 * 4096 + 10, b"A" * 100)
        data = await fs.read(attr.ino, 0, 0, 1 << 20)
    fsck(image)
    assert data == bytes(10 * 4096 + 10) + b"A" * 100 + bytes((1 << 20) - 10 * 4096 - 110)
    first = int(before.split("EXTENTS:\n(0-255[u]):")[1].split("-")[0])
    assert f"(10):{first + 10}, (11-255[u])" in debugfs(image, "stat /pre")
