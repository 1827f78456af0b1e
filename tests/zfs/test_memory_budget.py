"""A ZFS mount keeps all of its caches, the driver's blocks and dnodes included, within
``-o cache_size``: read a file six times the budget and walk a tree, then `uvfs stats`
shows every cache's charge and high-water mark within it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_uvfs

pytestmark = pytest.mark.slow

BUDGET = 4 << 20
FILE = 24 << 20
DIRS, FILES = 40, 25  # 1,000 files: their dnodes and directory ZAPs outweigh the budget


def populate(root: Path) -> dict[str, bytes]:
    data = os.urandom(FILE)
    (root / "big").write_bytes(data)
    for d in range(DIRS):
        (root / "tree" / f"d{d}").mkdir(parents=True)
        for f in range(FILES):
            (root / "tree" / f"d{d}" / f"f{f}").write_bytes(b"x" * (d + f))
    return {"big": data}


def test_the_driver_caches_stay_within_cache_size(zfs_pool, mount, tmp_path, monkeypatch) -> None:
    pool = zfs_pool("memory", [("disk", 1)], {"compression": "lzjb"}, populate, size=256 << 20)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no other mount shares it
    mnt = mount(*pool.vdevs, options=f"ro,cache_size={BUDGET}")
    assert (mnt / "big").read_bytes() == pool.files["big"]
    sizes = [(mnt / "tree" / f"d{d}" / f"f{f}").stat().st_size for d in range(DIRS)
             for f in range(FILES)]  # fmt: skip
    assert sizes == [d + f for d in range(DIRS) for f in range(FILES)]
    stats = json.loads(run_uvfs("stats", "--json", str(mnt)).stdout)
    memory = stats["memory"]
    assert memory["budget"] == BUDGET == stats["cache"]["budget"]
    assert set(memory["caches"]) == {
        "file data", "zfs metadata", "zfs data", "zfs dnodes", "zfs dnode blocks", "zfs znodes",
        "zfs zaps",
    }  # fmt: skip
    assert sum(memory["caches"].values()) == memory["charge"] <= BUDGET
    assert memory["caches"]["zfs metadata"] > 0 and memory["caches"]["zfs dnodes"] > 0
    # Each driver cache was filled up to what the budget left it, never beyond.
    assert set(memory["peaks"]) == set(memory["caches"]) - {"file data"}
    assert 0 < max(memory["peaks"].values()) <= BUDGET
    assert stats["cache"]["bytes_cached"] <= BUDGET and stats["cache"]["evictions"] > 0
