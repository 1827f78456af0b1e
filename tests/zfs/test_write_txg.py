"""Committing a txg (txg.py, writer.py): the uberblock ring update that zfs-fuse imports."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PoolFactory
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import ImageFile
from uvfs_fs.zfs.blkptr import parse_blkptr
from uvfs_fs.zfs.label import VDEV_UBERBLOCK_OFFSET, label_offsets
from uvfs_fs.zfs.spa import open_pool
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


def _populate(root: Path) -> dict[str, bytes]:
    files = {f"f{i}": bytes([i]) * (5000 * i + 1) for i in range(8)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def built(request: pytest.FixtureRequest, zfs_pool: PoolFactory) -> PoolRecord:
    return zfs_pool(f"txg-{request.param}", LAYOUTS[request.param], {}, _populate)


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
