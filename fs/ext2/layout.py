"""A file's read layout (`uvfs.Layout`): its block runs as byte extents of the image.

A regular file's bytes are its data blocks as they are, clipped at i_size; holes (and
uninitialized extents) read as zeros, so they are simply not extents. The filesystem
declines (no layout) where a read is not the image's bytes: inline data, encrypted files,
a journal replayed in memory (`ReplayedImage`), and a writable volume, whose blocks move.
"""

from __future__ import annotations

from collections.abc import Sequence

from uvfs import Extent, Layout
from uvfs_fs.ext2.blockmap import Run


def blocks_spanned(offset: int, end: int, block_size: int) -> tuple[int, int]:
    """The first logical block and the count of blocks bytes [offset, end) touch."""
    first = offset // block_size
    return first, (end - 1) // block_size + 1 - first


def runs_layout(runs: Sequence[Run], block_size: int, start: int, end: int, size: int) -> Layout:
    """The layout of bytes [start, end) of a file of `size` bytes whose blocks over that
    range are `runs` (physical 0: a hole)."""
    extents = []
    for run in runs:
        if not run.physical:
            continue
        first_byte = run.logical * block_size
        lo = max(start, first_byte)
        hi = min(end, first_byte + run.count * block_size)
        if lo < hi:
            extents.append(Extent(lo, hi - lo, 0, run.physical * block_size + lo - first_byte))
    return Layout(start, end, size, tuple(extents))
