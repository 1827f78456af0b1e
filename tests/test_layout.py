"""LayoutReader: reads files from an image where their layouts place them, asking for a
layout once per window, and answers None wherever the driver's `read` must answer."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio

from uvfs import Extent, FSError, ImageFile, Layout
from uvfs._layout import WINDOW, LayoutReader

IMAGE = bytes(range(256)) * 64  # 16 KiB: every byte says where it is (mod 256)
SIZE = 10_000  # the file: bytes 0-3999 at image 8192, a hole, then 6000-9999 at image 100


@pytest.fixture
def image(tmp_path: Path):
    path = tmp_path / "image"
    path.write_bytes(IMAGE)
    with ImageFile(str(path)) as opened:
        yield opened


class Driver:
    """Layouts of one file (inode 7) of SIZE bytes; every call recorded."""

    def __init__(self, answer: object = "layout") -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.answer = answer

    async def read_layout(self, ino: int, offset: int, size: int) -> Layout | None:
        self.calls.append((ino, offset, size))
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer is None:
            return None
        extents = (Extent(0, 4000, 0, 8192), Extent(6000, 4000, 0, 100))
        source = self.answer if isinstance(self.answer, int) else 0
        extents = tuple(e._replace(source=source) for e in extents)
        return Layout(offset, min(offset + size, SIZE), SIZE, extents)


def expected(offset: int, size: int) -> bytes:
    file = IMAGE[8192 : 8192 + 4000] + bytes(2000) + IMAGE[100 : 100 + 4000]
    return file[offset : offset + size]


async def test_reads_extents_and_holes_clipped_at_the_end(image: ImageFile) -> None:
    driver = Driver()
    reader = LayoutReader([image], driver.read_layout)
    for offset, size in [(0, 4096), (3990, 20), (4500, 100), (5990, 4010), (9000, 5000),
                         (0, SIZE), (SIZE, 10), (SIZE + 7, 1)]:  # fmt: skip
        assert await reader.read(7, offset, size) == expected(offset, size), (offset, size)
    assert driver.calls == [(7, 0, WINDOW)]  # one window, asked once
    assert reader.layouts_fetched == 1 and reader.reads == 6  # the two at the end read nothing


async def test_a_read_across_windows_asks_for_the_rest(image: ImageFile) -> None:
    driver = Driver()
    reader = LayoutReader([image], driver.read_layout)
    await reader.read(7, WINDOW - 10, 20)
    assert driver.calls == [(7, 0, WINDOW + 10)]


async def test_declined_failed_or_wrong_layouts_leave_reads_to_the_driver(
    image: ImageFile,
) -> None:
    for answer in [None, FSError(errno.EUCLEAN, "damaged"), 3]:  # 3: no such source
        driver = Driver(answer)
        reader = LayoutReader([image], driver.read_layout)
        assert await reader.read(7, 0, 100) is None
        assert await reader.read(7, 200, 100) is None
        assert len(driver.calls) == 1, answer  # remembered: not asked again


async def test_a_layout_learnt_while_cleared_is_not_kept(image: ImageFile) -> None:
    """A restart during the call may have answered for the old process: ask again."""
    reader: LayoutReader
    driver = Driver()

    async def clearing(ino: int, offset: int, size: int) -> Layout | None:
        reader.clear()
        await trio.lowlevel.checkpoint()
        return await driver.read_layout(ino, offset, size)

    reader = LayoutReader([image], clearing)
    assert await reader.read(7, 0, 10) == expected(0, 10)
    assert await reader.read(7, 0, 10) == expected(0, 10)
    assert len(driver.calls) == 2
    reader.clear()
    await reader.read(7, 0, 10)
    assert len(driver.calls) == 3
