"""Committing a txg (txg.py, spa_sync.py, objset_sync.py, writer.py): the uberblock ring
update, and the MOS copied on write to convergence, as zfs-fuse imports and checks them."""

from __future__ import annotations

import errno
import random
import re
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PoolFactory
from write_pool import copy_pool, destroy, scrub_clean, user_usage
from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs import FSError, ImageFile
from uvfs_fs.zfs.blkptr import parse_blkptr
from uvfs_fs.zfs.compress import ZIO_COMPRESS_GZIP_9, ZIO_COMPRESS_ZLE
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import list_datasets
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
TEXT = b"".join(b"line %6d of the file\n" % i for i in range(16000))  # 3 records, lzjb
PLAIN = bytes(range(256)) * 1000  # 2 records, uncompressed, no snapshot


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
        (root / "a" / "file").write_bytes(TEXT)
        (root / "plain").write_bytes(PLAIN)
        zfs_fuse.run("zfs", "snapshot", f"{name}/a@s1")
        return files | {"a/inner": b"inner " * 1000, "a/file": TEXT, "plain": PLAIN}

    record = zfs_pool(f"txg-{request.param}", LAYOUTS[request.param], {}, populate)
    assert record.name == name
    return record


def zdb_txg(daemon: ZfsFuse, directory: Path, pool: str) -> int:
    """The txg of the uberblock libzpool chooses (zdb -u, without importing)."""
    out = daemon.run("zdb", "-e", "-p", str(directory), "-u", pool)
    return int(re.search(r"\btxg = (\d+)", out)[1])  # type: ignore[index]


async def test_sync_writes_the_next_uberblock_in_every_label(
    built: PoolRecord, tmp_path: Path
) -> None:
    """sync() writes txg N + 1 into slot (N + 1) % 128 of all four labels of every leaf and
    changes no other byte; the reader then finds it active, with the MOS root unchanged."""
    vdevs = copy_pool(built, tmp_path / "pool")
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
    vdevs = copy_pool(built, tmp_path / "pool")
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
    vdevs = copy_pool(built, tmp_path / "pool")
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
    vdevs = copy_pool(record, tmp_path / "pool")
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


# ---- a file's data copied on write ---------------------------------------------------------


async def _dataset_phys(pool: Pool) -> dict[str, tuple[int, ...]]:
    """Per dataset: ds_referenced_bytes, ds_unique_bytes, ds_deadlist_obj, and its
    directory's dd_used_bytes and dd_used_breakdown[HEAD, SNAP, CHILD]."""
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    out = {}
    for ds in await list_datasets(mos, pool.name):
        dn = await mos.dnode(ds.ds_obj)
        ref, unique = (
            struct.unpack_from("<Q", dn.dn_bonus, 72)[0],
            struct.unpack_from("<Q", dn.dn_bonus, 96)[0],
        )
        dd = (await mos.dnode(ds.dir_obj)).dn_bonus
        out[ds.name] = (ref, unique, ds.phys.ds_deadlist_obj, struct.unpack_from("<Q", dd, 40)[0],
                        *struct.unpack_from("<3Q", dd, 104))  # fmt: skip
    return out


async def _objset_usage(pool: Pool) -> dict[int, int]:
    """Allocated bytes of every block of each dataset's object set, by dataset object
    (but for the user and group usage objects, which walk_pool does not reach)."""
    out: dict[int, int] = {}
    async for v in walk_pool(pool):
        if v.objset and not v.bp.is_hole and not v.bp.embedded:
            out[v.objset] = out.get(v.objset, 0) + sum(d.asize for d in v.bp.dvas)
    return out


async def test_file_overwrite_copies_the_dataset_on_write(
    built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """Overwriting bytes across a record boundary of a/file (lzjb, snapshot a@s1) and of
    plain (no snapshot) writes new data, indirect, dnode and objset blocks: zfs-fuse shows
    the new bytes and mtimes, a clone of a@s1 the old ones; the old blocks of a went on its
    deadlist (the snapshot's unique bytes, the directory's snapshot usage, zfs-fuse's
    usedbysnapshots), those of plain were freed (zdb -bcc: no leaks); each dataset still
    references exactly the blocks of its tree, and its user and group usage follows its
    files' dn_used; scrub is clean. zfs-fuse then destroys a@s1 through that deadlist:
    a uses what it references and still nothing leaks."""
    name = built.name
    vdevs = copy_pool(built, tmp_path / "pool")
    writer = await PoolWriter.open([str(v) for v in vdevs])
    first = writer.pool.uberblock
    before_walk = await _objset_usage(writer.pool)
    before_phys = await _dataset_phys(writer.pool)
    before_users = await user_usage(writer.pool)
    # Random bytes do not compress: a/file's dn_used grows, and its owner's usage with it.
    new_text, new_plain = random.Random(3).randbytes(30_000), b"Z" * 150_000
    t0 = time.time_ns()
    try:
        await writer.write_file_range(f"{name}/a", "file", 120_000, new_text)
        await writer.write_file_range(name, "plain", 10, new_plain)
        assert await writer.sync() == first.ub_txg + 1
    finally:
        writer.close()
    t1 = time.time_ns()
    text = TEXT[:120_000] + new_text + TEXT[120_000 + len(new_text) :]
    plain = PLAIN[:10] + new_plain + PLAIN[10 + len(new_plain) :]
    pool = await open_pool([ImageFile(str(v)) for v in vdevs])
    phys = await _dataset_phys(pool)
    walk = await _objset_usage(pool)
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    by_name = {d.name: d for d in await list_datasets(mos, name)}
    for ds in (name, f"{name}/a"):  # referenced moves with the blocks of its tree, exactly
        obj = by_name[ds].ds_obj
        assert phys[ds][0] - before_phys[ds][0] == walk[obj] - before_walk[obj]
    users = await user_usage(pool)
    a_obj = by_name[f"{name}/a"].ds_obj
    assert users[a_obj] > before_users[a_obj]
    head, snap = phys[f"{name}/a"], phys[f"{name}/a@s1"]
    deadlist = (await mos.dnode(head[2])).dn_bonus
    dead_bytes = struct.unpack_from("<Q", deadlist, 8)[0]
    assert dead_bytes > 0 and snap[1] == dead_bytes  # the snapshot's unique bytes
    assert head[4:7] == (head[3] - dead_bytes, dead_bytes, 0)  # HEAD, SNAP, CHILD
    pool.uberblock = first  # nothing the last txg reaches was overwritten
    assert await _objset_usage(pool) == before_walk
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
    seen: dict[str, bytes] = {}
    stamps: list[int] = []
    used: list[str] = []

    def look() -> None:
        mnt = zfs_fuse.visible(built.directory / "mnt")
        for path in built.files:
            seen[path] = (mnt / path).read_bytes()
        stamps.extend((mnt / p).stat().st_mtime_ns for p in ("a/file", "plain"))
        for prop, ds in (("usedbysnapshots", f"{name}/a"), ("userused@0", f"{name}/a"),
                         ("groupused@0", f"{name}/a"), ("userused@0", name)):  # fmt: skip
            used.append(zfs_fuse.run("zfs", "get", "-Hp", "-o", "value", prop, ds))
        zfs_fuse.run("zfs", "clone", f"{name}/a@s1", f"{name}/c")
        seen["c/file"] = (mnt / "c" / "file").read_bytes()
        # Destroying the snapshot makes zfs-fuse free what only it held, through a's
        # deadlist: then a uses what it references, and nothing leaks.
        destroy(zfs_fuse, f"{name}/c")
        destroy(zfs_fuse, f"{name}/a@s1")
        used.append(zfs_fuse.run("zfs", "get", "-Hp", "-o", "value", "used,referenced",
                                 f"{name}/a"))  # fmt: skip

    status = scrub_clean(zfs_fuse, tmp_path / "pool", name, look)
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-b", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
    assert seen == built.files | {"a/file": text, "plain": plain, "c/file": TEXT}
    # zfs-fuse shows whole seconds
    assert all(t0 // 10**9 <= t // 10**9 <= t1 // 10**9 for t in stamps), (t0, stamps, t1)
    assert used[:4] == [f"{n}\n" for n in (dead_bytes, users[a_obj], users[a_obj],
                                            users[by_name[name].ds_obj])]  # fmt: skip
    after_destroy = used[4].split()
    assert after_destroy[0] == after_destroy[1], used[4]
    assert "with 0 errors" in status and "errors: No known data errors" in status, status
