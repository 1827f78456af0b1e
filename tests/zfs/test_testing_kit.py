"""The conformance kit's read checks on uvfs's read-only mount of a zfs-fuse pool holding
the reference tree: every check passes but those listed in ZFS_RO_FAILS, each with why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import force_unmount, run_uvfs
from uvfs.testing import Check, make_tree, params

pytest_plugins = ["uvfs.testing.plugin"]
pytestmark = pytest.mark.slow

ZFS_RO_FAILS = {
    "tree_xattrs": "the pool has no xattrs: zfs-fuse, which writes it, refuses them (EOPNOTSUPP)",
}


@pytest.fixture(scope="module")
def uvfs_mountpoint(zfs_pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """uvfs's read-only mount of a one-disk pool whose root dataset holds the tree in tree/."""
    pool = zfs_pool(
        "kit-tree",
        [("disk", 1)],
        populate=lambda root: make_tree(root / "tree", xattrs=False),
        size=256 << 20,
    )
    mountpoint = tmp_path_factory.mktemp("zfs-kit") / "mnt"
    mountpoint.mkdir()
    try:
        # allow_other: as root, a check acts as another user (uid 65534) too.
        run_uvfs("mount", "-o", "ro,allow_other", *map(str, pool.vdevs), str(mountpoint))
        yield mountpoint / "tree"
    finally:
        force_unmount(mountpoint)


@pytest.mark.parametrize("check", params(readonly=True, xfail=ZFS_RO_FAILS))
def test_check(check: Check, uvfs_run) -> None:
    uvfs_run(check)
