"""The vdev tree from label nvlists: types, redundancy, missing members, bad trees."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from uvfs._image import ImageFile
from uvfs_fs.zfs.label import VDEV_LABEL_START_SIZE
from uvfs_fs.zfs.raidz import generate_parity, raidz_map
from uvfs_fs.zfs.vdev import (
    MAX_RECONSTRUCTIONS,
    HoleVdev,
    LeafVdev,
    MirrorVdev,
    RaidzVdev,
    VdevStats,
    VdevTreeError,
    build_vdev,
)


def _leaf(guid: int) -> dict:
    return {"type": "file", "guid": guid, "id": guid, "path": f"/dev/f{guid}"}


def test_mirror_and_raidz_redundancy() -> None:
    stats = VdevStats()
    present = {1: object(), 2: object()}
    mirror = build_vdev({"type": "mirror", "guid": 10, "ashift": 12,
                         "children": [_leaf(1), _leaf(3)]}, present, stats)  # fmt: skip
    assert isinstance(mirror, MirrorVdev) and mirror.readable()
    assert [c.ashift for c in mirror.children] == [12, 12]  # inherited
    assert [v.path for v in mirror.missing()] == ["/dev/f3"]
    tree = {"type": "raidz", "guid": 20, "nparity": 2,
            "children": [_leaf(g) for g in (1, 2, 3, 4)]}  # fmt: skip
    raidz = build_vdev(tree, present, stats)
    assert isinstance(raidz, RaidzVdev) and raidz.nparity == 2 and raidz.readable()
    raidz = build_vdev(tree, {1: object()}, stats)
    assert not raidz.readable() and len(raidz.missing()) == 3
    leaf = build_vdev(_leaf(5), {}, stats)
    assert isinstance(leaf, LeafVdev) and not leaf.readable()
    assert isinstance(build_vdev({"type": "hole"}, {}, stats), HoleVdev)
    spare = build_vdev({"type": "spare", "children": [_leaf(1)]}, present, stats)
    assert isinstance(spare, MirrorVdev)


@pytest.mark.parametrize(
    "tree",
    [
        {"type": "draid"},
        {"type": "mirror", "children": []},
        {"type": "raidz", "nparity": 4, "children": [_leaf(i) for i in range(6)]},
        {"type": "raidz", "nparity": 2, "children": [_leaf(1), _leaf(2)]},
        {"type": "mirror", "children": [_leaf(i) for i in range(300)]},
        {"type": "mirror", "children": "not a list"},
        {"type": "file", "ashift": 60},
        {"type": "file", "guid": "not a number"},
        {"type": "mirror", "children": [7]},
    ],
)
def test_bad_trees(tree: dict) -> None:
    with pytest.raises(VdevTreeError):
        build_vdev(tree, {}, VdevStats())


async def test_raidz_reads_within_redundancy_only(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(8 * 512)
    rm = raidz_map(0, len(data), 9, 5, 2)
    cols, pos = [], 0
    for c in rm.cols[2:]:
        cols.append(data[pos : pos + c.size])
        pos += c.size
    parity = generate_parity(cols, 2, rm.cols[0].size)
    images = {}
    for i, c in enumerate(rm.cols):
        path = tmp_path / f"d{c.devidx}"
        with open(path, "wb") as f:
            f.truncate(VDEV_LABEL_START_SIZE + 65536)
            f.seek(VDEV_LABEL_START_SIZE + c.offset)
            f.write((parity + cols)[i])
        images[c.devidx + 1] = ImageFile(str(path))
    tree = {"type": "raidz", "nparity": 2, "ashift": 9,
            "children": [_leaf(g) for g in range(1, 6)]}  # fmt: skip

    async def check(block: bytes) -> bool:
        return block == data

    stats = VdevStats()
    full = build_vdev(tree, images, stats)
    assert await full.read(0, len(data), check) == data and stats.reconstructions == 0
    two_gone = {g: im for g, im in images.items() if g not in (2, 4)}
    assert await build_vdev(tree, two_gone, stats).read(0, len(data), check) == data
    assert stats.reconstructions == 1
    three_gone = {g: im for g, im in two_gone.items() if g != 5}
    assert await build_vdev(tree, three_gone, stats).read(0, len(data), check) is None


async def test_raidz_reconstruction_tries_are_bounded(tmp_path: Path) -> None:
    images = {}
    for g in range(1, 41):  # raidz3 over 40: C(40, 3) sets would be 9880 tries
        path = tmp_path / f"d{g}"
        with open(path, "wb") as f:
            f.truncate(VDEV_LABEL_START_SIZE + 65536)
        images[g] = ImageFile(str(path))
    tree = {"type": "raidz", "nparity": 3, "ashift": 9,
            "children": [_leaf(g) for g in range(1, 41)]}  # fmt: skip

    async def never(block: bytes) -> bool:
        return False

    stats = VdevStats()
    assert await build_vdev(tree, images, stats).read(0, 37 * 512, never) is None
    assert stats.checksum_errors == 1 + MAX_RECONSTRUCTIONS
