"""A zfs-fuse pool mounted read-write through FUSE (writable.py): a POSIX workload, then
zfs-fuse imports the same tree; a pool the writer cannot keep mounts read-only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
from conftest import PoolFactory
from write_pool import ORIGINAL, copy_pool, grow_pool, scrub_clean, tree_view
from zfsfuse import PoolRecord, ZfsFuse

from tests.conftest import force_unmount, run_uvfs
from uvfs import _runtime

RNG = random.Random(44)
BIG = RNG.randbytes(300_000)  # several FUSE writes, three records
PATCH, TAIL = RNG.randbytes(5000), RNG.randbytes(777)
MTIME = (1_300_000_000, 0)
NEW = BIG[:100_000] + PATCH + BIG[105_000:] + TAIL


@pytest.fixture(scope="module")
def built(zfs_pool: PoolFactory, zfs_fuse: ZfsFuse) -> PoolRecord:
    return grow_pool(zfs_pool, zfs_fuse)


def test_posix_workload(built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path) -> None:
    """create, write, overwrite, append, truncate, mkdir, rename, unlink, rmdir, chmod
    and utime through a read-write mount of a zfs-fuse pool (root dataset and a child
    with a snapshot) read back through the mount as written; after unmount zfs-fuse shows
    the same tree (names, modes, sizes, links, contents) and mtime, its scrub is clean and
    zdb -bcc finds no leak."""
    name = built.name
    vdevs = copy_pool(built, tmp_path / "pool")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        run_uvfs("mount", *map(str, vdevs), str(mnt))
        ours = _workload(mnt)
        run_uvfs("umount", str(mnt))
    finally:
        force_unmount(mnt)

    theirs: dict[str, tuple[object, ...]] = {}
    mtimes: list[int] = []

    def look() -> None:
        root = zfs_fuse.visible(built.directory / "mnt")
        mtimes.append(int((root / "record").stat().st_mtime))
        theirs.update(tree_view(root))

    status = scrub_clean(zfs_fuse, tmp_path / "pool", name, look)
    assert theirs == ours
    assert theirs["w/new"][1:] == (len(NEW), 1, hashlib.sha256(NEW).hexdigest())
    assert theirs["c/fresh"][1] == 20 and "tiny" not in theirs
    assert mtimes == [MTIME[0]]
    assert "with 0 errors" in status and "errors: No known data errors" in status, status
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb


def _workload(mnt: Path) -> dict[str, tuple[object, ...]]:
    """The POSIX workload, checked through the mount; the mount's view after it."""
    (mnt / "w").mkdir(0o750)
    with open(mnt / "w" / "new", "wb") as f:
        f.write(BIG)
        f.flush()
        os.fsync(f.fileno())
    with open(mnt / "w" / "new", "r+b") as f:
        f.seek(100_000)
        f.write(PATCH)
    with open(mnt / "w" / "new", "ab") as f:
        f.write(TAIL)
    os.truncate(mnt / "three", 1000)
    (mnt / "small").rename(mnt / "w" / "small2")
    (mnt / "tiny").unlink()
    (mnt / "w" / "gone").mkdir()
    (mnt / "w" / "gone").rmdir()
    (mnt / "odd").chmod(0o600)
    os.utime(mnt / "record", ns=(MTIME[0] * 10**9, MTIME[0] * 10**9))
    (mnt / "c" / "fresh").write_bytes(b"in the child dataset")
    (mnt / "c" / "text").unlink()

    assert (mnt / "w" / "new").read_bytes() == NEW
    assert (mnt / "three").read_bytes() == ORIGINAL["three"][:1000]
    assert (mnt / "w" / "small2").read_bytes() == ORIGINAL["small"]
    assert not (mnt / "tiny").exists() and not (mnt / "c" / "text").exists()
    assert stat.S_IMODE((mnt / "w").stat().st_mode) == 0o750
    assert stat.S_IMODE((mnt / "odd").stat().st_mode) == 0o600
    return tree_view(mnt)


def test_unwritable_pool_mounts_read_only(
    built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """A pool left imported (state active, as after a crash) mounts read-only, with one
    line saying why, and its files read."""
    vdevs = copy_pool(built, tmp_path / "pool")
    zfs_fuse.run("zpool", "import", "-d", str(tmp_path / "pool"), built.name)
    try:
        (tmp_path / "active").mkdir()
        active = [Path(shutil.copy(v, tmp_path / "active")) for v in vdevs]
    finally:
        zfs_fuse.export(built.name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = run_uvfs("mount", *map(str, active), str(mnt))
        assert f"pool {built.name!r} is active" in done.stderr, done.stderr
        assert "read-only" in done.stderr, done.stderr
        assert (mnt / "odd").read_bytes() == ORIGINAL["odd"]
        with pytest.raises(OSError) as e:
            (mnt / "new").write_bytes(b"x")
        assert e.value.errno == 30  # EROFS
    finally:
        force_unmount(mnt)


def test_kill_keeps_every_answered_change(
    built: PoolRecord, zfs_fuse: ZfsFuse, tmp_path: Path
) -> None:
    """kill -9 of the server after a workload (the last file fsync'd, one left open):
    zfs-fuse imports the pool with every change made before the kill, scrub is clean and
    zdb -bcc finds no leak."""
    vdevs = copy_pool(built, tmp_path / "pool")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        run_uvfs("mount", *map(str, vdevs), str(mnt))
        (mnt / "d").mkdir()
        (mnt / "d" / "kept").write_bytes(BIG)
        (mnt / "small").unlink()
        f = open(mnt / "d" / "synced", "wb")  # noqa: SIM115 - still open at the kill
        f.write(PATCH)
        f.flush()
        os.fsync(f.fileno())
        record = _runtime.find(os.path.realpath(mnt))
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        while _runtime.find(record.mountpoint) is not None:
            time.sleep(0.05)
        with contextlib.suppress(OSError):  # the server is gone
            f.close()
    finally:
        force_unmount(mnt)

    found: dict[str, bytes] = {}

    def look() -> None:
        root = zfs_fuse.visible(built.directory / "mnt")
        found.update({p: (root / p).read_bytes() for p in ("d/kept", "d/synced")})
        found["small?"] = b"yes" if (root / "small").exists() else b"no"

    status = scrub_clean(zfs_fuse, tmp_path / "pool", built.name, look)
    assert found == {"d/kept": BIG, "d/synced": PATCH, "small?": b"no"}
    assert "with 0 errors" in status and "errors: No known data errors" in status, status
    zdb = zfs_fuse.run("zdb", "-e", "-p", str(tmp_path / "pool"), "-bcc", built.name)
    assert "No leaks (block sum matches space maps exactly)" in zdb, zdb
