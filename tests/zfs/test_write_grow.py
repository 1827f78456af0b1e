"""Files that grow and shrink (writer.py `write_file_range` past the end and `truncate`,
objset_sync.py's tree growth and frees), as zfs-fuse and our own reader see them."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from conftest import PoolFactory
from trees import Node, record_fs
from write_pool import ORIGINAL, TEXT, copy_pool, destroy, grow_pool, scrub_clean
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import ImageFile
from uvfs_fs.zfs import ZfsFileSystem
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import list_datasets
from uvfs_fs.zfs.spa import open_pool
from uvfs_fs.zfs.writer import PoolWriter
from uvfs_fs.zfs.zap import Zap

FAR = 40 << 20  # with 16K records and 128 pointers per indirect block: three levels


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> PoolRecord:
    return grow_pool(zfs_pool, zfs_fuse)


def _shown(node: Node) -> tuple[object, ...]:
    """What the two views of a file must agree on."""
    return (node.mode, node.size, node.nlink, node.blocks, node.mtime, node.ctime, node.digest)


def _stat(path: Path) -> tuple[object, ...]:
    """`_shown` of a file seen through the kernel (zfs-fuse runs without xattrs here)."""
    st = path.stat()
    digest = _hex(path.read_bytes())
    return (st.st_mode, st.st_size, st.st_nlink, st.st_blocks, int(st.st_mtime),
            int(st.st_ctime), digest)  # fmt: skip


async def _block_sizes(pool_paths: list[Path], dataset: str, names: list[str]) -> dict:
    """(data block size, dn_nlevels, dn_maxblkid) of files of `dataset` by name."""
    pool = await open_pool([ImageFile(str(p)) for p in pool_paths])
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    ds = {d.name: d for d in await list_datasets(mos, pool.name)}[dataset]
    objset = await ObjectSet.open(mos.cache, ds.phys.ds_bp)
    root = (await (await Zap.open(objset, 1)).lookup(b"ROOT")).int()
    out = {}
    for name in names:
        obj = (await (await Zap.open(objset, root)).lookup(name.encode())).int() & ((1 << 48) - 1)
        dn = await objset.dnode(obj)
        out[name] = (dn.datablksz, dn.dn_nlevels, dn.dn_maxblkid)
    return out


async def test_files_grow_and_shrink(built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path) -> None:
    """Writes past the end and truncates, over two txgs: a one-block file's block grows
    to fit (in whole sectors, up to the recordsize) before a second block is added and
    the tree gains a level (three at once for a write 40 MiB out with 16K records); a
    truncate frees the blocks past the new end and zeroes the tail of the last kept one,
    a longer truncate leaves a sparse file. zfs-fuse shows exactly the bytes written, the
    clone of c@s1 the old ones, scrub is clean and zdb -bcc finds no leak; our reader
    shows the same files as zfs-fuse, block counts and times included."""
    name = built.name
    vdevs = copy_pool(built, tmp_path / "pool")
    want = dict(ORIGINAL)
    writer = await PoolWriter.open([str(v) for v in vdevs])
    tail = random.Random(5).randbytes(4000)
    far = b"far away" * 100
    try:
        await writer.write_file_range(name, "small", 1000, tail)
        await writer.write_file_range(name, "tiny", 200_000, b"after a gap")
        await writer.write_file_range(name, "record", 128 * 1024, b"ten bytes!")
        await writer.truncate(name, "three", 150_000)
        await writer.truncate(name, "gone", 0)
        await writer.truncate(name, "sparse", 1_000_000)
        await writer.truncate(name, "odd", 1000)
        await writer.write_file_range(f"{name}/c", "text", FAR, far)
        await writer.truncate(f"{name}/c", "cut", 20_000)
        await writer.write_file_range(f"{name}/c", "mid", 10_000, TEXT[:30_000])
        await writer.sync()
        # A second txg over the first one's results: grow, then cut within one txg.
        await writer.write_file_range(name, "gone", 0, b"back again")
        await writer.write_file_range(f"{name}/c", "mid", 100_000, b"x" * 50_000)
        await writer.truncate(f"{name}/c", "mid", 120_000)
        await writer.sync()
    finally:
        writer.close()
    want["small"] += tail
    want["tiny"] += bytes(200_000 - 700) + b"after a gap"
    want["record"] += b"ten bytes!"
    want["three"] = want["three"][:150_000]
    want["gone"] = b"back again"
    want["sparse"] += bytes(1_000_000 - 100)
    want["odd"] = want["odd"][:1000]
    want["c/text"] += bytes(FAR - len(TEXT)) + far
    want["c/cut"] = want["c/cut"][:20_000]
    mid = TEXT[:10_000] + TEXT[:30_000]
    want["c/mid"] = (mid + bytes(100_000 - len(mid)) + b"x" * 50_000)[:120_000]

    assert await _block_sizes(vdevs, name, ["small", "tiny", "record", "three", "odd"]) == {
        "small": (5120, 1, 0),  # grown in place: 5000 bytes in whole sectors
        "tiny": (128 * 1024, 2, 1),  # grown to the recordsize, then a second block
        "record": (128 * 1024, 2, 1),
        "three": (128 * 1024, 2, 1),
        "odd": (3072, 1, 0),  # a shorter file keeps its block size
    }
    assert (await _block_sizes(vdevs, f"{name}/c", ["text"]))["text"] == (
        16 * 1024, 3, (FAR + len(far) - 1) // (16 * 1024))  # fmt: skip

    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    fs = await ZfsFileSystem.from_pool(pool)
    ours = await record_fs(fs, fs.root)
    assert {p: n.digest for p, n in ours.items() if n.digest} == {
        p: _hex(d) for p, d in want.items()
    }
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
    theirs: dict[str, tuple[object, ...]] = {}
    clone: dict[str, bytes] = {}

    def look() -> None:
        mnt = zfs_fuse.visible(built.directory / "mnt")
        theirs.update({path: _stat(mnt / path) for path in want})
        zfs_fuse.run("zfs", "clone", f"{name}/c@s1", f"{name}/old")
        for path in ("text", "cut", "mid"):
            clone[path] = (mnt / "old" / path).read_bytes()
        destroy(zfs_fuse, f"{name}/old")

    status = scrub_clean(zfs_fuse, tmp_path / "pool", name, look)
    assert theirs == {path: _shown(ours[path]) for path in want}
    assert clone == {p: ORIGINAL[f"c/{p}"] for p in ("text", "cut", "mid")}
    assert "with 0 errors" in status and "errors: No known data errors" in status, status
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
