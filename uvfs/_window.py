"""A partition as a block device: a byte range of the device below, which it cannot leave.

Drivers read and write a `Window` exactly as they would an `ImageFile`: offsets start at
the partition's first byte, and `size` is the partition's. A request that would cross the
partition's end is EIO (a write: ENOSPC) and never reaches the device below, so a damaged
filesystem cannot read or change a neighbour's bytes. The window owns the device below:
closing it closes the whole stack.
"""

from __future__ import annotations

import errno
from typing import Protocol

from uvfs._api import FSError


class BlockDevice(Protocol):
    """What drivers use of an image: `ImageFile`'s surface."""

    path: str
    size: int
    writable: bool
    sector_size: int

    def read_sync(self, offset: int, size: int) -> bytes: ...
    async def read(self, offset: int, size: int) -> bytes: ...
    def write_sync(self, offset: int, data: bytes) -> None: ...
    async def write(self, offset: int, data: bytes) -> None: ...
    async def sync(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> BlockDevice: ...
    def __exit__(self, *exc: object) -> None: ...


class Window:
    """Bytes [`start`, `start` + `size`) of `device`, seen as a device of their own.

    Args:
        device: the device below (owned: closed with the window).
        start: the first byte, in `device`.
        size: the length in bytes.
        path: the name messages use, e.g. ``disk.img partition 2``.
    """

    def __init__(self, device: BlockDevice, start: int, size: int, path: str) -> None:
        self.device = device
        self.start = start
        self.size = size
        self.path = path
        self.writable = device.writable
        self.sector_size = device.sector_size

    def _check(self, offset: int, size: int, code: int) -> None:
        if offset < 0 or offset + size > self.size:
            raise FSError(code, f"{self.path}: {size} bytes at {offset} run past the partition")

    def read_sync(self, offset: int, size: int) -> bytes:
        self._check(offset, size, errno.EIO)
        return self.device.read_sync(self.start + offset, size)

    async def read(self, offset: int, size: int) -> bytes:
        self._check(offset, size, errno.EIO)
        return await self.device.read(self.start + offset, size)

    def write_sync(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data), errno.ENOSPC)
        self.device.write_sync(self.start + offset, data)

    async def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data), errno.ENOSPC)
        await self.device.write(self.start + offset, data)

    async def sync(self) -> None:
        await self.device.sync()

    def close(self) -> None:
        self.device.close()

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
