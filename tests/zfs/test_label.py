"""Vdev labels: where the four copies lie, their checksums, and a real pool's labels."""

from __future__ import annotations

from conftest import PoolFactory
from test_spa import POOLS, populate

from uvfs_fs.zfs.label import (
    VDEV_LABEL_SIZE,
    VDEV_PHYS_OFFSET,
    label_offsets,
    parse_label,
    parse_vdev_phys,
)


def test_label_offsets() -> None:
    k = 1024
    assert label_offsets(64 << 20) == [0, 256 * k, (64 << 20) - 512 * k, (64 << 20) - 256 * k]
    # the size is rounded down to whole labels first
    assert label_offsets((64 << 20) + 1000)[2:] == [(64 << 20) - 512 * k, (64 << 20) - 256 * k]


def test_four_labels_agree_and_resist_damage(zfs_pool: PoolFactory) -> None:
    layout, props, ashift = POOLS["mirror"]
    record = zfs_pool("mirror", layout, props, populate, ashift=ashift)
    image = record.vdevs[0].read_bytes()
    configs = [parse_label(image[o : o + VDEV_LABEL_SIZE], o) for o in label_offsets(len(image))]
    assert all(c == configs[0] for c in configs) and configs[0] is not None
    assert configs[0]["name"] == record.name
    assert configs[0]["vdev_tree"]["type"] == "mirror"
    # The checksum is seeded with the label's own offset: L1's bytes do not pass as L0's.
    l1 = image[VDEV_LABEL_SIZE : 2 * VDEV_LABEL_SIZE]
    assert parse_label(l1, 0) is None
    # One flipped byte in the nvlist fails the checksum.
    phys = bytearray(image[VDEV_PHYS_OFFSET : VDEV_PHYS_OFFSET + 112 * 1024])
    phys[100] ^= 1
    assert parse_vdev_phys(bytes(phys), VDEV_PHYS_OFFSET) is None
    assert parse_vdev_phys(b"short", VDEV_PHYS_OFFSET) is None
