"""Read-write ext2: every write-side operation, checked by e2fsck, debugfs and the kernel.

The first half drives `WritableExt2` in this process (fast, exact errnos); the second
mounts it for real and uses the operating system's own calls.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from uvfs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    FSError,
    ImageFile,
    MountOptions,
    Refusal,
    SetAttr,
    Write,
)
from uvfs_fs.ext2.writable import DRIVER, ReadOnlyVolume, WritableExt2

from ..conftest import run_uvfs
from .images import debugfs
from .writing import FSTYPE, ROOT, RW, fresh_image, fsck, open_rw, snapshot

BLOCK_SIZES = [1024, 4096]


def renameat2(old: Path, new: Path, flags: int) -> int:
    """renameat2(2) through libc (Python has no binding); the errno, or 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    done = libc.renameat2(at_fdcwd, bytes(old), at_fdcwd, bytes(new), flags)
    return ctypes.get_errno() if done else 0


def state_on_disk(image: Path) -> int:
    """s_state of the primary superblock as stored."""
    with open(image, "rb") as f:
        f.seek(1024 + 0x3A)
        return struct.unpack("<H", f.read(2))[0]


async def errno_of(call) -> int:
    with pytest.raises(FSError) as e:
        await call
    return e.value.errno


async def path_ino(fs: WritableExt2, path: str) -> int:
    ino = fs.root
    for part in path.split("/"):
        ino = (await fs.lookup(ino, part.encode())).ino
    return ino


# --- in process -------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
async def test_every_operation_leaves_a_clean_volume(tmp_path: Path, block_size: int) -> None:
    image = fresh_image(tmp_path / "img", block_size=block_size, size_mb=32)
    data = os.urandom(3 << 20)
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"file", 0o640, os.O_WRONLY, ROOT)
        assert await fs.write(a.ino, 0, 0, data) == len(data)
        d = await fs.mkdir(fs.root, b"dir", 0o755, ROOT)
        for i in range(200):  # several directory blocks, then holes punched in them
            await fs.create(d.ino, b"f%03d-%s" % (i, b"y" * (i % 50)), 0o600, 0, ROOT)
        for i in range(0, 200, 3):
            await fs.unlink(d.ino, b"f%03d-%s" % (i, b"y" * (i % 50)))
        await fs.symlink(fs.root, b"fast", b"t" * 59, ROOT)
        await fs.symlink(fs.root, b"slow", b"s" * 60, ROOT)
        await fs.mknod(fs.root, b"fifo", stat.S_IFIFO | 0o644, 0, ROOT)
        await fs.mknod(fs.root, b"sock", stat.S_IFSOCK | 0o644, 0, ROOT)
        await fs.mknod(fs.root, b"null", stat.S_IFCHR | 0o666, os.makedev(1, 3), ROOT)
        await fs.mknod(fs.root, b"wide", stat.S_IFBLK | 0o600, os.makedev(300, 70000), ROOT)
        await fs.link(a.ino, d.ino, b"hard")
        sub = await fs.mkdir(d.ino, b"sub", 0o700, ROOT)
        await fs.rename(d.ino, b"sub", fs.root, b"moved", 0)
        await fs.setattr(a.ino, SetAttr(size=70000), ROOT)
        assert (await fs.getattr(a.ino)).nlink == 2
        assert (await fs.getattr(d.ino)).nlink == 2
        assert (await fs.getattr(fs.root)).nlink == 5  # ".", "..", lost+found, dir, moved
        assert (await fs.lookup(sub.ino, b"..")).ino == fs.root
    fsck(image)
    assert debugfs(image, "cat /dir/hard").encode("utf-8", "surrogateescape") == data[:70000]
    assert "Fast link dest" in debugfs(image, "stat /fast")
    assert debugfs(image, "cat /slow") == "s" * 60
    ls = debugfs(image, "ls -l /dir")
    assert "f001-y" in ls and "f000-" not in ls
    assert "300, 70000" in debugfs(
        image, "stat /wide"
    ) or "Device major/minor number: 300:70000" in (debugfs(image, "stat /wide"))


async def test_sparse_write_leaves_holes_and_reads_zeros(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=16)
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"sparse", 0o644, 0, ROOT)
        await fs.write(a.ino, 0, 10 << 20, b"end")
        await fs.write(a.ino, 0, 100, b"start")
        attr = await fs.getattr(a.ino)
        assert attr.size == (10 << 20) + 3
        # Two data blocks, and for the one at 10 MiB a double indirect and an indirect block.
        assert attr.blocks == 4 * 2
        assert await fs.read(a.ino, 0, 0, 110) == bytes(100) + b"start" + bytes(5)
        assert await fs.read(a.ino, 0, (10 << 20) - 2, 10) == b"\0\0end"
    fsck(image)


async def test_truncate_up_and_down(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=16)
    data = bytes(range(256)) * 1200
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"t", 0o644, 0, ROOT)
        await fs.write(a.ino, 0, 0, data)
        await fs.setattr(a.ino, SetAttr(size=1500), ROOT)
        await fs.setattr(a.ino, SetAttr(size=5000), ROOT)  # grows with a hole, not old bytes
        assert await fs.read(a.ino, 0, 0, 6000) == data[:1500] + bytes(3500)
        assert (await fs.getattr(a.ino)).blocks == 2 * 2
        await fs.setattr(a.ino, SetAttr(size=0), ROOT)
        assert (await fs.getattr(a.ino)).blocks == 0
        free = (await fs.statfs()).blocks_free
    fsck(image)
    assert (
        f"Free blocks:              {free}"
        in subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    )


async def test_names_up_to_255_bytes(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    async with open_rw(image) as fs:
        for i in range(10):
            await fs.create(fs.root, bytes([97 + i]) * 255, 0o644, 0, ROOT)
        assert await errno_of(fs.create(fs.root, b"x" * 256, 0o644, 0, ROOT)) == errno.ENAMETOOLONG
        assert await errno_of(fs.mkdir(fs.root, b"y" * 256, 0o755, ROOT)) == errno.ENAMETOOLONG
        assert await errno_of(fs.lookup(fs.root, b"z" * 256)) == errno.ENAMETOOLONG
        names = {e.name for e in await fs.readdir(fs.root)}
        assert names == {b"lost+found", *(bytes([97 + i]) * 255 for i in range(10))}
    fsck(image)


async def test_directory_errors(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    async with open_rw(image) as fs:
        d = await fs.mkdir(fs.root, b"d", 0o755, ROOT)
        await fs.create(d.ino, b"f", 0o644, 0, ROOT)
        assert await errno_of(fs.rmdir(fs.root, b"d")) == errno.ENOTEMPTY
        assert await errno_of(fs.mkdir(fs.root, b"d", 0o755, ROOT)) == errno.EEXIST
        assert await errno_of(fs.unlink(fs.root, b"d")) == errno.EISDIR
        assert await errno_of(fs.rmdir(d.ino, b"f")) == errno.ENOTDIR
        assert await errno_of(fs.unlink(fs.root, b"nothing")) == errno.ENOENT
        assert await errno_of(fs.link(d.ino, fs.root, b"dirlink")) == errno.EPERM
        f = await fs.lookup(d.ino, b"f")
        assert await errno_of(fs.mkdir(f.ino, b"x", 0o755, ROOT)) == errno.ENOTDIR
        await fs.unlink(d.ino, b"f")
        await fs.rmdir(fs.root, b"d")
        assert (await fs.getattr(fs.root)).nlink == 3
    fsck(image)


async def test_rename_cases(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    async with open_rw(image) as fs:
        a = await fs.mkdir(fs.root, b"a", 0o755, ROOT)
        b = await fs.mkdir(fs.root, b"b", 0o755, ROOT)
        f1, _ = await fs.create(a.ino, b"f1", 0o644, 0, ROOT)
        f2, _ = await fs.create(b.ino, b"f2", 0o644, 0, ROOT)
        sub = await fs.mkdir(a.ino, b"sub", 0o755, ROOT)
        empty = await fs.mkdir(b.ino, b"empty", 0o755, ROOT)
        # Over an existing file: the target's inode goes once the kernel lets go of it.
        await fs.rename(a.ino, b"f1", b.ino, b"f2", 0)
        assert (await fs.lookup(b.ino, b"f2")).ino == f1.ino
        assert (await fs.getattr(f2.ino)).nlink == 0
        fs.forget(f2.ino)
        # A directory over an empty directory, across parents: ".." and link counts follow.
        await fs.rename(a.ino, b"sub", b.ino, b"empty", 0)
        assert (await fs.lookup(sub.ino, b"..")).ino == b.ino
        assert (await fs.getattr(a.ino)).nlink == 2
        assert (await fs.getattr(b.ino)).nlink == 3
        fs.forget(empty.ino)
        # Errors, each leaving everything as it was.
        x = await fs.mkdir(fs.root, b"x", 0o755, ROOT)
        await fs.create(x.ino, b"inside", 0o644, 0, ROOT)
        assert await errno_of(fs.rename(b.ino, b"empty", fs.root, b"x", 0)) == errno.ENOTEMPTY
        assert await errno_of(fs.rename(b.ino, b"f2", fs.root, b"x", 0)) == errno.EISDIR
        assert await errno_of(fs.rename(fs.root, b"x", b.ino, b"f2", 0)) == errno.ENOTDIR
        flags = RENAME_NOREPLACE
        assert await errno_of(fs.rename(fs.root, b"x", fs.root, b"a", flags)) == errno.EEXIST
        assert await errno_of(fs.rename(fs.root, b"nope", fs.root, b"q", 0)) == errno.ENOENT
        assert await errno_of(fs.rename(fs.root, b"b", sub.ino, b"loop", 0)) == errno.EINVAL
        # Exchange a file and a directory in different parents.
        await fs.rename(b.ino, b"f2", fs.root, b"x", RENAME_EXCHANGE)
        assert (await fs.lookup(fs.root, b"x")).ino == f1.ino
        assert (await fs.lookup(b.ino, b"f2")).ino == x.ino
        assert (await fs.lookup(x.ino, b"..")).ino == b.ino
        assert (await fs.getattr(b.ino)).nlink == 4  # ".", its entry, empty/.., f2/..
        # Renaming a name onto another name of the same inode changes nothing.
        await fs.link(f1.ino, fs.root, b"alias")
        await fs.rename(fs.root, b"alias", fs.root, b"x", 0)
        assert (await fs.getattr(f1.ino)).nlink == 2
    fsck(image)


async def test_unlinked_open_file_lives_until_forgotten(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"f", 0o644, 0, ROOT)
        await fs.write(a.ino, 0, 0, b"x" * 50000)
        free = (await fs.statfs()).blocks_free
        await fs.unlink(fs.root, b"f")
        assert await fs.read(a.ino, 0, 0, 3) == b"xxx"
        await fs.write(a.ino, 0, 50000, b"more")
        assert (await fs.getattr(a.ino)).nlink == 0
        fs.forget(a.ino)
        nxt = await fs.mkdir(fs.root, b"next", 0o755, ROOT)  # the next change frees it
        # 49 data blocks and an indirect block come back; "next" took one.
        assert (await fs.statfs()).blocks_free == free + 50 - 1
        assert nxt.ino == a.ino  # the first free inode again
    fsck(image)


async def test_enospc_changes_nothing(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=2)
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"fill", 0o644, 0, ROOT)
        chunk = b"z" * (64 << 10)
        offset = 0
        with pytest.raises(FSError) as e:
            while True:
                await fs.write(a.ino, 0, offset, chunk)
                offset += len(chunk)
        assert e.value.errno == errno.ENOSPC
        assert (await fs.getattr(a.ino)).size == offset  # the failed write left nothing
        # Fill the last blocks one by one, then everything that needs a block fails.
        while True:
            try:
                await fs.write(a.ino, 0, offset, b"z" * 1024)
            except FSError as e:
                assert e.errno == errno.ENOSPC
                break
            offset += 1024
        assert (await fs.statfs()).blocks_free == 0
        assert await errno_of(fs.mkdir(fs.root, b"d", 0o755, ROOT)) == errno.ENOSPC
        assert await errno_of(fs.symlink(fs.root, b"l", b"x" * 100, ROOT)) == errno.ENOSPC
        await fs.symlink(fs.root, b"fast", b"x" * 10, ROOT)  # needs no block
        assert await fs.read(a.ino, 0, 0, 5) == b"zzzzz"
        await fs.unlink(fs.root, b"fill")
        fs.forget(a.ino)
        await fs.mkdir(fs.root, b"d", 0o755, ROOT)  # space is back
    fsck(image)


async def test_inode_exhaustion(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=4, extra=("-N", "64"))
    async with open_rw(image) as fs:
        made = 0
        with pytest.raises(FSError) as e:
            while True:
                await fs.create(fs.root, b"f%d" % made, 0o644, 0, ROOT)
                made += 1
        assert e.value.errno == errno.ENOSPC
        assert (await fs.statfs()).files_free == 0
        assert await errno_of(fs.mkdir(fs.root, b"d", 0o755, ROOT)) == errno.ENOSPC
        assert len(await fs.readdir(fs.root)) == made + 1  # lost+found
    fsck(image)


async def test_directories_spread_over_groups(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=64)
    async with open_rw(image) as fs:
        ipg = fs.geo.inodes_per_group
        tops = [await fs.mkdir(fs.root, b"top%d" % i, 0o755, ROOT) for i in range(8)]
        groups = [(t.ino - 1) // ipg for t in tops]
        # Orlov: top-level directories spread over the groups with above-average free
        # space (at 1 KiB, the three without a superblock backup), fewest directories first.
        assert sorted(groups.count(g) for g in set(groups)) == [2, 3, 3]
        a, _ = await fs.create(tops[0].ino, b"f", 0o644, 0, ROOT)
        assert (a.ino - 1) // ipg == (tops[0].ino - 1) // ipg  # files stay with their parent
        await fs.write(a.ino, 0, 0, b"d" * 4096)
    fsck(image)
    # The file's blocks sit in its inode's group.
    blocks = debugfs(image, "blocks /top0/f").split()
    group = (a.ino - 1) // ipg
    assert all((int(b) - 1) // 8192 == group for b in blocks)


async def test_volume_state_and_refusals(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    assert state_on_disk(image) & 1
    with ImageFile(str(image), writable=True) as file:
        fs = await WritableExt2.load(file, MountOptions(writable=True))
        assert state_on_disk(image) & 1 == 0  # not clean while mounted rw
        # Abandoned without close: still not clean, so the next writer is refused.
    with ImageFile(str(image), writable=True) as file:
        with pytest.raises(Refusal, match="not cleanly unmounted"):
            await WritableExt2.load(file, MountOptions(writable=True))
        fs = await WritableExt2.load(file, MountOptions(writable=True, force=True))
        await fs.close()
    assert state_on_disk(image) & 1 == 0  # forced: it still needs checking, as before
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)
    assert state_on_disk(image) & 1
    fsck(image)


async def test_read_only_opens_never_write(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    before = hashlib.sha256(image.read_bytes()).digest()
    with ImageFile(str(image)) as file:
        fs = await DRIVER.open([file], MountOptions(writable=False))
        assert not isinstance(fs, Write) or not fs._writable
        await fs.getattr(fs.root)
        if isinstance(fs, WritableExt2):
            await fs.close()
    assert hashlib.sha256(image.read_bytes()).digest() == before


@pytest.mark.parametrize(
    "feature",
    ["inline_data", "bigalloc", "encrypt", "casefold", "ea_inode", "quota", "verity",
     "orphan_file"],
)  # fmt: skip
async def test_unwritten_ext4_features_refuse_writing(tmp_path: Path, feature: str) -> None:
    """ext4 with mke2fs's defaults is written; each feature the writer does not keep is
    named in the one-line refusal."""
    image = fresh_image(
        tmp_path / "img", block_size=4096, size_mb=16, fstype="ext4", extra=("-O", feature)
    )
    with ImageFile(str(image), writable=True) as file:
        with pytest.raises(ReadOnlyVolume) as e:
            await WritableExt2.load(file, MountOptions(writable=True))
        assert str(e.value) == (
            f"ext2: cannot write a volume with feature(s) {feature}; mount it read-only (-o ro)"
        )
        # Through the driver type the volume opens read-only: the mount goes on so.
        fs = await DRIVER.open([file], MountOptions(writable=True))
        assert not isinstance(fs, Write)


async def test_hurd_volumes_refuse_writing(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8, extra=("-o", "hurd"))
    with (
        ImageFile(str(image), writable=True) as file,
        pytest.raises(Refusal, match="made for Linux"),
    ):
        await WritableExt2.load(file, MountOptions(writable=True))


async def test_ext3_is_written_through_its_journal(tmp_path: Path, kernel_mount) -> None:
    """While open, the volume needs recovery; closed, the journal is checkpointed and empty."""
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=16, fstype="ext3")
    async with open_rw(image) as fs:
        d = await fs.mkdir(fs.root, b"d", 0o755, ROOT)
        a, _ = await fs.create(d.ino, b"f", 0o644, 0, ROOT)
        await fs.write(a.ino, 0, 0, b"journaled\n")
        await fs.fsync(a.ino, 0, False)
        dumped = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
        assert "needs_recovery" in dumped.stdout
        assert "Journal start:            1\n" in dumped.stdout  # one transaction, live
    fsck(image)
    assert debugfs(image, "cat /d/f") == "journaled\n"
    dumped = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert "has_journal" in dumped and "needs_recovery" not in dumped
    assert "Journal start:            0\n" in dumped and "journal_incompat_revoke" in dumped
    assert (kernel_mount(image, "ext3") / "d" / "f").read_bytes() == b"journaled\n"


async def test_ext3_with_a_journal_to_replay_is_refused(tmp_path: Path) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=16, fstype="ext3")
    journal_block = int(debugfs(image, "bmap <8> 0").strip())
    with open(image, "r+b") as f:  # s_start != 0: transactions wait in the log
        f.seek(journal_block * 1024 + 0x1C)
        f.write(struct.pack(">I", 1))
    with (
        ImageFile(str(image), writable=True) as file,
        pytest.raises(Refusal, match="journal is not empty"),
    ):
        await WritableExt2.load(file, MountOptions(writable=True))


async def test_deleting_a_populated_mke2fs_tree(tmp_path: Path) -> None:
    """Files mke2fs -d made (xattr blocks, long symlinks, devices, hard links) all go."""
    from .images import make_image, make_tree

    if os.geteuid() != 0:
        pytest.skip("the tree needs root (devices, ids)")
    tree = tmp_path / "tree"
    make_tree(tree, huge=False)
    image = tmp_path / "img"
    make_image(tree, image, fstype="ext2", block_size=1024, revision=1, filetype=True,
               size_mb=96)  # fmt: skip
    async with open_rw(image) as fs:
        await remove_tree(fs, fs.root)
        assert {e.name for e in await fs.readdir(fs.root)} == {b"lost+found"}
        files = (await fs.statfs()).files
    fsck(image)
    dumped = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert f"Free inodes:              {files - 11}\n" in dumped  # reserved ones and lost+found


async def remove_tree(fs: WritableExt2, ino: int) -> None:
    for entry in await fs.readdir(ino):
        if entry.name == b"lost+found":
            continue
        if stat.S_ISDIR(entry.attr.mode):
            await remove_tree(fs, entry.attr.ino)
            await fs.rmdir(ino, entry.name)
        else:
            await fs.unlink(ino, entry.name)
        fs.forget(entry.attr.ino)


# --- mounted ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_mounted_posix_calls(tmp_path: Path, mount, kernel_mount, block_size: int) -> None:
    image = fresh_image(tmp_path / "img", block_size=block_size, size_mb=32)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    (mnt / "dir").mkdir(mode=0o750)
    (mnt / "dir" / "file").write_bytes(b"hello\n")
    with open(mnt / "dir" / "file", "ab") as f:  # O_APPEND
        f.write(b"appended\n")
    assert (mnt / "dir" / "file").read_bytes() == b"hello\nappended\n"
    with open(mnt / "dir" / "file", "wb") as f:  # O_TRUNC
        f.write(b"new")
    assert (mnt / "dir" / "file").read_bytes() == b"new"
    os.truncate(mnt / "dir" / "file", 10000)
    assert (mnt / "dir" / "file").read_bytes() == b"new" + bytes(9997)
    os.chmod(mnt / "dir" / "file", 0o4711)
    os.chown(mnt / "dir" / "file", 1234, 5678)
    assert stat.S_IMODE(os.stat(mnt / "dir" / "file").st_mode) == 0o711  # chown kills setuid
    os.utime(mnt / "dir" / "file", ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    st = os.stat(mnt / "dir" / "file")
    assert (st.st_atime_ns, st.st_mtime_ns) == (
        1_500_000_000_123_456_789,
        1_600_000_000_987_654_321,
    )
    os.mkfifo(mnt / "fifo")
    os.mknod(mnt / "dev", stat.S_IFCHR | 0o600, os.makedev(4, 5))
    os.symlink("dir/file", mnt / "link")
    os.symlink("x" * 300, mnt / "longlink")
    os.link(mnt / "dir" / "file", mnt / "hard")
    os.rename(mnt / "dir", mnt / "renamed")
    os.makedirs(mnt / "a" / "b" / "c")
    (mnt / "a" / "b" / "c" / "deep").write_bytes(os.urandom(200_000))
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "a")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        (mnt / ("n" * 256)).write_bytes(b"")
    assert e.value.errno == errno.ENAMETOOLONG
    (mnt / ("n" * 255)).write_bytes(b"long name")
    (mnt / "swap_a").write_bytes(b"a")
    os.mkdir(mnt / "a" / "swap_b")
    assert renameat2(mnt / "swap_a", mnt / "a" / "swap_b", RENAME_EXCHANGE) == 0
    assert renameat2(mnt / "swap_a", mnt / "hard", RENAME_NOREPLACE) == errno.EEXIST
    assert (mnt / "a" / "swap_b").read_bytes() == b"a"
    assert (mnt / "swap_a").is_dir()
    os.setxattr(mnt / "hard", "user.mounted", b"value" * 100)
    os.setxattr(mnt / "renamed", "user.dir", b"d")
    os.removexattr(mnt / "renamed", "user.dir")
    st = os.statvfs(mnt)
    seen = snapshot(mnt)
    run_uvfs("umount", str(mnt))
    fsck(image)
    dumped = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert f"Free blocks:              {st.f_bfree}\n" in dumped
    assert f"Free inodes:              {st.f_ffree}\n" in dumped
    view = kernel_mount(image)
    assert snapshot(view) == seen
    assert os.getxattr(view / "renamed" / "file", "user.mounted") == b"value" * 100
    assert os.listxattr(view / "renamed") == []


@pytest.mark.slow
def test_mounted_as_a_normal_user(tmp_path: Path, mount) -> None:
    """allow_other,default_permissions: the kernel checks modes, a user owns what it makes."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    image = fresh_image(tmp_path / "img", block_size=4096, size_mb=16)
    mnt = mount(image, options=RW + ",allow_other,default_permissions", fstype=FSTYPE)
    os.chmod(mnt, 0o1777)
    (mnt / "rootfile").write_bytes(b"root's")
    script = (
        "import os, errno\n"
        "os.mkdir('mine'); open('mine/f', 'w').write('user')\n"
        "st = os.stat('mine/f'); assert (st.st_uid, st.st_gid) == (1000, 1000), st\n"
        "try: os.unlink('rootfile')\n"
        "except PermissionError: pass\n"
        "else: raise SystemExit('sticky directory ignored')\n"
        "try: open('rootfile', 'a')\n"
        "except PermissionError: pass\n"
        "else: raise SystemExit('mode ignored')\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3",
         "-c", script],
        cwd=mnt, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_uvfs("umount", str(mnt))
    fsck(image)


@pytest.mark.parametrize("inode_size", [128, 256])
async def test_extended_attributes(tmp_path: Path, inode_size: int) -> None:
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8,
                        extra=("-I", str(inode_size)))  # fmt: skip
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"f", 0o644, 0, ROOT)
        b, _ = await fs.create(fs.root, b"g", 0o644, 0, ROOT)
        await fs.setxattr(a.ino, b"user.small", b"v", 0)  # in the inode when it has room
        await fs.setxattr(a.ino, b"user.big", b"B" * 600, 0)  # only a block holds this
        await fs.setxattr(a.ino, b"trusted.t", b"", 0)
        await fs.setxattr(b.ino, b"user.other", b"x" * 40, 0)
        assert sorted(await fs.listxattr(a.ino)) == [b"trusted.t", b"user.big", b"user.small"]
        assert await fs.getxattr(a.ino, b"user.big") == b"B" * 600
        assert (await fs.getattr(a.ino)).blocks == 2  # the attribute block
        flags = os.XATTR_CREATE
        assert await errno_of(fs.setxattr(a.ino, b"user.small", b"w", flags)) == errno.EEXIST
        flags = os.XATTR_REPLACE
        assert await errno_of(fs.setxattr(a.ino, b"user.none", b"w", flags)) == errno.ENODATA
        assert await errno_of(fs.removexattr(a.ino, b"user.none")) == errno.ENODATA
        assert await errno_of(fs.setxattr(a.ino, b"user.huge", bytes(2000), 0)) == errno.ENOSPC
        assert await errno_of(fs.setxattr(a.ino, b"system.x", b"", 0)) == errno.ENOTSUP
        await fs.setxattr(a.ino, b"user.small", b"replaced", os.XATTR_REPLACE)
        await fs.removexattr(a.ino, b"user.big")
        await fs.removexattr(a.ino, b"trusted.t")
        assert await fs.listxattr(a.ino) == [b"user.small"]
        assert await fs.getxattr(a.ino, b"user.small") == b"replaced"
        if inode_size == 128:  # no in-inode area: the block stays for user.small
            assert (await fs.getattr(a.ino)).blocks == 2
        else:
            assert (await fs.getattr(a.ino)).blocks == 0  # the emptied block was freed
        await fs.unlink(fs.root, b"g")
        fs.forget(b.ino)
    fsck(image)
    assert "user.small" in debugfs(image, "ea_list /f")


async def test_changing_attributes_mke2fs_wrote(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("one", "two"):
        (tree / name).write_bytes(b"")
        try:
            os.setxattr(tree / name, "user.shared", b"s" * 300)
        except OSError as e:
            pytest.skip(f"no user xattrs here: {e}")
    image = tmp_path / "img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-d", str(tree), str(image),
                    "8M"], check=True, capture_output=True)  # fmt: skip
    async with open_rw(image) as fs:
        one = await fs.lookup(fs.root, b"one")
        await fs.setxattr(one.ino, b"user.shared", b"changed", 0)
        two = await fs.lookup(fs.root, b"two")
        assert await fs.getxattr(two.ino, b"user.shared") == b"s" * 300
        await fs.removexattr(two.ino, b"user.shared")
    fsck(image)


async def test_indexed_directories_become_linear_when_changed(tmp_path: Path) -> None:
    """e2fsck -D gives big directories an htree index; changing one drops the stale index."""
    tree = tmp_path / "tree"
    (tree / "big").mkdir(parents=True)
    for i in range(400):
        (tree / "big" / f"name-{i:04d}-{'p' * 30}").write_bytes(b"")
    image = tmp_path / "img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-d", str(tree), str(image),
                    "8M"], check=True, capture_output=True)  # fmt: skip
    subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True)
    assert "Flags: 0x1000" in debugfs(image, "stat /big")  # EXT2_INDEX_FL
    async with open_rw(image) as fs:
        big = await fs.lookup(fs.root, b"big")
        for i in range(0, 400, 2):
            await fs.unlink(big.ino, f"name-{i:04d}-{'p' * 30}".encode())
        await fs.create(big.ino, b"added", 0o644, 0, ROOT)
        assert len(await fs.readdir(big.ino)) == 201
    fsck(image)
    assert "Flags: 0x0" in debugfs(image, "stat /big")
    assert "added" in debugfs(image, "ls /big")


async def test_freed_blocks_wait_for_the_flush_before_reuse(tmp_path: Path) -> None:
    """A block freed since the last flush still belongs to its old file on disk: not reused."""
    image = fresh_image(tmp_path / "img", block_size=1024, size_mb=8)
    async with open_rw(image) as fs:
        a, _ = await fs.create(fs.root, b"a", 0o644, 0, ROOT)
        await fs.write(a.ino, 0, 0, b"a" * 8192)
        await fs.fsync(a.ino, 0, False)
        old = await blocks_of(fs, a.ino, 8)
        free = (await fs.statfs()).blocks_free
        await fs.setattr(a.ino, SetAttr(size=0), ROOT)
        assert (await fs.statfs()).blocks_free == free + 8  # counted free at once
        b, _ = await fs.create(fs.root, b"b", 0o644, 0, ROOT)
        await fs.write(b.ino, 0, 0, b"b" * 8192)
        new = await blocks_of(fs, b.ino, 8)
        assert not old & new
        await fs.fsync(b.ino, 0, False)
        c, _ = await fs.create(fs.root, b"c", 0o644, 0, ROOT)
        await fs.write(c.ino, 0, 0, b"c" * 8192)
        assert (
            await blocks_of(fs, c.ino, 8) == old
        )  # after the flush they are the first free ones again
    fsck(image)


async def blocks_of(fs: WritableExt2, ino: int, count: int) -> set[int]:
    """The physical blocks holding the first `count` logical blocks of `ino`."""
    runs = await fs._map(await fs._inode(ino), 0, count)
    return {block for r in runs if r.physical for block in range(r.physical, r.physical + r.count)}


@pytest.mark.slow
def test_ext4_with_an_unwritten_feature_mounts_read_only(tmp_path: Path, mount) -> None:
    image = fresh_image(
        tmp_path / "img", block_size=4096, size_mb=16, fstype="ext4", extra=("-O", "inline_data")
    )
    before = hashlib.sha256(image.read_bytes()).digest()
    mnt = mount(image, options=RW, fstype=FSTYPE)
    with pytest.raises(OSError) as e:
        (mnt / "new").write_bytes(b"")
    assert e.value.errno == errno.EROFS
    assert sorted(os.listdir(mnt)) == ["lost+found"]
    run_uvfs("umount", str(mnt))
    assert hashlib.sha256(image.read_bytes()).digest() == before


@pytest.mark.slow
def test_mounted_unlinked_open_file(tmp_path: Path, mount) -> None:
    """Unlinked while open: readable until closed, freed once the kernel forgets it."""
    image = fresh_image(tmp_path / "img", block_size=4096, size_mb=64)
    mnt = mount(image, options=RW, fstype=FSTYPE)
    free = os.statvfs(mnt).f_bfree
    fd = os.open(mnt / "x", os.O_CREAT | os.O_RDWR)
    try:
        os.write(fd, b"x" * 10_000_000)
        os.unlink(mnt / "x")
        assert os.pread(fd, 3, 9_999_997) == b"xxx"
        assert os.statvfs(mnt).f_bfree < free - 2400
    finally:
        os.close(fd)
    deadline = time.monotonic() + 10
    while True:
        os.chmod(mnt, 0o755)  # the change after the kernel's forget frees the inode
        if os.statvfs(mnt).f_bfree == free or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert os.statvfs(mnt).f_bfree == free
    run_uvfs("umount", str(mnt))
    fsck(image)
