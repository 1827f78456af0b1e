"""Whole-disk images made by the real tools (sfdisk, sgdisk, mke2fs -E offset=, losetup),
shared by the partition, qcow2 and ZFS tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need

MiB = 1 << 20


def sfdisk(disk: os.PathLike | str, script: str) -> None:
    """Write the partition table `script` (sfdisk's input format) to `disk`."""
    need("sfdisk")
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True,
                   capture_output=True)  # fmt: skip


def sfdisk_view(disk: os.PathLike | str) -> list[tuple[int, int, int]]:
    """(number, start sector, sectors) of each partition, as sfdisk --json reads the table."""
    done = subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True)
    table = json.loads(done.stdout)["partitiontable"]
    return sorted(
        (int(p["node"].removeprefix(table["device"]).removeprefix("p")), p["start"], p["size"])
        for p in table["partitions"]
    )


def blank(path: Path, size: int) -> Path:
    path.write_bytes(b"")
    os.truncate(path, size)
    return path


def mkfs_at(disk: Path, start: int, size: int, fstype: str, tree: Path | None = None) -> None:
    """Make an `fstype` filesystem of `size` bytes at byte `start` of `disk`
    (``mke2fs -E offset=``), holding `tree` if given."""
    need("mke2fs")
    content = ["-d", str(tree)] if tree is not None else []
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-E", f"offset={start}", *content, str(disk),
         f"{size // 1024}k"],
        check=True, capture_output=True,
    )  # fmt: skip


@contextlib.contextmanager
def loop_device(image: Path, sector_size: int = 512) -> Iterator[str]:
    """`image` attached to a loop device with `sector_size`-byte logical sectors (root)."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    need("losetup")
    done = subprocess.run(
        ["losetup", "-f", "--show", "-b", str(sector_size), str(image)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    device = done.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


# An MBR disk of 64 MiB as fdisk users make them: two primaries, an extended partition with
# three logical ones (5, 6, 7), and a primary after the extended one.
MBR_SCRIPT = """label: dos
start=2048, size=8M, type=83
start=18432, size=40M, type=5
start=20480, size=10M, type=83
start=43008, size=12M, type=82
start=69632, size=8M, type=83
start=102400, size=4M, type=83
"""
