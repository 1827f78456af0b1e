"""The DMU: objset_phys_t, dnode lookup, reading objects through block trees, the block cache."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
import trio
from zfsfuse import PoolRecord

from uvfs import FSError, ImageFile, MemoryBudget
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet, parse_objset, read_block, read_object
from uvfs_fs.zfs.dsl import parse_dsl_dataset, parse_dsl_dir
from uvfs_fs.zfs.spa import Pool, open_pool
from uvfs_fs.zfs.zap import Zap


@pytest.mark.parametrize("bo", ["<", ">"])
def test_objset_phys_offsets(bo: str) -> None:
    meta = struct.pack(f"{bo}8BHHB3xQQ32x", 10, 14, 3, 3, 0, 7, 2, 0, 32, 0, 0, 9, 0)
    raw = meta.ljust(512, b"\0") + bytes(192) + struct.pack(f"{bo}2Q", 2, 1)
    phys = parse_objset(raw.ljust(2048, b"\0"), bo)
    assert (phys.os_type, phys.os_flags) == (2, 1)
    assert (phys.os_meta_dnode.dn_type, phys.os_meta_dnode.dn_nlevels) == (10, 3)
    assert phys.os_meta_dnode.datablksz == 16384
    with pytest.raises(FSError) as e:
        parse_objset(raw[:1000], bo)
    assert e.value.errno == errno.EIO


@pytest.fixture(scope="module")
def pool_record(zfs_pool) -> PoolRecord:  # type: ignore[no-untyped-def]
    def populate(root: Path) -> dict[str, bytes]:
        with open(root / "sparse", "wb") as f:
            f.seek(5 << 20)
            f.write(b"end")
        with open(root / "huge", "wb") as f:
            f.seek(5 << 30)  # past 4 GiB: offsets that need 64 bits
            f.write(b"far")
        data = os.urandom(1 << 20)
        (root / "big").write_bytes(data)
        return {"big": data}

    return zfs_pool("dmu", [("disk", 1)], {"compression": "off"}, populate)


async def _objects(record: PoolRecord, capacity: int) -> tuple[Pool, ObjectSet, dict[str, int]]:
    pool = await open_pool([ImageFile(str(v)) for v in record.vdevs])
    cache = BlockCache(pool, MemoryBudget(capacity))
    mos = await ObjectSet.open(cache, pool.uberblock.ub_rootbp)
    root_dir = (await (await Zap.open(mos, 1)).lookup(b"root_dataset")).int()
    dd = parse_dsl_dir((await mos.dnode(root_dir)).dn_bonus, mos.meta.byteorder)
    head = await mos.dnode(dd.dd_head_dataset_obj)
    objset = await ObjectSet.open(cache, parse_dsl_dataset(head.dn_bonus, head.byteorder).ds_bp)
    root = (await (await Zap.open(objset, 1)).lookup(b"ROOT")).int()
    names = {e.name.decode(): e.int() & ((1 << 48) - 1)
             for e in await (await Zap.open(objset, root)).entries()}  # fmt: skip
    return pool, objset, names


async def test_sparse_object_reads_holes_without_io(pool_record: PoolRecord) -> None:
    pool, objset, names = await _objects(pool_record, 1 << 20)
    dn = await objset.dnode(names["sparse"])
    assert dn.datablksz == 128 * 1024 and dn.dn_maxblkid == 40
    assert await read_block(objset.cache, dn, 3) is None
    assert await read_block(objset.cache, dn, 41) is None  # past dn_maxblkid
    before = pool.statistics().blocks_read
    assert await read_object(objset.cache, dn, 1 << 20, 1 << 20) == bytes(1 << 20)
    assert pool.statistics().blocks_read - before <= 1  # at most the indirect block
    tail = await read_object(objset.cache, dn, (5 << 20) - 1, 10)
    assert tail == b"\0end" + bytes(6)  # no end-of-object check at this layer


async def test_cache_stays_within_its_budget(pool_record: PoolRecord) -> None:
    _, objset, names = await _objects(pool_record, 512 * 1024)
    dn = await objset.dnode(names["big"])
    assert await objset.read(dn, 0, 1 << 20) == pool_record.files["big"]
    memory = objset.cache.memory.statistics()
    assert memory.charge <= 512 * 1024 and memory.caches["zfs data"] > 0
    assert objset.cache.statistics().blocks <= 3  # 128 KiB records in a 512 KiB budget
    await objset.read(dn, (1 << 20) - 10, 10)
    stats = objset.cache.statistics()
    await objset.read(dn, (1 << 20) - 10, 10)  # now surely cached
    after = objset.cache.statistics()
    assert (after.hits, after.misses) == (stats.hits + 2, stats.misses)  # indirect and data


async def test_dnode_lookup_errors(pool_record: PoolRecord) -> None:
    _, objset, _ = await _objects(pool_record, 1 << 20)
    for obj in (0, 1 << 48, 100_000, 1000):
        with pytest.raises(FSError) as e:
            await objset.dnode(obj)
        assert e.value.errno == errno.ENOENT


async def test_huge_sparse_object(pool_record: PoolRecord) -> None:
    _, objset, names = await _objects(pool_record, 1 << 20)
    dn = await objset.dnode(names["huge"])
    assert dn.dn_maxblkid == (5 << 30) // dn.datablksz
    assert dn.dn_nlevels == 4  # 40961 blocks: three levels of 128-pointer blocks above
    assert await objset.read(dn, (5 << 30) - 2, 6) == b"\0\0far\0"
    assert await objset.read(dn, 3 << 30, 4096) == bytes(4096)


async def test_read_ahead_fills_the_cache_for_the_next_read(pool_record: PoolRecord) -> None:
    """A read with `ahead` starts reading the following blocks without waiting for them;
    once they arrive the next read is all hits, and gives the file's bytes."""
    pool, objset, names = await _objects(pool_record, 4 << 20)
    dn = await objset.dnode(names["big"])
    want = pool_record.files["big"]
    assert await objset.read(dn, 0, 256 << 10, ahead=512 << 10) == want[: 256 << 10]
    while objset.cache._pending:  # the read-ahead threads report back to the trio thread
        await trio.sleep(0.01)
    before = objset.cache.statistics()
    assert await objset.read(dn, 256 << 10, 512 << 10) == want[256 << 10 : 768 << 10]
    after = objset.cache.statistics()
    assert after.misses == before.misses and after.hits >= before.hits + 4
    assert pool.statistics().blocks_read >= 6


async def test_a_reader_waits_for_the_read_ahead_of_its_block(pool_record: PoolRecord) -> None:
    """A block being read ahead is not read a second time: its reader waits for it."""
    _, objset, names = await _objects(pool_record, 4 << 20)
    dn = await objset.dnode(names["big"])
    await objset.read(dn, 0, 128 << 10, ahead=896 << 10)
    misses = objset.cache.statistics().misses  # read-ahead blocks count when they start
    assert await objset.read(dn, 128 << 10, 896 << 10) == pool_record.files["big"][128 << 10 :]
    assert objset.cache.statistics().misses == misses
    assert not objset.cache._pending
