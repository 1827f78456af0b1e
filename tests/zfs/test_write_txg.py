"""Committing a txg (txg.py, spa_sync.py, objset_sync.py, writer.py): the uberblock ring
update, and the MOS copied on write to convergence, as zfs-fuse imports and checks them."""

from __future__ import annotations

import errno
import re
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PoolFactory
from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs import FSError, ImageFile
from uvfs_fs.zfs.blkptr import parse_blkptr
from uvfs_fs.zfs.compress import ZIO_COMPRESS_GZIP_9, ZIO_COMPRESS_ZLE
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.label import VDEV_UBERBLOCK_OFFSET, label_offsets
from uvfs_fs.zfs.spa import Pool, open_pool
from uvfs_fs.zfs.spa_sync import _mos_dirs
from uvfs_fs.zfs.uberblock import (
    MMP_MAGIC,
    VDEV_UBERBLOCK_RING,
    Uberblock,
    encode_slot,
    parse_ring,
    parse_uberblock,
    ring_slot,
)
from uvfs_fs.zfs.writer import PoolWriter

LAYOUTS = {"disk": [("disk", 1)], "mirror": [("mirror", 2)]}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def built(request: pytest.FixtureRequest, zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> PoolRecord:
    """A pool with files in its root dataset and a child "a" (compression=lzjb)."""
    name = f"ptxg{request.param}"

    def populate(root: Path) -> dict[str, bytes]:
        zfs_fuse.run("zfs", "create", "-o", "compression=lzjb", f"{name}/a")
        files = {f"f{i}": bytes([i]) * (5000 * i + 1) for i in range(8)}
        for path, data in files.items():
            (root / path).write_bytes(data)
        (root / "a" / "inner").write_bytes(b"inner " * 1000)
        return files | {"a/inner": b"inner " * 1000}

    record = zfs_pool(f"txg-{request.param}", LAYOUTS[request.param], {}, populate)
    assert record.name == name
    return record


def _copy(record: PoolRecord, dest: Path) -> list[Path]:
    """A private copy of the pool's vdevs (the built pool is shared)."""
    dest.mkdir()
    out = []
    for vdev in record.vdevs:
        subprocess.run(["cp", "--sparse=always", str(vdev), str(dest)], check=True)
        out.append(dest / vdev.name)
    return out


def zdb_txg(daemon: ZfsFuse, directory: Path, pool: str) -> int:
    """The txg of the uberblock libzpool chooses (zdb -u, without importing)."""
    out = daemon.run("zdb", "-e", "-p", str(directory), "-u", pool)
    return int(re.search(r"\btxg = (\d+)", out)[1])  # type: ignore[index]


def scrub_clean(
    daemon: ZfsFuse, directory: Path, pool: str, look: Callable[[], None] = lambda: None
) -> str:
    """Import `pool` from `directory`, call `look` (it may read the mounted datasets),
    scrub to the end, export; zpool status after the scrub."""
    daemon.run("zpool", "import", "-d", str(directory), pool)
    try:
        look()
        daemon.run("zpool", "scrub", pool)
        for _ in range(600):
            status = daemon.run("zpool", "status", "-v", pool)
            if "in progress" not in status:
                break
            time.sleep(0.1)
        return status
    finally:
        daemon.export(pool)


async def test_sync_writes_the_next_uberblock_in_every_label(
    built: PoolRecord, tmp_path: Path
) -> None:
    """sync() writes txg N + 1 into slot (N + 1) % 128 of all four labels of every leaf and
    changes no other byte; the reader then finds it active, with the MOS root unchanged."""
    vdevs = _copy(built, tmp_path / "pool")
    before = [v.read_bytes() for v in vdevs]
    writer = await PoolWriter.open([str(v) for v in vdevs])
    old = writer.pool.uberblock
    try:
        assert await writer.sync() == old.ub_txg + 1
    finally:
        writer.close()
    slot = ring_slot(old.ub_txg + 1, 10) << 10  # ashift 9: 1 KiB slots
    for path, was in zip(vdevs, before, strict=True):
        now = path.read_bytes()
        changed = [i for i in range(0, len(now), 1024) if now[i : i + 1024] != was[i : i + 1024]]
        labels = label_offsets(len(now))
        assert changed == [label + VDEV_UBERBLOCK_OFFSET + slot for label in labels]
        for label in labels:
            ring = now[
                label + VDEV_UBERBLOCK_OFFSET : label + VDEV_UBERBLOCK_OFFSET + VDEV_UBERBLOCK_RING
            ]
            newest = max(
                parse_ring(ring, label + VDEV_UBERBLOCK_OFFSET, 9), key=lambda u: u.sort_key()
            )
            assert (newest.ub_txg, newest.ub_rootbp, newest.ub_guid_sum, newest.ub_version) == (
                old.ub_txg + 1,
                old.ub_rootbp,
                old.ub_guid_sum,
                old.ub_version,
            )
    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    assert pool.uberblock.ub_txg == old.ub_txg + 1


async def test_zfs_fuse_imports_the_new_txg_and_scrubs_clean(
    built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """After two syncs, libzpool chooses txg N + 2; zfs-fuse imports the pool, its files are
    intact and a scrub finds no error."""
    vdevs = _copy(built, tmp_path / "pool")
    writer = await PoolWriter.open([str(v) for v in vdevs])
    old = writer.pool.uberblock.ub_txg
    try:
        await writer.sync()
        await writer.sync()
    finally:
        writer.close()
    assert zdb_txg(zfs_fuse, tmp_path / "pool", built.name) == old + 2
    seen: dict[str, bytes] = {}

    def look() -> None:
        for name in built.files:
            seen[name] = zfs_fuse.visible(built.directory / "mnt" / name).read_bytes()

    status = scrub_clean(zfs_fuse, tmp_path / "pool", built.name, look)
    assert seen == built.files
    assert "scrub completed" in status and "with 0 errors" in status, status
    assert "errors: No known data errors" in status, status


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("shift", [10, 12, 13])
def test_slot_round_trips(order: str, shift: int) -> None:
    """encode_slot is parse_uberblock's inverse in both byte orders and slot sizes; the
    slot's checksum is seeded with its offset, so the same bytes elsewhere are invalid."""
    rootbp = parse_blkptr(bytes(range(128)), order)._replace(byteorder=order)
    ub = Uberblock(5000, 77, 0xFEDCBA9876543210, 1_700_000_000, rootbp, 5000, MMP_MAGIC, 0,
                   0, 0, order)  # fmt: skip
    offset = 128 * 1024 + (ring_slot(77, shift) << shift)
    slot = encode_slot(ub, offset, shift)
    assert len(slot) == 1 << shift and ring_slot(77, shift) == 77 % (128 >> (shift - 10))
    assert parse_uberblock(slot, offset) == replace(ub, offset=offset)
    assert parse_uberblock(slot, offset + (1 << shift)) is None


# ---- the MOS copied on write ---------------------------------------------------------------


async def _mos_usage(pool: Pool) -> tuple[int, int, int]:
    """Allocated, physical and (metadata: physical) bytes of every MOS block, by a walk
    that verifies each block's checksum."""
    used = psize = 0
    async for v in walk_pool(pool):
        if v.objset == 0 and not v.bp.is_hole and not v.bp.embedded:
            used += sum(d.asize for d in v.bp.dvas)
            psize += v.bp.psize
    return used, psize, psize


async def _dir_usage(pool: Pool) -> list[tuple[int, ...]]:
    """dd_used_bytes, dd_compressed_bytes, dd_uncompressed_bytes, dd_used_breakdown[5]
    of the "$MOS" directory and of the root directory."""
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    out = []
    for obj in await _mos_dirs(mos):
        dn = await mos.dnode(obj)
        out.append(
            struct.unpack_from("<3Q", dn.dn_bonus, 40) + struct.unpack_from("<5Q", dn.dn_bonus, 104)
        )
    return out


async def test_property_changes_copy_the_mos_on_write(
    built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """Two txgs: compression=gzip-9 (a value changed) and atime=off (an entry added) on
    "a", then compression=zle. Each rewrites the MOS at new places: the trees of the
    earlier txgs still read whole, the "$MOS" directory and the root above it are charged
    exactly the MOS's change, zdb -bcc finds no leak, zfs-fuse shows the new values, the
    files are intact and a scrub is clean."""
    vdevs = _copy(built, tmp_path / "pool")
    writer = await PoolWriter.open([str(v) for v in vdevs])
    first = writer.pool.uberblock
    before_dirs = await _dir_usage(writer.pool)
    before_mos = await _mos_usage(writer.pool)
    try:
        await writer.set_dsl_prop(f"{built.name}/a", "compression", ZIO_COMPRESS_GZIP_9)
        await writer.set_dsl_prop(f"{built.name}/a", "atime", 0)
        assert await writer.sync() == first.ub_txg + 1
        second = writer.pool.uberblock
        second_mos = await _mos_usage(writer.pool)
        await writer.set_dsl_prop(f"{built.name}/a", "compression", ZIO_COMPRESS_ZLE)
        assert await writer.sync() == first.ub_txg + 2
    finally:
        writer.close()
    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    new = pool.uberblock
    assert new.ub_txg == first.ub_txg + 2 and new.ub_rootbp.birth_txg == new.ub_txg
    old_places = {d.offset for ub in (first, second) for d in ub.ub_rootbp.dvas}
    assert old_places.isdisjoint(d.offset for d in new.ub_rootbp.dvas)
    mos = await _mos_usage(pool)
    dirs = await _dir_usage(pool)
    assert dirs[0][:4] == (*mos, mos[0])  # $MOS: used, compressed, uncompressed, HEAD
    delta = [m - b for m, b in zip(mos, before_mos, strict=True)]
    root_delta = [n - b for n, b in zip(dirs[1], before_dirs[1], strict=True)]
    assert root_delta == [*delta, 0, 0, delta[0], 0, 0]  # CHILD takes the MOS's change
    for ub, usage in ((first, before_mos), (second, second_mos)):
        pool.uberblock = ub  # nothing the two txgs before reach was overwritten
        assert await _mos_usage(pool) == usage
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", built.name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
    assert zdb_txg(zfs_fuse, tmp_path / "pool", built.name) == first.ub_txg + 2
    seen: dict[str, bytes] = {}
    props: list[str] = []

    def look() -> None:
        for name in built.files:
            seen[name] = zfs_fuse.visible(built.directory / "mnt" / name).read_bytes()
        props.append(zfs_fuse.run("zfs", "get", "-H", "-o", "value,source", "compression,atime",
                                  f"{built.name}/a"))  # fmt: skip

    status = scrub_clean(zfs_fuse, tmp_path / "pool", built.name, look)
    assert seen == built.files
    assert props == ["zle\tlocal\noff\tlocal\n"]
    assert "with 0 errors" in status and "errors: No known data errors" in status, status


async def test_a_failed_sync_writes_nothing(
    zfs_pool: PoolFactory, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """A txg that cannot be written (blocks for a raidz vdev, not written yet) fails before
    any byte reaches a device: the images are unchanged and the old txg stays active."""

    def populate(root: Path) -> None:
        zfs_fuse.run("zfs", "create", "ptxgraidz/a")

    record = zfs_pool("txg-raidz", [("raidz1", 3)], {}, populate)
    vdevs = _copy(record, tmp_path / "pool")
    before = [v.read_bytes() for v in vdevs]
    writer = await PoolWriter.open([str(v) for v in vdevs])
    try:
        await writer.set_dsl_prop(f"{record.name}/a", "atime", 0)
        with pytest.raises(FSError) as e:
            await writer.sync()
        assert e.value.errno == errno.EOPNOTSUPP
        assert "raidz" in str(e.value)
    finally:
        writer.close()
    assert [v.read_bytes() for v in vdevs] == before
