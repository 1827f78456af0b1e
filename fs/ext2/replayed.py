"""The image as journal replay leaves it: recovered blocks laid over an image left untouched.

A read-only mount of a volume whose journal needs recovery reads through `ReplayedImage`:
a block device like the image below it, except that each block replay would have written
is read from its newest copy in the journal instead (with the ESCAPE fix-up). The image
itself is never written; the map costs a few dozen bytes per replayed block, and a read
that touches no replayed block is passed through unchanged, in one request.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable

from uvfs import BlockDevice, FSError
from uvfs_fs.ext2.jbd2 import unescape


class ReplayedImage:
    """`device` read as replay would leave it; `BlockDevice`'s surface, read-only.

    Args:
        device: the image below (closing this closes it, as a `Window` does).
        block_size: the filesystem's block size.
        blocks: filesystem block -> (image block of its newest journal copy, tag flags).
    """

    def __init__(
        self, device: BlockDevice, block_size: int, blocks: dict[int, tuple[int, int]]
    ) -> None:
        self.device = device
        self.path = device.path
        self.size = device.size
        self.sector_size = device.sector_size
        self.writable = False
        self.replayed = len(blocks)
        self._bs = block_size
        self._blocks = blocks
        self._sorted = sorted(blocks)

    def _pieces(self, offset: int, size: int) -> list[tuple[int, int, int | None, int, int]]:
        """How to read [offset, offset + size): (device offset, length, flags, lo, hi) each.

        flags is None for bytes read as they are; else the piece is a journal copy, to be
        unescaped with those tag flags and cut to [lo, hi).
        """
        bs, end = self._bs, offset + size
        pieces: list[tuple[int, int, int | None, int, int]] = []
        pos = offset
        while pos < end:
            block = pos // bs
            copy = self._blocks.get(block)
            if copy is not None:
                hi = min(end - block * bs, bs)
                pieces.append((copy[0] * bs, bs, copy[1], pos - block * bs, hi))
                pos = block * bs + hi
                continue
            following = bisect.bisect_right(self._sorted, block)
            stop = end
            if following < len(self._sorted):
                stop = min(end, self._sorted[following] * bs)
            pieces.append((pos, stop - pos, None, 0, stop - pos))
            pos = stop
        return pieces

    @staticmethod
    def _cut(data: bytes, flags: int | None, lo: int, hi: int) -> bytes:
        return data if flags is None else unescape(data, flags)[lo:hi]

    def _assemble(self, offset: int, size: int, read: Callable[[int, int], bytes]) -> bytes:
        return b"".join(
            self._cut(read(where, length), flags, lo, hi)
            for where, length, flags, lo, hi in self._pieces(offset, size)
        )

    def read_sync(self, offset: int, size: int) -> bytes:
        return self._assemble(offset, size, self.device.read_sync)

    async def read(self, offset: int, size: int) -> bytes:
        parts = []
        for where, length, flags, lo, hi in self._pieces(offset, size):
            parts.append(self._cut(await self.device.read(where, length), flags, lo, hi))
        return b"".join(parts)

    def write_sync(self, offset: int, data: bytes) -> None:
        raise FSError(errno.EROFS, f"{self.path}: the journal is replayed in memory only")

    async def write(self, offset: int, data: bytes) -> None:
        self.write_sync(offset, data)

    async def sync(self) -> None:
        """Nothing to sync: nothing is written."""

    def close(self) -> None:
        self.device.close()
