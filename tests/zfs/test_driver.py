"""The ZFS driver type: probe, describe, open, the protocols it implements, damage handling."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from zfsfuse import PoolRecord, ZfsFuse

from uvfs import (
    DriverType,
    FileSystem,
    FSError,
    GetXattr,
    ImageFile,
    ListXattr,
    MountOptions,
    Open,
    Read,
    ReadDir,
    ReadLink,
    StatFs,
    Write,
)
from uvfs._api import PROBE_SIZE
from uvfs_fs.zfs import DRIVER, ZfsFileSystem
from uvfs_fs.zfs.zpl import OBJ_BITS, OBJ_MASK

VDEV_LABEL_START_SIZE = 4 << 20  # two labels and the boot block precede allocatable space


@pytest.fixture(scope="module")
def small(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    def populate(root: Path) -> dict[str, bytes]:
        files = {f"f{i}": os.urandom(3000 + i) for i in range(4)}
        os.mkdir(root / "d")
        for name, data in files.items():
            (root / "d" / name).write_bytes(data)
        (root / "top").write_bytes(b"top\n")
        zfs_fuse.run("zfs", "create", "-o", "compression=gzip", "pdriver/child")
        zfs_fuse.run("zfs", "snapshot", "pdriver/child@monday")
        return files

    return zfs_pool("driver", [("mirror", 2)], {"compression": "off"}, populate)


def _images(record: PoolRecord) -> list[ImageFile]:
    return [ImageFile(str(v)) for v in record.vdevs]


async def _open(record: PoolRecord) -> ZfsFileSystem:
    return await DRIVER.open(_images(record), MountOptions())


def test_driver_type() -> None:
    assert isinstance(DRIVER, DriverType)
    assert DRIVER.name == "zfs"


def test_probe(small: PoolRecord, tmp_path: Path) -> None:
    with open(small.vdevs[1], "rb") as f:
        assert DRIVER.probe(f.read(PROBE_SIZE))
    assert not DRIVER.probe(bytes(PROBE_SIZE))
    ext2 = tmp_path / "ext2.img"
    subprocess.run(["mke2fs", "-q", "-F", str(ext2), "4M"], check=True, timeout=60)
    with open(ext2, "rb") as f:
        assert not DRIVER.probe(f.read(PROBE_SIZE))


async def test_describe(small: PoolRecord) -> None:
    lines = (await DRIVER.describe(_images(small))).splitlines()
    assert lines[0] == "pool: pdriver"
    assert "version: 23" in lines
    assert any(str(small.vdevs[0]) in line for line in lines)
    i = lines.index("datasets:")
    assert lines[i + 1 :] == [
        "  pdriver  (at /)",
        "  pdriver/child  (at /child)",
        "  pdriver/child@monday  (at /child/.zfs/snapshot/monday)",
    ]


async def test_a_writable_open_gives_a_read_only_filesystem(small: PoolRecord) -> None:
    fs = await DRIVER.open(_images(small), MountOptions(writable=True))
    assert not isinstance(fs, Write)


async def test_protocols(small: PoolRecord) -> None:
    fs = await _open(small)
    for proto in (FileSystem, ReadDir, Read, ReadLink, StatFs, GetXattr, ListXattr):
        assert isinstance(fs, proto), proto.__name__
    assert not isinstance(fs, Write)
    assert not isinstance(fs, Open)  # opening needs no state: the broker's default


async def test_one_mirror_side_is_enough(small: PoolRecord) -> None:
    fs = await DRIVER.open([ImageFile(str(small.vdevs[1]))], MountOptions())
    d = await fs.lookup(fs.root, b"d")
    f0 = await fs.lookup(d.ino, b"f0")
    assert await fs.read(f0.ino, 0, 0, 1 << 20) == small.files["f0"]


def _damage(record: PoolRecord, bp_offsets: list[tuple[int, int]]) -> None:
    """Overwrite (offset, size) ranges of allocatable space on every vdev file."""
    for vdev in record.vdevs:
        with open(vdev, "r+b") as f:
            for offset, size in bp_offsets:
                f.seek(VDEV_LABEL_START_SIZE + offset)
                f.write(b"\xa5" * size)


async def test_damaged_blocks_fail_only_their_requests(
    zfs_pool,  # type: ignore[no-untyped-def]
) -> None:
    def populate(root: Path) -> None:
        os.mkdir(root / "dir")
        (root / "dir/victim").write_bytes(b"v" * 5000)
        (root / "dir/fine").write_bytes(b"f" * 5000)
        os.mkdir(root / "other")
        (root / "other/x").write_bytes(b"x")

    props = {"compression": "off", "checksum": "fletcher4"}
    record = zfs_pool("damage", [("disk", 1)], props, populate)
    fs = await _open(record)
    d = await fs.lookup(fs.root, b"dir")
    victim = await fs.lookup(d.ino, b"victim")
    other = await fs.lookup(fs.root, b"other")
    m = fs.datasets[0]
    assert m.objset is not None
    file_bp = (await m.objset.dnode(victim.ino & OBJ_MASK)).dn_blkptr[0]
    other_bp = (await m.objset.dnode(other.ino & OBJ_MASK)).dn_blkptr[0]
    _damage(record, [(file_bp.dvas[0].offset, file_bp.psize)])
    _damage(record, [(dva.offset, other_bp.psize) for dva in other_bp.dvas])  # every copy

    fs = await _open(record)
    with pytest.raises(FSError) as e:
        await fs.read(victim.ino, 0, 0, 100)
    assert e.value.errno == errno.EIO
    assert (await fs.getattr(victim.ino)).size == 5000
    fine = await fs.lookup(d.ino, b"fine")
    assert await fs.read(fine.ino, 0, 0, 10_000) == b"f" * 5000
    for call in (fs.lookup(other.ino, b"x"), fs.readdir(other.ino)):
        with pytest.raises(FSError) as e:
            await call
        assert e.value.errno == errno.EIO
    assert sorted(e.name for e in await fs.readdir(fs.root)) == [b"dir", b"other"]


async def test_snapshot_of_a_child_dataset(small: PoolRecord) -> None:
    fs = await _open(small)
    child = await fs.lookup(fs.root, b"child")
    assert child.ino >> OBJ_BITS == 1
    snapdir = await fs.lookup((await fs.lookup(child.ino, b".zfs")).ino, b"snapshot")
    monday = await fs.lookup(snapdir.ino, b"monday")
    assert monday.ino >> OBJ_BITS == 2 and monday.ino & OBJ_MASK == child.ino & OBJ_MASK
    assert await fs.readdir(monday.ino) == []
