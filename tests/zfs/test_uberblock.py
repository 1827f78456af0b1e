"""Uberblock rings: slot size by ashift, checksums, both byte orders, choice of the newest."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import PoolFactory, unpack_testdata
from test_spa import POOLS, populate
from zfsfuse import ZfsFuse

from uvfs_fs.zfs import checksum as ck
from uvfs_fs.zfs.label import VDEV_UBERBLOCK_OFFSET
from uvfs_fs.zfs.uberblock import (
    UBERBLOCK_MAGIC,
    Uberblock,
    parse_ring,
    parse_uberblock,
    uberblock_shift,
)


def test_slot_sizes() -> None:
    assert [uberblock_shift(a) for a in (9, 10, 12, 13, 16)] == [10, 10, 12, 13, 13]


def _slot(order: str, txg: int, offset: int, size: int = 1024) -> bytes:
    head = struct.pack(order + "5Q", UBERBLOCK_MAGIC, 23, txg, 77, 1000 + txg) + bytes(128)
    body = head + bytes(size - 40 - len(head))
    tail = struct.pack(order + "Q", ck.ZEC_MAGIC)
    seed = struct.pack(order + "4Q", offset, 0, 0, 0)
    words = ck.compute(ck.ZIO_CHECKSUM_LABEL, body + tail + seed, order)
    return body + tail + struct.pack(order + "4Q", *words)


@pytest.mark.parametrize("order", ["<", ">"])
def test_synthetic_ring(order: str) -> None:
    base = 128 * 1024
    ring = b"".join(_slot(order, 5 + i, base + i * 1024) for i in range(128))
    found = parse_ring(ring, base, 9)
    assert [u.ub_txg for u in found] == list(range(5, 133))
    assert {u.byteorder for u in found} == {order}
    assert max(found, key=Uberblock.sort_key).ub_txg == 132
    assert found[3].ub_guid_sum == 77 and found[3].ub_timestamp == 1008
    # read with the wrong slot size, no checksum tail lines up
    assert parse_ring(ring, base, 12) == []
    # a slot moved to another offset fails its checksum
    assert parse_uberblock(ring[:1024], base + 1024) is None


async def test_zfs_fuse_ring_matches_zdb(zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> None:
    for key in ("single", "raidz2"):  # ashift 9 and 12
        layout, props, ashift = POOLS[key]
        record = zfs_pool(key, layout, props, populate, ashift=ashift)
        label = record.vdevs[0].read_bytes()[: 256 * 1024]
        found = parse_ring(label[VDEV_UBERBLOCK_OFFSET:], VDEV_UBERBLOCK_OFFSET, ashift)
        best = max(found, key=Uberblock.sort_key)
        assert "pool_guid" in record.config
        assert len({u.offset for u in found}) == len(found) <= 128 >> (uberblock_shift(ashift) - 10)
        assert all(u.ub_version == 23 and u.byteorder == "<" for u in found)
        assert best.ub_rootbp.type == 11  # DMU_OT_OBJSET: the MOS


async def test_big_endian_ring(tmp_path: Path) -> None:
    (path,) = unpack_testdata("zfs-pool-v15.dat.bz2", tmp_path)
    label = path.read_bytes()[: 256 * 1024]
    found = parse_ring(label[VDEV_UBERBLOCK_OFFSET:], VDEV_UBERBLOCK_OFFSET, 9)
    assert found and {u.byteorder for u in found} == {">"}
    best = max(found, key=Uberblock.sort_key)
    assert best.ub_txg == 21 and best.ub_version == 15
