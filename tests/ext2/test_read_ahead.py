"""Read-ahead: a file read sequentially has the image read its next bytes ahead, exactly
where they lie (`ImageFile.prefetch`); small random reads ask nothing ahead."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from uvfs import ImageFile, MountOptions
from uvfs_fs.ext2.filesystem import READ_AHEAD, Ext2FileSystem

from .conftest import resolve

MiB = 1 << 20


class _Advised(ImageFile):
    """An image that notes the byte ranges it is asked to read ahead."""

    advised: list[tuple[int, int]]

    def prefetch(self, offset: int, size: int) -> None:
        self.advised.append((offset, size))
        super().prefetch(offset, size)


@pytest.fixture(scope="module")
def big_file_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An ext2 image (4 KiB blocks, so indirect blocks split the file's runs) holding one
    16 MiB file of random bytes, and those bytes."""
    root = tmp_path_factory.mktemp("read_ahead")
    (root / "tree").mkdir()
    data = random.Random(7).randbytes(16 * MiB)
    (root / "tree" / "big").write_bytes(data)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-d", str(root / "tree"),
         str(root / "ext2.img"), "32M"],
        check=True, capture_output=True,
    )  # fmt: skip
    return root / "ext2.img", data


async def _open(path: Path) -> tuple[_Advised, Ext2FileSystem]:
    image = _Advised(str(path))
    image.advised = []
    return image, await Ext2FileSystem.load(image, MountOptions())


async def test_a_sequential_reader_has_the_next_bytes_read_ahead(
    big_file_image: tuple[Path, bytes],
) -> None:
    """Reads of 1 MiB from the start: the first has the image read the next READ_AHEAD
    bytes, later ones extend that in steps of a quarter; the ranges advised are the
    file's bytes [1 MiB, 3 MiB + READ_AHEAD), in order, where the image holds them."""
    path, data = big_file_image
    image, fs = await _open(path)
    with image:
        big = await resolve(fs, "big")
        for offset in range(0, 4 * MiB, MiB):
            assert await fs.read(big.ino, 0, offset, MiB) == data[offset : offset + MiB]
        with open(path, "rb") as f:
            advised = b"".join(os.pread(f.fileno(), size, at) for at, size in image.advised)
        assert advised == data[MiB : 3 * MiB + READ_AHEAD]


async def test_small_random_reads_ask_nothing_ahead(big_file_image: tuple[Path, bytes]) -> None:
    path, data = big_file_image
    image, fs = await _open(path)
    with image:
        big = await resolve(fs, "big")
        rng = random.Random(3)
        for _ in range(50):
            offset = rng.randrange(len(data) // 4096) * 4096
            assert await fs.read(big.ino, 0, offset, 4096) == data[offset : offset + 4096]
        assert image.advised == []
