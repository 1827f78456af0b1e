"""The system zone against dumpe2fs: every block dumpe2fs places metadata in is refused to
files, and every block it lists as free is allowed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import open_image

VOLUMES = [
    pytest.param("ext2", 1024, "64M", (), id="ext2-resize_inode"),
    pytest.param("ext4", 1024, "160M", ("-O", "meta_bg,^resize_inode"), id="ext4-meta_bg"),
    pytest.param("ext4", 4096, "256M", ("-G", "4"), id="ext4-flex_bg"),
]


def dumpe2fs_blocks(image: Path) -> tuple[set[int], set[int]]:
    """(metadata blocks, free blocks) as dumpe2fs lists them group by group."""
    text = subprocess.run(
        ["dumpe2fs", str(image)], check=True, capture_output=True, text=True
    ).stdout
    metadata: set[int] = set()
    free: set[int] = set()

    def spans(text: str) -> list[tuple[int, int]]:
        return [(int(a), int(b or a)) for a, b in re.findall(r"(\d+)(?:-(\d+))?", text)]

    for line in text.splitlines():
        line = line.strip()
        found = re.findall(
            r"(?:superblock|Group descriptors?|Reserved GDT blocks|Block bitmap|Inode bitmap"
            r"|Inode table) at (\d+)(?:-(\d+))?",
            line,
        )
        for a, b in found:
            metadata.update(range(int(a), int(b or a) + 1))
        if line.startswith("Free blocks:"):
            for a, b in spans(line.removeprefix("Free blocks:")):
                free.update(range(a, b + 1))
    return metadata, free


@pytest.mark.parametrize(("fstype", "block_size", "size", "extra"), VOLUMES)
async def test_zone_is_dumpe2fs_metadata(
    tmp_path: Path, fstype: str, block_size: int, size: str, extra: tuple[str, ...]
) -> None:
    image = tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", fstype, "-b", str(block_size), *extra, str(image), size],
        check=True,
        capture_output=True,
    )
    metadata, free = dumpe2fs_blocks(image)
    assert metadata and free
    img, fs = await open_image(image)
    with img:
        zone = await fs._system_zone()
    assert [b for b in sorted(metadata) if zone.block_ok(b, 1)] == []
    assert [b for b in sorted(free) if not zone.block_ok(b, 1)] == []
