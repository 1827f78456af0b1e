"""The fuzzer's short seeded run: damaged metadata of real images never fails a driver.

150 mutated images per driver, walked in-process through the driver API (tools/fuzz): no
exception other than an errno, no answer FUSE cannot carry, no hang, no dead worker, no
write to the image; and a few mounted for real through FUSE. `make fuzz` runs 10,000.
Then what the fuzzer found, each pinned where it was fixed: values FUSE could not carry
(pyfuse3 raised OverflowError in the server) and a statfs gone negative.
"""

from __future__ import annotations

import errno
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import trio

from tests.ext2.test_inode import raw_inode
from tests.zfs.test_dnode import dnode
from tests.zfs.test_znode import znode_phys
from tools.fuzz._corpus import CorpusError, default_workdir, seeds
from tools.fuzz._mount import mount_sample
from tools.fuzz._run import run
from tools.fuzz._walk import check_statfs
from uvfs import FSError, ImageFile, MountOptions
from uvfs_fs.ext2 import DRIVER as EXT2
from uvfs_fs.ext2.inode import decode_inode
from uvfs_fs.zfs.dnode import parse_dnode
from uvfs_fs.zfs.znode import parse_znode_phys

CASES = 150
SEED = 12  # fixed: a failure here reproduces with --seed 12 --first N --count 1


# The fuzzer's own seed store: built once per machine (zfs-fuse takes half a minute).
WORKDIR = default_workdir()


@pytest.fixture
def failures(tmp_path: Path) -> Path:
    return tmp_path / "failures"


@pytest.mark.parametrize("driver", ["ext2", "zfs"])
def test_seeded_run_finds_nothing(failures: Path, driver: str) -> None:
    try:
        seeds(driver, WORKDIR)
    except CorpusError as e:
        pytest.skip(str(e))
    summary = run(driver, CASES, SEED, WORKDIR, failures, jobs=2, timeout=30)
    assert summary.count == CASES
    assert dict(summary.failures) == {}, [str(p) for p in summary.saved]
    # Most damage leaves the image mountable: the walks really reach the parsers.
    assert summary.opened > CASES // 2


def test_mounted_sample_finds_nothing(failures: Path) -> None:
    summary = mount_sample("ext2", 4, SEED, WORKDIR, failures)
    assert summary.count == 4 and summary.mounted > 0  # a damaged image may be refused
    assert dict(summary.failures) == {}


def test_ext2_size_past_loff_max_is_euclean() -> None:
    largest = raw_inode(i_size=0xFFFFFFFF, i_size_high=0x7FFFFFFF)
    assert decode_inode(largest, 12, huge_file=True, block_size=4096).size == (1 << 63) - 1
    with pytest.raises(FSError) as e:
        decode_inode(raw_inode(i_size_high=0x80000000), 12, huge_file=True, block_size=4096)
    assert e.value.errno == errno.EUCLEAN


def test_zfs_znode_fields_as_linux_takes_them() -> None:
    bonus = bytearray(znode_phys("<", mode=(1 << 40) | stat.S_IFREG | 0o644, size=7))
    struct.pack_into("<2Q", bonus, 0, (1 << 64) - 1, 1_500_000_000)  # zp_atime
    z = parse_znode_phys(bytes(bonus), "<")
    assert z.mode == stat.S_IFREG | 0o644  # a umode_t
    assert z.atime == (-1, 500_000_000)  # signed seconds, nanoseconds below 10^9
    with pytest.raises(FSError) as e:
        parse_znode_phys(znode_phys("<", mode=stat.S_IFREG, size=1 << 63), "<")
    assert e.value.errno == errno.EUCLEAN


def test_zfs_used_bytes_fit_st_blocks() -> None:
    dn = parse_dnode(dnode("<"), "<")._replace(dn_used=(1 << 64) - 1)
    assert dn.used_bytes == (1 << 63) - 1


def test_ext2_statfs_ignores_a_ridiculous_overhead(tmp_path: Path) -> None:
    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(image), "8M"], check=True)

    async def statfs(overhead: int) -> tuple[int, int]:
        subprocess.run(
            ["debugfs", "-w", "-R", f"ssv overhead_clusters {overhead}", str(image)],
            check=True, capture_output=True,
        )  # fmt: skip
        with ImageFile(str(image)) as img:
            fs = await EXT2.open([img], MountOptions())
            s = await fs.statfs()
            check_statfs(s)
            return s.blocks, s.blocks_free

    counted = trio.run(statfs, 0)  # no recorded count: the kernel's own
    assert trio.run(statfs, 0xFFFFFFFF) == counted  # past the blocks count: ignored
    assert 0 < counted[0] < 8192
