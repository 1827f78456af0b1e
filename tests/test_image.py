"""Image I/O: exact positional reads, EIO past the end, read-only means unwritable, and locks
that keep a second writer (or a writer beside readers) away."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
import trio

from uvfs import FSError, ImageFile, ImageInUse
from uvfs._image import read_inline_when


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img"
    path.write_bytes(bytes(range(256)) * 16)
    return path


async def test_reads_are_positional_and_exact(image: Path) -> None:
    with ImageFile(str(image)) as f:
        assert f.size == 4096
        assert await f.read(250, 10) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
        big = await f.read(0, 4096)
        assert big == image.read_bytes()


async def test_a_read_past_the_end_is_eio(image: Path) -> None:
    with ImageFile(str(image)) as f:
        with pytest.raises(FSError) as excinfo:
            await f.read(4090, 10)
        assert excinfo.value.errno == errno.EIO


async def test_read_only_images_refuse_writes(image: Path) -> None:
    with ImageFile(str(image)) as f:
        with pytest.raises(FSError) as excinfo:
            await f.write(0, b"x")
        assert excinfo.value.errno == errno.EROFS
    assert image.read_bytes()[:1] == b"\x00"


async def test_writes_land_where_asked(image: Path) -> None:
    with ImageFile(str(image), writable=True) as f:
        await f.write(4094, b"abcd")  # past the end: the image grows
        await f.sync()
        assert f.size == 4098
    assert image.read_bytes()[4094:] == b"abcd"


def test_one_writer_or_many_readers(image: Path) -> None:
    with ImageFile(str(image), writable=True):
        with pytest.raises(ImageInUse, match="in use by another uvfs mount"):
            ImageFile(str(image), writable=True)
        with pytest.raises(ImageInUse):
            ImageFile(str(image))
    with ImageFile(str(image)), ImageFile(str(image)), pytest.raises(ImageInUse):
        ImageFile(str(image), writable=True)


async def test_a_full_disk_is_enospc_for_the_request() -> None:
    """The image's own disk filling up is the request's ENOSPC, not a driver bug's EIO."""
    with ImageFile("/dev/full", writable=True) as f:
        with pytest.raises(FSError) as excinfo:
            await f.write(0, b"x" * 4096)
        assert excinfo.value.errno == errno.ENOSPC
        assert "No space left on device" in str(excinfo.value)


class _Traced(ImageFile):
    """An image that notes the thread each read from the device runs in."""

    threads: list[int]

    def read_sync(self, offset: int, size: int) -> bytes:
        self.threads.append(threading.get_ident())
        return super().read_sync(offset, size)


async def test_page_cache_reads_are_copied_out_of_their_shared_buffer(image: Path) -> None:
    """A slow device's reads that the page cache answers share one buffer: each result is
    bytes of its own, exact, and unchanged by the reads after it."""
    with _Traced(str(image)) as f:
        f.threads = []
        f._latency = 1.0  # too slow for reads on the loop: the page cache is tried first
        first = await f.read(10, 100)
        second = await f.read(300, 2000)
        assert first == bytes(range(10, 110))
        assert second == (bytes(range(256)) * 16)[300:2300]
        assert f.threads == []  # both answered by the page cache, no device read


async def test_a_moderately_slow_devices_reads_stay_on_the_loop_while_nothing_else_is_ready(
    image: Path,
) -> None:
    """A device slower than a thread hand-off but faster than a seek is read on the loop
    while no other task is ready to run; with one ready, the page cache is tried first
    (this image is in it, so no device read follows)."""
    with _Traced(str(image)) as f:
        f.threads = []
        f._latency = 1e-3
        assert await f.read(0, 4096) == image.read_bytes()
        assert f.threads == [threading.get_ident()]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)  # ready to run while the read is made
            assert await f.read(0, 4096) == image.read_bytes()
        assert f.threads == [threading.get_ident()]


@pytest.mark.parametrize("alone", [True, False])
async def test_a_slow_devices_small_reads_stay_on_the_loop_only_when_it_is_alone(
    image: Path, alone: bool
) -> None:
    """A driver process answering a single request reads inline, however slow the device:
    a hand-off to a thread holds up nobody else there and only costs. Otherwise a slow
    device's reads leave the loop (in a thread, or none: this image is in the page cache)."""
    read_inline_when(lambda: alone)
    try:
        with _Traced(str(image)) as f:
            f.threads = []
            f._latency = 1.0  # a device that takes a second per read
            assert await f.read(0, 4096) == image.read_bytes()
            on_loop = [t for t in f.threads if t == threading.get_ident()]
            assert on_loop == ([threading.get_ident()] if alone else [])
    finally:
        read_inline_when(lambda: False)
