"""The driver, called directly, against the kernel's own loop mount of the same image.

The kernel is the oracle for what the tree cannot say: inode numbers, st_blocks, stored
nanoseconds and post-2038 times, statfs. These configurations complement the mounted
comparison in test_mount_vs_kernel.py (meta_bg, 128-byte inodes, htree, bigalloc ...).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from uvfs import Attr
from uvfs_fs.ext2 import Ext2FileSystem

from .conftest import debugfs_field, open_image
from .images import ACL_ACCESS, debugfs, make_image

pytestmark = pytest.mark.slow

SAMPLE = 1 << 20
HTREE = ("htree",)  # not an mke2fs argument: re-pack directories with e2fsck -D

CASES = [
    pytest.param("ext2", 2048, False, (), id="ext2-2k-nofiletype"),
    pytest.param("ext3", 1024, True, HTREE, id="ext3-1k-htree"),
    pytest.param("ext4", 4096, True, ("-O", "meta_bg,^resize_inode"), id="ext4-meta_bg"),
    pytest.param("ext4", 1024, True, ("-I", "128"), id="ext4-128-byte-inodes"),
    pytest.param(
        "ext4",
        1024,
        True,
        # no mmp: the kernel waits seconds at mount to see whether another host writes
        ("-O", "bigalloc,quota,project,orphan_file,sparse_super2", "-C", "16384"),
        id="ext4-bigalloc",
    ),
]

# (file, debugfs field, value): stored nanoseconds, a time past 2038, one before 1970,
# and i_size_high on a symlink, which only regular files (and large_dir directories) use.
TWEAKS = [
    ("files/size1023", "mtime_extra", "0x0abcdef5"),
    ("files/size1024", "mtime", "20400101000000"),
    ("files/size1025", "atime", "@-100"),
    ("dirs/empty", "ctime_extra", "0x00000011"),
    ("links/slow60", "size", "0x10000003c"),
]


async def node_attrs(fs: Ext2FileSystem, ino: int, rel: str, out: dict[str, Attr]) -> None:
    for entry in await fs.readdir(ino):
        path = f"{rel}/{os.fsdecode(entry.name)}" if rel else os.fsdecode(entry.name)
        out[path] = entry.attr
        if stat.S_ISDIR(entry.attr.mode):
            await node_attrs(fs, entry.attr.ino, path, out)


def xattrs(path: Path) -> dict[bytes, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {os.fsencode(n): os.getxattr(path, n, follow_symlinks=False) for n in names}


@pytest.mark.parametrize(("fstype", "block_size", "filetype", "extra"), CASES)
async def test_driver_equals_kernel(
    tree: Path,
    tmp_path: Path,
    kernel_mount,
    fstype: str,
    block_size: int,
    filetype: bool,
    extra: tuple[str, ...],
) -> None:
    image = tmp_path / "image"
    args = () if extra == HTREE else extra
    make_image(
        tree,
        image,
        fstype=fstype,
        block_size=block_size,
        revision=1,
        filetype=filetype,
        size_mb=128,
        extra=args,
    )
    if extra == HTREE:
        subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, check=False)
    for rel, field, value in TWEAKS:
        debugfs(image, f"sif /{rel} {field} {value}", "-w")
    root = kernel_mount(image, fstype)

    await compare_with_kernel(image, root)


async def compare_with_kernel(image: Path, root: Path) -> None:
    """Every node and statfs of `image` through the driver against the kernel's mount `root`."""
    img, fs = await open_image(image)
    with img:
        ours: dict[str, Attr] = {}
        await node_attrs(fs, fs.root, "", ours)
        theirs = {
            os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root)
            for n in dirs + files
        }
        assert set(ours) == theirs
        for rel, attr in ours.items():
            path = root / rel
            st = path.lstat()
            assert (
                attr.mode,
                attr.ino,
                attr.nlink,
                attr.uid,
                attr.gid,
                attr.size,
                attr.rdev,
                attr.blocks,
                attr.atime_ns,
                attr.mtime_ns,
                attr.ctime_ns,
            ) == (
                st.st_mode,
                st.st_ino,
                st.st_nlink,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_rdev,
                st.st_blocks,
                st.st_atime_ns,
                st.st_mtime_ns,
                st.st_ctime_ns,
            ), rel
            if stat.S_ISLNK(st.st_mode):
                assert await fs.readlink(attr.ino) == os.fsencode(os.readlink(path)), rel
                continue
            got = {name: await fs.getxattr(attr.ino, name) for name in await fs.listxattr(attr.ino)}
            assert got == xattrs(path), rel
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    for offset in sorted({0, st.st_size // 2, (4 << 30) + 12000, st.st_size - 10}):
                        if 0 <= offset < st.st_size:
                            got_data = await fs.read(attr.ino, 0, offset, SAMPLE)
                            assert got_data == os.pread(f.fileno(), SAMPLE, offset), (rel, offset)

        vfs = os.statvfs(root)
        ours_fs = await fs.statfs()
        assert (
            ours_fs.block_size,
            ours_fs.blocks,
            ours_fs.blocks_free,
            ours_fs.blocks_avail,
            ours_fs.files,
            ours_fs.files_free,
            ours_fs.name_max,
        ) == (
            vfs.f_bsize,
            vfs.f_blocks,
            vfs.f_bfree,
            vfs.f_bavail,
            vfs.f_files,
            vfs.f_ffree,
            vfs.f_namemax,
        )


@contextmanager
def writable_loop_mount(image: Path, mountpoint: Path) -> Iterator[Path]:
    """The kernel's read-write loop mount of `image`, unmounted whatever happens."""
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "ext4", "-o", "loop", str(image), str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)


def kernel_writes(root: Path, extents: bool) -> None:
    """Files only the kernel makes: preallocated, punched, fragmented, a kernel htree."""
    if extents:
        with open(root / "prealloc", "wb") as f:  # uninitialized extents, one written into
            os.posix_fallocate(f.fileno(), 0, 1 << 20)
            f.seek(300_000)
            f.write(b"written" * 100)
        (root / "keep_size").write_bytes(b"k" * 5000)
        subprocess.run(["fallocate", "-n", "-l", "1M", str(root / "keep_size")], check=True)
        (root / "punched").write_bytes(bytes(range(256)) * 256)
        punch = ["fallocate", "-p", "-o", "4096", "-l", "20000", str(root / "punched")]
        subprocess.run(punch, check=True)
    with open(root / "fragmented", "wb") as f:  # 400 extents: depth 2 at 1 KiB, 1 at 4 KiB
        for i in range(400):
            f.seek(i * 8192)
            f.write(bytes([i % 251 + 1]) * 4096)
        f.seek(70 << 20)  # past 64 MiB: triple indirect at 1 KiB
        f.write(b"far away")
    big = root / "big_dir"
    big.mkdir()
    for i in range(1500):
        (big / f"a-rather-long-file-name-to-fill-blocks-{i:05d}").write_bytes(b"%d" % i)
    (root / "attrs").write_bytes(b"")
    os.setxattr(root / "attrs", "user.small", b"in the inode")
    os.setxattr(root / "attrs", "user.large", bytes(range(256)) * 3)
    os.setxattr(root / "attrs", "system.posix_acl_access", ACL_ACCESS)
    os.symlink("short", root / "fast")
    os.symlink("long/" * 40, root / "slow")
    os.link(root / "attrs", big / "hard")
    os.mknod(root / "dev", stat.S_IFBLK | 0o600, os.makedev(259, 300))


@pytest.mark.parametrize(
    ("fstype", "block_size"), [("ext4", 1024), ("ext4", 4096), ("ext2", 1024), ("ext3", 2048)]
)
async def test_kernel_written_image(
    tmp_path: Path, kernel_mount, fstype: str, block_size: int
) -> None:
    image = tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-b", str(block_size), str(image), "64M"],
        check=True,
    )
    with writable_loop_mount(image, tmp_path / "rw") as root:
        kernel_writes(root, extents=fstype == "ext4")
    if fstype == "ext4":
        extents = debugfs(image, "ex /fragmented")
        depth = max(int(line.split("/")[0]) for line in extents.splitlines()[1:])
        assert depth == (2 if block_size == 1024 else 1)
        assert "Uninit" in debugfs(image, "ex /prealloc")
    else:
        assert "(TIND)" in debugfs(image, "stat /fragmented") or block_size > 1024
    assert debugfs_field(debugfs(image, "stat /big_dir"), "Flags:") & 0x1000  # htree
    await compare_with_kernel(image, kernel_mount(image, fstype))
