"""Whole disks through the real command line: ``uvfs info`` lists every partition with the
filesystem in it; ``uvfs mount -o partition=N`` shows exactly what the kernel shows of the
same partition (``mount -o loop,offset=,sizelimit=``), from an image file or a block device;
without ``partition=`` the one partition holding a filesystem is used and named, several
are refused by name; bad numbers and damaged tables are one line, never a traceback."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import force_unmount, need, run_uvfs
from tests.disks import MiB, blank, loop_device, mkfs_at, sfdisk
from tests.ext2.images import make_tree
from tests.ext2.test_mount_vs_kernel import view
from tests.test_normal_user import NOBODY, NOBODY_USER, as_nobody, home

pytestmark = pytest.mark.slow
__all__ = ["home"]  # a fixture, used by name

# 1: ext2, 2: extended holding 5 (ext4, the test tree), 6 (swap) and 7 (empty), 3: empty.
SCRIPT = """label: dos
start=2048, size=8M, type=83
start=18432, size=96M, type=5
start=20480, size=48M, type=83
start=120832, size=12M, type=82
start=147456, size=8M, type=83
start=215040, size=4M, type=83
"""
FIVE = (20480 * 512, 48 * MiB)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the test tree has devices and foreign owners: needs root")
    base = tmp_path_factory.mktemp("disk")
    tree, small = base / "tree", base / "small"
    make_tree(tree, huge=False)
    small.mkdir()
    (small / "one").write_text("partition one\n")
    path = blank(base / "disk.img", 112 * MiB)
    sfdisk(path, SCRIPT)
    mkfs_at(path, 2048 * 512, 8 * MiB, "ext2", small)
    mkfs_at(path, *FIVE, "ext4", tree)
    return path


@pytest.fixture
def kernel_partition(tmp_path: Path) -> Iterator[Callable[[Path, int, int], Path]]:
    """``kernel_partition(disk, offset, size) -> mountpoint``: the kernel's read-only loop
    mount of the bytes [offset, offset + size) of `disk`."""
    mounted: list[Path] = []

    def do(disk: Path, offset: int, size: int) -> Path:
        mountpoint = tmp_path / f"kernel-mnt{len(mounted)}"
        mountpoint.mkdir()
        subprocess.run(
            ["mount", "-o", f"ro,loop,offset={offset},sizelimit={size}", str(disk),
             str(mountpoint)],
            check=True, capture_output=True,
        )  # fmt: skip
        mounted.append(mountpoint)
        return mountpoint

    yield do
    for mountpoint in mounted:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_info_lists_every_partition(disk: Path) -> None:
    done = run_uvfs("info", str(disk))
    assert done.stdout.splitlines() == [
        "type: mbr partition table, 512-byte sectors, 112.0 MiB disk",
        "number       start    sectors       size  type                     filesystem",
        "1             2048      16384    8.0 MiB  Linux                    ext2",
        "2            18432     196608   96.0 MiB  Extended                 (logical partitions)",
        "3           215040       8192    4.0 MiB  Linux                    none",
        "5            20480      98304   48.0 MiB  Linux                    ext4",
        "6           120832      24576   12.0 MiB  Linux swap / Solaris     none",
        "7           147456      16384    8.0 MiB  Linux                    none",
    ]
    partition = run_uvfs("info", "-p", "5", str(disk))
    assert partition.stdout.startswith("type: ext2\n")


def test_several_filesystems_are_refused_by_name(disk: Path, tmp_path: Path) -> None:
    done = run_uvfs("mount", "-o", "ro", str(disk), str(tmp_path), check=False)
    assert (done.returncode, done.stderr) == (
        1,
        f"uvfs: {disk}: several partitions hold filesystems: 1 (ext2), 5 (ext4); "
        "choose one with -o partition=N\n",
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("partition=9", "{disk}: no partition 9 (partitions: 1, 2, 3, 5, 6, 7)"),
        ("partition=2", "{disk}: partition 2 is an extended partition (it holds 5 and up)"),
        ("partition=6", "{disk} partition 6: no known filesystem found (known types: {known}"),
        ("partition=0", "bad partition number '0' (expected 1, 2, ...)"),
        ("partition=x", "bad partition number 'x' (expected 1, 2, ...)"),
    ],
)
def test_bad_partition_numbers_are_one_line(
    disk: Path, tmp_path: Path, option: str, message: str
) -> None:
    done = run_uvfs("mount", "-o", f"ro,{option}", str(disk), str(tmp_path), check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    expected = "uvfs: " + message.format(disk=disk, known="ext2, zfs")
    assert done.stderr.startswith(expected)


@pytest.mark.parametrize("source", ["file", "block device"])
def test_a_logical_partition_shows_what_the_kernel_shows(
    disk: Path, mount, kernel_partition, source: str
) -> None:
    before = _digest(disk)
    theirs = view(kernel_partition(disk, *FIVE))
    if source == "file":
        ours = view(mount(disk, options="ro,partition=5"))
    else:
        with loop_device(disk) as device:
            mountpoint = mount(device, options="ro,partition=5")
            ours = view(mountpoint)
            run_uvfs("umount", str(mountpoint))  # before the device goes
    assert ours.keys() == theirs.keys()
    different = {path: (ours[path], theirs[path]) for path in ours if ours[path] != theirs[path]}
    assert different == {}
    assert _digest(disk) == before


def test_the_one_filesystem_is_used_and_named(tmp_path: Path, mount) -> None:
    """A GPT disk with an empty BIOS boot partition and an ext2 in partition 2: mounted
    read-write without options; the write lands in partition 2, which e2fsck finds clean,
    and not one byte outside it changes."""
    need("sgdisk", "e2fsck")
    disk = blank(tmp_path / "gpt.img", 40 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+1M", "-t1:ef02", "-n2:0:+32M", "-t2:8300", str(disk)],
                   check=True, capture_output=True)  # fmt: skip
    start, size = 4096 * 512, 32 * MiB
    mkfs_at(disk, start, size, "ext2")
    outside = _digest_outside(disk, start, size)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = run_uvfs("mount", str(disk), str(mountpoint))
    try:
        assert done.stderr == f"uvfs: {disk}: using partition 2 (ext2)\n"
        (mountpoint / "written").write_bytes(b"w" * 100_000)
    finally:
        run_uvfs("umount", str(mountpoint), check=False)
    assert _digest_outside(disk, start, size) == outside
    check = subprocess.run(["e2fsck", "-fn", f"{disk}?offset={start}"], capture_output=True)
    assert check.returncode == 0, check.stdout
    again = mount(disk, options="ro,partition=2")
    assert (again / "written").read_bytes() == b"w" * 100_000


def _digest_outside(disk: Path, start: int, size: int) -> str:
    raw = disk.read_bytes()
    return hashlib.sha256(raw[:start] + raw[start + size :]).hexdigest()


def test_damaged_gpt_through_the_command_line(tmp_path: Path, mount) -> None:
    """A damaged primary GPT mounts from the backup with a warning; both damaged is one
    line."""
    need("sgdisk")
    disk = blank(tmp_path / "gpt.img", 24 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+16M", str(disk)], check=True, capture_output=True)
    small = tmp_path / "small"
    small.mkdir()
    (small / "file").write_text("still here\n")
    mkfs_at(disk, 2048 * 512, 16 * MiB, "ext2", small)
    with open(disk, "r+b") as f:
        f.seek(512 + 40)
        f.write(b"\x07")
    info = run_uvfs("info", str(disk))
    assert info.stderr == (
        f"uvfs: {disk}: primary GPT damaged (header CRC mismatch), using the backup\n"
    )
    assert (mount(disk, options="ro,partition=1") / "file").read_text() == "still here\n"
    with open(disk, "r+b") as f:
        f.seek(24 * MiB - 512 + 40)
        f.write(b"\x07")
    done = run_uvfs("info", str(disk), check=False)
    assert (done.returncode, done.stderr) == (
        1,
        f"uvfs: {disk}: GPT damaged: primary: header CRC mismatch; backup: header CRC mismatch\n",
    )


def test_a_normal_user_mounts_a_partition_of_a_block_device(home: Path) -> None:
    """nobody, given read permission on /dev/loopN and nothing else, mounts its partition 1
    (the device's size and sectors come from the kernel, not from st_size)."""
    need("setpriv", "sgdisk")
    disk = blank(home / "disk.img", 24 * MiB)
    subprocess.run(["sgdisk", "-n1:2048:+16M", str(disk)], check=True, capture_output=True)
    tree = home / "tree"
    tree.mkdir()
    (tree / "note").write_text("a partition of a block device\n")
    mkfs_at(disk, 2048 * 512, 16 * MiB, "ext2", tree)
    mountpoint = home / "mnt"
    mountpoint.mkdir()
    os.chown(mountpoint, NOBODY, NOBODY)
    with loop_device(disk) as device:
        before = os.stat(device)
        os.chmod(device, 0o444)
        try:
            done = as_nobody(home, "mount", "-o", "ro,partition=1", device, str(mountpoint))
            assert (done.returncode, done.stderr) == (0, "")
            read = subprocess.run(["setpriv", *NOBODY_USER, "cat", str(mountpoint / "note")],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            assert read.stdout == "a partition of a block device\n"
            done = as_nobody(home, "umount", str(mountpoint))
            assert (done.returncode, done.stderr) == (0, "")
        finally:
            force_unmount(mountpoint)
            os.chmod(device, before.st_mode & 0o7777)
