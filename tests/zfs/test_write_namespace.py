"""Creating, removing and renaming files and directories (zpl_write.py through
PoolWriter), as zfs-fuse and our own reader see them."""

from __future__ import annotations

import errno
import hashlib
import random
import stat
from pathlib import Path

import pytest
from conftest import PoolFactory
from trees import Node, record_fs
from write_pool import (
    ORIGINAL,
    copy_pool,
    destroy,
    grow_pool,
    scrub_clean,
    tree_view,
    user_usage,
    znodes_with_their_acls,
)
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import FSError, ImageFile
from uvfs_fs.zfs import ZfsFileSystem
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import list_datasets
from uvfs_fs.zfs.spa import Pool, open_pool
from uvfs_fs.zfs.writer import PoolWriter
from uvfs_fs.zfs.zap import Zap
from uvfs_fs.zfs.zpl import OBJ_MASK

RNG = random.Random(33)
NEW = RNG.randbytes(300_000)  # from 512-byte blocks to three records, a tree level added
INNER = RNG.randbytes(5000)
MANY = {f"f{i:02}": RNG.randbytes(100 * i + 1) for i in range(20)}  # micro ZAP grows
FAT = sorted(p for p in ORIGINAL if p.startswith("fat/"))
FAT_NEW = "fat/" + "new" * 20
UPGRADE = "d/" + "x" * 60  # a name no micro ZAP entry holds


SPLIT = [f"fat/{i:03}" + "z" * 57 for i in range(200)]  # splits the fat directory's leaf


@pytest.fixture(scope="module")
def built(zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> PoolRecord:
    return grow_pool(zfs_pool, zfs_fuse)


async def _fat_count(pool: Pool) -> tuple[int, int]:
    """zap_num_entries and zap_num_leafs of the root dataset's directory "fat" (a fat
    ZAP: EIO if not)."""
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    ds = {d.name: d for d in await list_datasets(mos, pool.name)}[pool.name]
    objset = await ObjectSet.open(mos.cache, ds.phys.ds_bp)
    root = (await (await Zap.open(objset, 1)).lookup(b"ROOT")).int()
    fat = (await (await Zap.open(objset, root)).lookup(b"fat")).int() & OBJ_MASK
    phys = (await Zap.open(objset, fat)).phys
    if phys is None:
        raise OSError(errno.EIO, "fat is a micro ZAP")
    return phys.zap_num_entries, phys.zap_num_leafs


def _ours(tree: dict[str, Node]) -> dict[str, tuple[object, ...]]:
    return {p: (n.mode, n.size, n.nlink, n.digest) for p, n in tree.items()}


def _expected(files: dict[str, bytes], dirs: dict[str, int]) -> dict[str, tuple[object, ...]]:
    """The view of `files` (path -> contents, mode 0644 unless the path says) and `dirs`
    (path -> permission bits): a directory's size counts its entries plus 2 and its
    links its subdirectories plus 2."""
    out: dict[str, tuple[object, ...]] = {}
    for path, data in files.items():
        mode = 0o600 if path == "d/inner" else 0o644
        out[path] = (stat.S_IFREG | mode, len(data), 1, hashlib.sha256(data).hexdigest())
    for path, mode in dirs.items():
        children = [p for p in [*files, *dirs] if p.rpartition("/")[0] == path]
        subdirs = [p for p in children if p in dirs]
        out[path] = (stat.S_IFDIR | mode, len(children) + 2, len(subdirs) + 2, None)
    return out


async def test_trivial_acls_are_zfs_fuses(built: PoolRecord) -> None:
    """Every file and directory zfs-fuse made in the pool has the ACL and ACL flags
    acl.py derives from its mode."""
    pool = await open_pool([ImageFile(str(v)) for v in built.vdevs])
    seen = 0
    async for _ in znodes_with_their_acls(pool):
        seen += 1
    assert seen >= 12


async def test_create_remove_rename(built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path) -> None:
    """Over two txgs: files and directories created (one written past three records,
    one directory given 20 entries, entries added to and removed from the leaf of a fat
    ZAP directory and 200 more splitting it, a micro ZAP directory upgraded to a fat one
    by a long name), files unlinked (in a dataset with a snapshot and in one without), a directory
    removed, renames within and across directories, over an existing file and of
    directories. zfs-fuse shows exactly that tree (names, modes, sizes, link counts,
    contents), our reader the same one, the clone of c@s1 the old c; scrub is clean, zdb
    -bcc finds no leak, and each dataset's userused@0 equals its root-owned dnodes and
    their blocks. Refused operations change nothing."""
    name = built.name
    vdevs = copy_pool(built, tmp_path / "pool")
    writer = await PoolWriter.open([str(v) for v in vdevs])
    c = f"{name}/c"
    try:
        await writer.create(name, "new")
        await writer.write_file_range(name, "new", 0, NEW)
        await writer.mkdir(name, "d")
        await writer.create(name, "d/inner", 0o600)
        await writer.write_file_range(name, "d/inner", 0, INNER)
        await writer.mkdir(name, "d/sub")
        await writer.mkdir(name, "e")
        await writer.mkdir(name, "many")
        for f, data in MANY.items():
            await writer.create(name, f"many/{f}")
            await writer.write_file_range(name, f"many/{f}", 0, data)
        await writer.unlink(name, "record")
        await writer.unlink(c, "text")
        await writer.rename(name, "small", "d/small2")
        await writer.rename(name, "tiny", "three")
        await writer.rename(name, "d/sub", "moved")
        await writer.create(name, FAT_NEW)
        await writer.write_file_range(name, FAT_NEW, 0, b"in a fat ZAP")
        await writer.create(name, "fat/short")
        await writer.unlink(name, FAT[0])
        await writer.rename(name, FAT[1], "fromfat")
        await writer.rename(name, "odd", "fat/odd")
        await writer.sync()
        await writer.rmdir(name, "e")
        await writer.unlink(name, "many/f03")
        await writer.rename(name, "many", "d/many")
        await writer.create(c, "fresh")
        await writer.write_file_range(c, "fresh", 0, b"fresh bytes")
        refused = []
        bad = ((writer.create, ("new",)), (writer.unlink, ("d",)), (writer.rmdir, ("new",)),
               (writer.rmdir, ("d",)), (writer.rename, ("d", "d/many/x")),
               (writer.unlink, ("nothing",)))  # fmt: skip
        for op, args in bad:
            with pytest.raises(FSError) as e:
                await op(name, *args)
            refused.append(e.value.errno)
        assert refused == [errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EINVAL,
                           errno.ENOENT]  # fmt: skip
        await writer.create(name, UPGRADE)  # "d" becomes a fat ZAP
        for path in SPLIT:
            await writer.create(name, path)
        await writer.sync()
    finally:
        writer.close()
    gone = ("record", "c/text", "small", "tiny", "odd", FAT[0], FAT[1])
    files = {p: d for p, d in ORIGINAL.items() if p not in gone}
    files |= {FAT_NEW: b"in a fat ZAP", "fat/short": b"", "fromfat": ORIGINAL[FAT[1]]}
    files |= {"fat/odd": ORIGINAL["odd"], UPGRADE: b""} | {p: b"" for p in SPLIT}
    files |= {"new": NEW, "d/inner": INNER, "d/small2": ORIGINAL["small"]}
    files |= {"three": ORIGINAL["tiny"], "c/fresh": b"fresh bytes"}
    files |= {f"d/many/{f}": data for f, data in MANY.items() if f != "f03"}
    dirs = {"d": 0o755, "moved": 0o755, "d/many": 0o755, "fat": 0o755}
    want = _expected(files, dirs)

    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    entries, leaves = await _fat_count(pool)
    assert entries == sum(p.startswith("fat/") for p in files) and leaves >= 2
    fs = await ZfsFileSystem.from_pool(pool)
    ours = _ours(await record_fs(fs, fs.root))
    del ours["c"]  # the child dataset's root: zfs-fuse made it
    assert ours == want
    users = await user_usage(pool)
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    by_name = {d.name: d.ds_obj for d in await list_datasets(mos, name)}
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
    theirs: dict[str, tuple[object, ...]] = {}
    clone: dict[str, bytes] = {}
    used: list[str] = []

    def look() -> None:
        mnt = zfs_fuse.visible(built.directory / "mnt")
        theirs.update(tree_view(mnt))
        for ds in (name, c):
            used.append(zfs_fuse.run("zfs", "get", "-Hp", "-o", "value", "userused@0", ds))
        zfs_fuse.run("zfs", "clone", f"{c}@s1", f"{name}/old")
        clone.update({p: (mnt / "old" / p).read_bytes() for p in ("text", "cut", "mid")})
        destroy(zfs_fuse, f"{name}/old")

    status = scrub_clean(zfs_fuse, tmp_path / "pool", name, look)
    del theirs["c"]
    assert theirs == want
    assert used == [f"{users[by_name[ds]]}\n" for ds in (name, c)]
    assert clone == {p: ORIGINAL[f"c/{p}"] for p in ("text", "cut", "mid")}
    assert "with 0 errors" in status and "errors: No known data errors" in status, status
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
