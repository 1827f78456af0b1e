"""A qcow2 image of a partitioned disk through the real command line: ``uvfs info`` lists
its partitions, a mount (read-write asked) falls back to read-only with a warning, as
mount(8) does for a write-protected device, and shows what the kernel shows of the raw
disk's partition; a damaged image is one line on stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, run_uvfs
from tests.test_partitions_mounted import FIVE, disk, kernel_partition, view

pytestmark = pytest.mark.slow
__all__ = ["disk", "kernel_partition"]  # fixtures, used by name


@pytest.fixture(scope="module")
def qcow2(disk: Path) -> Path:
    need("qemu-img")
    image = disk.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd",
                    str(disk), str(image)], check=True, capture_output=True)  # fmt: skip
    return image


def test_info_lists_the_partitions_of_a_qcow2_disk(qcow2: Path) -> None:
    lines = run_uvfs("info", str(qcow2)).stdout.splitlines()
    assert lines[0] == "type: mbr partition table, 512-byte sectors, 112.0 MiB disk (qcow2 image)"
    assert lines[2:] == run_uvfs("info", str(qcow2.with_suffix(".img"))).stdout.splitlines()[2:]


def test_a_qcow2_partition_shows_what_the_kernel_shows(
    disk: Path, qcow2: Path, tmp_path: Path, kernel_partition
) -> None:
    theirs = view(kernel_partition(disk, *FIVE))
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = run_uvfs("mount", "-o", "partition=5", str(qcow2), str(mountpoint))
    try:
        assert done.stderr == (
            f"uvfs: {qcow2} is a qcow2 image, which uvfs only reads: mounting read-only\n"
        )
        ours = view(mountpoint)
    finally:
        run_uvfs("umount", str(mountpoint), check=False)
    assert ours == theirs


def test_a_damaged_qcow2_is_one_line(qcow2: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.qcow2"
    damaged.write_bytes(qcow2.read_bytes())
    with open(damaged, "r+b") as f:
        f.seek(40)
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        f.write(((1 << 40) | (1 << 63)).to_bytes(8, "big"))
    for command in (["info"], ["mount", "-o", "ro"]):
        done = run_uvfs(*command, str(damaged), *([str(tmp_path)] if len(command) > 1 else []),
                        check=False)  # fmt: skip
        assert done.returncode == 1
        assert done.stderr == (
            f"uvfs: {damaged}: qcow2 L2 table 0 at byte {1 << 40} lies past the end of the "
            f"image ({damaged.stat().st_size} bytes) or is misaligned\n"
        )
