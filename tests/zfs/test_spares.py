"""A pool made by zfs-fuse with a hot spare, a separate log device and a cache (L2ARC)
device mounts with all of them given, in any order: the log is used as a top-level vdev,
the spare and the cache are recognised and set aside, never refused. Members that are
whole disks (a GPT with the pool in partition 1 and partition 9 reserved, as OpenZFS lays
them out), as image files or as block devices, are found without options."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from zfsfuse import ZfsFuse

from tests.conftest import need, run_uvfs
from tests.disks import MiB, blank, loop_device

pytestmark = pytest.mark.slow

VDEV_SIZE = 64 * MiB
FILES = {"hello": b"hello from a pool with a spare\n", "big": os.urandom(3 * MiB)}


@dataclass(frozen=True)
class Members:
    a: Path
    b: Path
    spare: Path
    log: Path
    cache: Path


@pytest.fixture(scope="module")
def members(zfs_fuse: ZfsFuse, tmp_path_factory: pytest.TempPathFactory) -> Members:
    """Pool ``psl``: a mirror of a and b, spare, log and cache (zfs-fuse wants the cache on
    a block device: a loop device over cache.img, detached once the pool is exported)."""
    directory = tmp_path_factory.mktemp("spares")
    made = Members(*(blank(directory / f"{n}.img", VDEV_SIZE) for n in Members.__annotations__))
    with loop_device(made.cache) as cache:
        zfs_fuse.run("zpool", "create", "-f", "-m", str(directory / "mnt"), "psl",
                     "mirror", str(made.a), str(made.b), "spare", str(made.spare),
                     "log", str(made.log), "cache", cache)  # fmt: skip
        try:
            root = zfs_fuse.visible(directory / "mnt")
            for name, data in FILES.items():
                (root / name).write_bytes(data)
        finally:
            zfs_fuse.export("psl")
    return made


def _mount_and_read(tmp_path: Path, *sources: Path | str) -> tuple[str, dict[str, bytes]]:
    mountpoint = tmp_path / f"mnt{len(list(tmp_path.glob('mnt*')))}"
    mountpoint.mkdir()
    done = run_uvfs("mount", "-o", "ro", *map(str, sources), str(mountpoint))
    try:
        return done.stderr, {name: (mountpoint / name).read_bytes() for name in FILES}
    finally:
        run_uvfs("umount", str(mountpoint), check=False)


def test_spare_log_and_cache_among_the_members(members: Members, tmp_path: Path) -> None:
    m = members
    stderr, files = _mount_and_read(tmp_path, m.spare, m.cache, m.a, m.log, m.b)
    assert (stderr, files) == ("", FILES)
    info = run_uvfs("info", str(m.a), str(m.b), str(m.spare), str(m.log), str(m.cache))
    vdevs = [line for line in info.stdout.splitlines() if line.startswith("  ")]
    assert [line.split("  guid")[0] for line in vdevs[:4]] == [
        "  mirror",
        f"    {m.a}",
        f"    {m.b}",
        f"  {m.log}  (log)",
    ]
    assert vdevs[4:6] == [
        f"  {m.spare}  (spare, not needed for reading)",
        f"  {m.cache}  (cache, not needed for reading)",
    ]


def test_spares_and_caches_alone_are_one_line(members: Members, tmp_path: Path) -> None:
    done = run_uvfs("mount", "-o", "ro", str(members.spare), str(members.cache), str(tmp_path),
                    check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "uvfs: only hot spares and cache devices given, no pool member\n",
    )


def _whole_disk(vdev: Path, disk: Path) -> Path:
    """`vdev`'s bytes in partition 1 of a GPT disk laid out as OpenZFS lays out whole disks:
    partition 1 (type bf01) from 1 MiB, partition 9 (bf07, 8 MiB) after it."""
    need("sgdisk")
    blank(disk, VDEV_SIZE + 10 * MiB)
    subprocess.run(
        ["sgdisk", f"-n1:2048:+{VDEV_SIZE // 1024}K", "-t1:bf01", "-c1:zfs-data",
         "-n9:0:+8M", "-t9:bf07", str(disk)],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(vdev, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(MiB)
        while chunk := src.read(MiB):
            dst.write(chunk)
    return disk


@pytest.fixture
def whole_disks(members: Members, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield (
        _whole_disk(members.a, tmp_path / "disk-a.img"),
        _whole_disk(members.b, tmp_path / "disk-b.img"),
    )


def test_whole_disk_members_are_found(
    members: Members, whole_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    disk_a, disk_b = whole_disks
    listing = run_uvfs("info", str(disk_a)).stdout.splitlines()
    assert listing[2:] == [
        "1             2048     131072   64.0 MiB  Solaris /usr & Mac ZFS   zfs member",
        "9           133120      16384    8.0 MiB  Solaris reserved 1       none",
    ]
    stderr, files = _mount_and_read(tmp_path, disk_a, disk_b, members.log, members.spare)
    assert files == FILES
    assert stderr == (
        f"uvfs: {disk_a}: using partition 1 (zfs member)\n"
        f"uvfs: {disk_b}: using partition 1 (zfs member)\n"
    )
    with loop_device(disk_a) as device:
        stderr, files = _mount_and_read(tmp_path, device, members.log)
    assert files == FILES  # the mirror's other side is missing: still readable
    assert stderr == f"uvfs: {device}: using partition 1 (zfs member)\n"
