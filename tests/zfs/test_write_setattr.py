"""chmod, chown, utimens and truncate through PoolWriter.setattr, as zfs-fuse and our own
reader see them."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from conftest import PoolFactory
from write_pool import ORIGINAL, copy_pool, grow_pool, scrub_clean, znodes_with_their_acls
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import FSError, ImageFile
from uvfs_fs.zfs import ZfsFileSystem
from uvfs_fs.zfs.dnode import DNODE_MIN_SIZE
from uvfs_fs.zfs.spa import open_pool
from uvfs_fs.zfs.writer import PoolWriter

ATIME, MTIME = (1_000_000_000, 5), (1_234_567_890, 123_456_789)
OLD = (-86_400, 999_999_999)  # before the epoch: a signed seconds field


@pytest.fixture(scope="module")
def built(zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> PoolRecord:
    return grow_pool(zfs_pool, zfs_fuse)


def _ns(t: tuple[int, int]) -> int:
    return t[0] * 10**9 + t[1]


def _s(ns: int) -> int:
    return ns // 10**9


async def test_setattr(built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path) -> None:
    """A txg of setattrs: modes of a file and a directory (their trivial ACLs follow),
    owner and group, atime and mtime (one before the epoch), a size cut and a size grown
    with an mtime given. Our reader and zfs-fuse show exactly those attributes and bytes;
    every znode's ACL and flags, and those of a file and a directory zfs-fuse chmods
    afterwards, are the trivial ones of their modes; zfs-fuse's userused@1000 is the
    chowned file's dnode and blocks; scrub is clean, zdb -bcc finds no leak. A setattr
    refused changes nothing."""
    name = built.name
    vdevs = copy_pool(built, tmp_path / "pool")
    writer = await PoolWriter.open([str(v) for v in vdevs])
    try:
        await writer.setattr(name, "small", mode=0o4751)
        await writer.setattr(name, "fat", mode=0o700)
        await writer.setattr(name, "tiny", uid=1000, gid=100)
        await writer.setattr(name, "record", atime=ATIME, mtime=MTIME)
        await writer.setattr(name, "odd", mtime=OLD)
        await writer.setattr(name, "three", size=10)
        await writer.setattr(name, "sparse", size=5000, mtime=MTIME)
        with pytest.raises(FSError) as e:
            await writer.setattr(name, "nothing", mode=0o600)
        assert e.value.errno == errno.ENOENT
        with pytest.raises(FSError) as e:
            await writer.setattr(name, "fat", size=0, mode=0o777)
        assert e.value.errno == errno.EISDIR
        await writer.sync()
    finally:
        writer.close()
    modes = {"small": stat.S_IFREG | 0o4751, "fat": stat.S_IFDIR | 0o700}
    sizes = {"three": 10, "sparse": 5000}
    contents = {"three": ORIGINAL["three"][:10], "sparse": ORIGINAL["sparse"] + bytes(4900)}

    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    fs = await ZfsFileSystem.from_pool(pool)
    ours = {
        p: await fs.lookup(fs.root, p.encode()) for p in (*modes, "tiny", "record", "odd", "sparse")
    }
    assert {p: ours[p].mode for p in modes} == modes
    assert (ours["tiny"].uid, ours["tiny"].gid) == (1000, 100)
    assert (ours["record"].atime_ns, ours["record"].mtime_ns) == (_ns(ATIME), _ns(MTIME))
    assert (ours["odd"].mtime_ns, ours["sparse"].mtime_ns) == (_ns(OLD), _ns(MTIME))

    theirs: dict[str, os.stat_result] = {}
    read: dict[str, bytes] = {}
    used: list[str] = []

    def look() -> None:
        mnt = zfs_fuse.visible(built.directory / "mnt")
        for p in ("small", "fat", "tiny", "record", "odd", "three", "sparse"):
            theirs[p] = (mnt / p).lstat()  # before any read moves an atime
        read.update({p: (mnt / p).read_bytes() for p in contents})
        used.append(zfs_fuse.run("zfs", "get", "-Hp", "-o", "value", "userused@1000", name))
        (mnt / "c").chmod(0o710)
        (mnt / "c" / "text").chmod(0o640)

    status = scrub_clean(zfs_fuse, tmp_path / "pool", name, look)
    assert {p: theirs[p].st_mode for p in modes} == modes
    assert (theirs["tiny"].st_uid, theirs["tiny"].st_gid) == (1000, 100)
    # zfs-fuse shows whole seconds; our reader checked the nanoseconds
    assert (_s(theirs["record"].st_atime_ns), _s(theirs["record"].st_mtime_ns)) == (
        ATIME[0],
        MTIME[0],
    )
    assert (_s(theirs["odd"].st_mtime_ns), _s(theirs["sparse"].st_mtime_ns)) == (OLD[0], MTIME[0])
    assert {p: theirs[p].st_size for p in sizes} == sizes
    assert read == contents
    assert "with 0 errors" in status and "errors: No known data errors" in status, status

    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    tiny_used, modes_seen = 0, set()
    async for dn, z in znodes_with_their_acls(pool):
        modes_seen.add(z.mode)
        if z.uid == 1000:
            tiny_used += DNODE_MIN_SIZE + dn.used_bytes
    assert {stat.S_IFDIR | 0o710, stat.S_IFREG | 0o640, *modes.values()} <= modes_seen
    assert used == [f"{tiny_used}\n"]
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
