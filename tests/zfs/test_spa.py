"""Opening whole pools: zfs-fuse pools of every layout, checked against zdb and the files
written; degraded and damaged pools; refusals; the shared real-world images."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import PoolFactory, unpack_testdata
from test_nvlist import encode_nvlist
from zfsfuse import PoolRecord, ZfsFuse, object_contents, walk_pool

from uvfs import Refusal
from uvfs._image import ImageFile
from uvfs_fs.zfs.checksum import ZEC_MAGIC, ZIO_CHECKSUM_LABEL, compute
from uvfs_fs.zfs.label import VDEV_PHYS_OFFSET, VDEV_PHYS_SIZE, label_offsets
from uvfs_fs.zfs.spa import Pool, describe_pool, open_pool, probe_label

TEXT = b"".join(b"line %d of a compressible text file\n" % i for i in range(6000))
RANDOM = random.Random(42).randbytes(300_000)


def populate(root: Path) -> dict[str, bytes]:
    """Text, random bytes, a small file and a sparse file: what the content checks expect."""
    files = {"text": TEXT, "random": RANDOM, "small": b"hello, zfs\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    with open(root / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"end of a sparse file")
    files["sparse"] = bytes(1 << 20) + b"end of a sparse file"
    (root / "dir").mkdir()
    (root / "dir" / "nested").write_bytes(TEXT[:5000])
    files["nested"] = TEXT[:5000]
    return files


POOLS: dict[str, tuple[list[tuple[str, int]], dict[str, str], int]] = {
    "single": ([("disk", 1)], {"compression": "off", "checksum": "fletcher4"}, 9),
    "mirror": ([("mirror", 2)], {"compression": "lzjb", "checksum": "fletcher2"}, 9),
    "raidz1": ([("raidz1", 4)], {"compression": "gzip-1", "checksum": "sha256"}, 9),
    "raidz2": ([("raidz2", 5)], {"compression": "gzip-9", "recordsize": "16K"}, 12),
    "raidz3": ([("raidz3", 6)], {"compression": "zle", "recordsize": "4K"}, 9),
    "stripe": ([("disk", 1), ("disk", 1)], {"copies": "2", "recordsize": "512"}, 9),
}


def _record(zfs_pool: PoolFactory, key: str) -> PoolRecord:
    layout, props, ashift = POOLS[key]
    return zfs_pool(key, layout, props, populate, ashift=ashift)


def _open(paths: list[Path]) -> list[ImageFile]:
    return [ImageFile(str(p)) for p in paths]


async def _assert_files(pool: Pool, files: dict[str, bytes]) -> None:
    objects = await object_contents(pool)
    for name, want in files.items():
        assert any(
            got[: len(want)] == want and not got[len(want) :].strip(b"\0") for got in objects
        ), f"file {name} not found whole in the pool's objects"


def _nicenum(n: int) -> str:
    """zdb's rounding of a count (nicenum): 1056 -> "1.03K"."""
    index = 0
    while n >= 1024 << (10 * index):
        index += 1
    if index == 0:
        return str(n)
    unit = " KMGTPE"[index]
    if n % (1 << (10 * index)) == 0:
        return f"{n >> (10 * index)}{unit}"
    for digits in (2, 1, 0):
        text = f"{n / (1 << (10 * index)):.{digits}f}{unit}"
        if len(text) <= 5:
            return text
    return text


def _zdb_counts(daemon: ZfsFuse, record: PoolRecord) -> dict[str, str]:
    out = daemon.run("zdb", "-e", "-p", str(record.directory), "-bb", record.name)
    counts = {}
    for line in out.splitlines():
        fields = line.split("\t")
        # Per-level rows indent their type ("    L0 ZFS plain file"); totals do not.
        if len(fields) == 8 and fields[0].strip() != "-" and fields[7] == fields[7].lstrip():
            counts[fields[7]] = fields[0].strip()
    return counts


ZDB_TYPES = {
    "object directory": 1, "SPA space map": 8, "DMU dnode": 10, "DMU objset": 11,
    "DSL props": 15, "ZFS plain file": 19, "ZFS directory": 20, "ZFS master node": 21,
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(POOLS))
async def test_layouts_read_every_block(key: str, zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> None:
    record = _record(zfs_pool, key)
    pool = await open_pool(_open(list(reversed(record.vdevs))))
    assert pool.name == record.name and pool.version == 23
    zdb_u = zfs_fuse.run("zdb", "-e", "-p", str(record.directory), "-u", record.name)
    assert f"txg = {pool.uberblock.ub_txg}\n" in zdb_u
    assert f"guid_sum = {pool.uberblock.ub_guid_sum}\n" in zdb_u
    assert f"pool_guid: {pool.guid}\n" in record.config
    counts: Counter[int] = Counter()
    async for v in walk_pool(pool):
        counts[v.bp.type] += 1
    zdb = _zdb_counts(zfs_fuse, record)
    for name, dmu_type in ZDB_TYPES.items():
        assert _nicenum(counts[dmu_type]) == zdb.get(name, "0"), name
    await _assert_files(pool, record.files)
    stats = pool.statistics()
    assert stats.checksum_errors == stats.unverified == stats.reconstructions == 0


async def test_describe_and_probe(zfs_pool: PoolFactory) -> None:
    record = _record(zfs_pool, "raidz1")
    pool = await open_pool(_open(record.vdevs))
    lines = describe_pool(pool)
    assert lines[:4] == [f"pool: {record.name}", f"guid: {pool.guid}", "version: 23",
                         "state: EXPORTED"]  # fmt: skip
    assert lines[7] == f"  raidz1  guid {pool.vdevs[0].guid}"
    assert [line.split()[0] for line in lines[8:12]] == [str(p) for p in record.vdevs]
    assert lines[-1] == "features for read: none"
    with open(record.vdevs[0], "rb") as f:
        head = f.read(512 * 1024)
    assert probe_label(head)
    assert not probe_label(bytes(512 * 1024))
    # Label 0 destroyed: label 1 still identifies the vdev.
    assert probe_label(bytes(256 * 1024) + head[256 * 1024 :])


def _copy(record: PoolRecord, dest: Path) -> list[Path]:
    dest.mkdir()
    out = []
    for p in record.vdevs:
        subprocess.run(["cp", "--sparse=always", str(p), str(dest / p.name)], check=True)
        out.append(dest / p.name)
    return out


def _scribble(path: Path, seed: int) -> None:
    """Overwrite the allocatable area (past the front labels, before the back ones)."""
    size = os.path.getsize(path)
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        f.seek(4 << 20)
        f.write(rng.randbytes(size - (4 << 20) - (512 << 10)))


@pytest.mark.parametrize(("key", "damaged"), [("mirror", 1), ("raidz1", 1), ("raidz2", 2),
                                              ("raidz3", 3)])  # fmt: skip
async def test_damaged_members_still_read(
    key: str, damaged: int, zfs_pool: PoolFactory, tmp_path: Path
) -> None:
    record = _record(zfs_pool, key)
    paths = _copy(record, tmp_path / "copy")
    for i in range(damaged):
        _scribble(paths[i], i)
    pool = await open_pool(_open(paths))
    await _assert_files(pool, record.files)
    stats = pool.statistics()
    assert stats.checksum_errors > 0
    if key.startswith("raidz"):
        assert stats.reconstructions > 0


@pytest.mark.parametrize(("key", "missing"), [("mirror", 1), ("raidz1", 1), ("raidz2", 2),
                                              ("raidz3", 3)])  # fmt: skip
async def test_missing_members_within_redundancy(
    key: str, missing: int, zfs_pool: PoolFactory
) -> None:
    record = _record(zfs_pool, key)
    pool = await open_pool(_open(record.vdevs[missing:]))
    await _assert_files(pool, record.files)
    # raidz reads the absent columns' places; a mirror skips absent sides
    assert (pool.statistics().leaf_errors > 0) == key.startswith("raidz")
    assert any(line.endswith("(degraded)") for line in describe_pool(pool))


async def test_missing_members_beyond_redundancy(zfs_pool: PoolFactory) -> None:
    record = _record(zfs_pool, "raidz2")
    with pytest.raises(Refusal) as e:
        await open_pool(_open(record.vdevs[3:]))
    for p in record.vdevs[:3]:
        assert str(p) in str(e.value)
    assert "raidz2" in str(e.value)
    stripe = _record(zfs_pool, "stripe")
    with pytest.raises(Refusal, match="top-level vdev 1 is missing"):
        await open_pool(_open(stripe.vdevs[:1]))


async def test_foreign_and_blank_images(zfs_pool: PoolFactory, tmp_path: Path) -> None:
    a, b = _record(zfs_pool, "single"), _record(zfs_pool, "mirror")
    with pytest.raises(Refusal, match="different pools"):
        await open_pool(_open([a.vdevs[0], b.vdevs[0]]))
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    with pytest.raises(Refusal, match=f"{blank}: no valid ZFS label"):
        await open_pool(_open([blank]))


async def test_front_labels_destroyed(zfs_pool: PoolFactory, tmp_path: Path) -> None:
    record = _record(zfs_pool, "single")
    (path,) = _copy(record, tmp_path / "copy")
    with open(path, "r+b") as f:
        f.write(bytes(512 * 1024))  # L0 and L1 gone: L2 and L3 at the end remain
    pool = await open_pool(_open([path]))
    await _assert_files(pool, record.files)


# --- the shared real-world images --------------------------------------------------------

REAL = {
    "zol-0.6.1.tar.bz2": ("zol-0.6.1", 5000, "<", 4),
    "zol-0.6.2.tar.bz2": ("zol-0.6.2", 5000, "<", 4),
    "zevo-1.1.1.tar.bz2": ("tank", 28, "<", 1),
    "zol-znode-removed-xattr.tar.bz2": ("tank", 5000, "<", 1),
    "zol-0.7.0-rc1-be-ziltest.tar.bz2": ("ziltestpool.26210", 5000, ">", 2),
    "testpool_zstd.tar.gz": ("testpool_zstd", 5000, "<", 1),
    "unclean_export.dat.bz2": ("unclean_export", 5000, "<", 1),
    "cryptv0.dat.bz2": ("cryptv0", 5000, "<", 1),
    "zfs-pool-v15.dat.bz2": ("v15-pool", 15, ">", 1),
    "zfs-pool-v1mirror2.dat.bz2": ("pool-v1mirror", 1, ">", 1),
}


@pytest.mark.parametrize("archive", sorted(REAL))
async def test_real_world_pools(archive: str, tmp_path: Path) -> None:
    name, version, order, members = REAL[archive]
    paths = unpack_testdata(archive, tmp_path)
    assert len(paths) == members
    pool = await open_pool(_open(paths))
    assert (pool.name, pool.version, pool.uberblock.byteorder) == (name, version, order)
    blocks = 0
    compressions = set()
    async for v in walk_pool(pool):
        blocks += 1
        compressions.add(v.bp.compress)
    assert blocks > 30
    stats = pool.statistics()
    assert stats.checksum_errors == stats.unverified == 0
    if archive.startswith("testpool_zstd"):
        assert 16 in compressions  # zstd blocks read and decompressed
    if archive.startswith("zol-0.7"):  # the pool and its slog
        assert [(v.type, v.is_log) for v in pool.vdevs] == [("file", False), ("file", True)]
        assert describe_pool(pool)[-2].endswith("(log)  guid 17303288393200675481")
        # Only the slog's own label says it is a log: without it, it is a missing vdev.
        with pytest.raises(Refusal, match="top-level vdev 1 is missing"):
            await open_pool(_open([p for p in paths if "slog" not in p.name]))


async def test_real_world_refusals(tmp_path: Path) -> None:
    (v999,) = unpack_testdata("zfs-pool-v999.dat.bz2", tmp_path / "a")
    with pytest.raises(Refusal, match=r"unsupported ZFS pool version 999$"):
        await open_pool(_open([v999]))
    (raidz,) = unpack_testdata("zfs-pool-v2raidz2.dat.bz2", tmp_path / "b")
    with pytest.raises(Refusal, match=r"missing member\(s\) .*raidz1.dat, .*raidz3.dat"):
        await open_pool(_open([raidz]))


async def test_real_world_damaged_raidz(tmp_path: Path) -> None:
    paths = unpack_testdata("zol-0.6.2.tar.bz2", tmp_path)
    clean = await open_pool(_open(paths))
    want = [v.data async for v in walk_pool(clean)]
    _scribble(paths[2], 7)
    damaged = await open_pool(_open(paths))
    assert [v.data async for v in walk_pool(damaged)] == want
    assert damaged.statistics().reconstructions > 0


def _write_labels(path: Path, config: dict) -> None:
    """Write `config` as the nvlist of all four labels of `path`, with valid checksums."""
    nvlist = encode_nvlist(config)
    with open(path, "r+b") as f:
        for offset in label_offsets(os.path.getsize(path)):
            start = offset + VDEV_PHYS_OFFSET
            body = nvlist + bytes(VDEV_PHYS_SIZE - 40 - len(nvlist)) + struct.pack("<Q", ZEC_MAGIC)
            words = compute(ZIO_CHECKSUM_LABEL, body + struct.pack("<4Q", start, 0, 0, 0), "<")
            f.seek(start)
            f.write(body + struct.pack("<4Q", *words))


@pytest.mark.parametrize(
    ("top", "tree", "message"),
    [
        ({"txg": "soon"}, {}, "no valid ZFS label"),
        ({}, {"ashift": 60}, "ashift 60 out of range"),
        ({}, {"type": "draid"}, "unsupported vdev type 'draid'"),
        ({}, {"children": [7]}, "vdev tree entry is a int"),
        ({"version": 29}, {}, "unsupported ZFS pool version 29$"),
        ({"features_for_read": {"com.example:warp": True, "org.illumos:lz4_compress": True}},
         {}, "unsupported read feature.s.: com.example:warp$"),
    ],
)  # fmt: skip
async def test_crafted_labels_are_refused(
    top: dict, tree: dict, message: str, zfs_pool: PoolFactory, tmp_path: Path
) -> None:
    (path,) = _copy(_record(zfs_pool, "single"), tmp_path / "copy")
    vdev_tree = {"type": "file", "id": 0, "guid": 1, "ashift": 9} | tree
    config = {"name": "crafted", "pool_guid": 5, "guid": 1, "version": 5000, "txg": 9}
    _write_labels(path, config | top | {"vdev_tree": vdev_tree})
    with pytest.raises(Refusal, match=message):
        await open_pool(_open([path]))


async def test_uberblocks_from_any_member(zfs_pool: PoolFactory, tmp_path: Path) -> None:
    record = _record(zfs_pool, "stripe")
    paths = _copy(record, tmp_path / "copy")
    want = (await open_pool(_open(record.vdevs))).uberblock
    size = os.path.getsize(paths[0])
    with open(paths[0], "r+b") as f:  # member 0 keeps its configs but loses every ring
        for offset in label_offsets(size):
            f.seek(offset + 128 * 1024)
            f.write(bytes(128 * 1024))
    pool = await open_pool(_open(paths))
    assert pool.uberblock.ub_txg == want.ub_txg and pool.uberblock.offset == want.offset
    await _assert_files(pool, record.files)
