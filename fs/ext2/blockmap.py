"""Logical -> physical block mapping: runs, and the classic ext2 indirect block map.

A file's blocks are found through i_block: 12 direct pointers, then one single, one
double and one triple indirect block, each indirect block an array of block_size / 4
pointers. Pointer 0 is a hole (reads as zeros), at any level: a zero double-indirect
pointer is a hole of per_block^2 blocks. The structure fixes the depth, so a walk reads at
most three indirect blocks per leaf array.

Both maps (this one and `extents`) answer a range of logical blocks with `Run`s: maximal
stretches that are contiguous on disk, or holes, so the caller can read N contiguous
blocks with one I/O. The walk does its I/O through a `ReadBlock` callback (the filesystem
layer's cached metadata reader); everything else here is pure.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import numpy as np

from uvfs import FSError

EXT2_NDIR_BLOCKS = 12
EXT2_IND_BLOCK = 12
EXT2_DIND_BLOCK = 13
EXT2_TIND_BLOCK = 14

ReadBlock = Callable[[int], Awaitable[bytes]]

_SMALL = 8  # up to this many pointers, a Python loop beats numpy's per-call overhead


class Run(NamedTuple):
    """`count` logical blocks from `logical` stored at `physical` on; 0 means a hole."""

    logical: int
    physical: int
    count: int


def append_run(runs: list[Run], run: Run) -> None:
    """Append `run`, merging it into the last run when the two are contiguous."""
    if runs:
        last = runs[-1]
        if last.logical + last.count == run.logical and (
            (last.physical == 0 and run.physical == 0)
            or (last.physical and last.physical + last.count == run.physical)
        ):
            runs[-1] = Run(last.logical, last.physical, last.count + run.count)
            return
    runs.append(run)


def append_pointers(runs: list[Run], logical: int, ptrs: np.ndarray) -> None:
    """Append the runs of an array of block pointers, the first one for block `logical`."""
    n = len(ptrs)
    if n <= _SMALL:
        for i, ptr in enumerate(ptrs.tolist()):
            append_run(runs, Run(logical + i, ptr, 1))
        return
    p = ptrs.astype(np.int64)
    first = int(p[0])
    if first and int(p[-1]) - first == n - 1 and bool((np.diff(p) == 1).all()):
        append_run(runs, Run(logical, first, n))  # the common case: one contiguous stretch
        return
    same_run = ((p[1:] == p[:-1] + 1) & (p[:-1] != 0)) | ((p[1:] == 0) & (p[:-1] == 0))
    breaks = np.flatnonzero(~same_run) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [n]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        append_run(runs, Run(logical + s, int(p[s]), e - s))


def max_indirect_blocks(per_block: int) -> int:
    """How many logical blocks an indirect map can address."""
    return EXT2_NDIR_BLOCKS + per_block + per_block**2 + per_block**3


def indirect_path(logical: int, per_block: int) -> tuple[int, ...]:
    """The i_block slot then the index at each indirect level leading to block `logical`.

    Raises:
        FSError: EIO when `logical` is beyond what the map can address.
    """
    if logical < EXT2_NDIR_BLOCKS:
        return (logical,)
    rel = logical - EXT2_NDIR_BLOCKS
    for slot, depth in ((EXT2_IND_BLOCK, 1), (EXT2_DIND_BLOCK, 2), (EXT2_TIND_BLOCK, 3)):
        span = per_block**depth
        if rel < span:
            digits = []
            for _ in range(depth):
                rel, digit = divmod(rel, per_block)
                digits.append(digit)
            return (slot, *reversed(digits))
        rel -= span
    raise FSError(errno.EIO, f"block {logical} is beyond the reach of an indirect map")


def _checked(ptrs: np.ndarray, blocks_count: int) -> np.ndarray:
    """`ptrs`, once each is known to be a hole or a block inside the filesystem."""
    # A small read maps one pointer or a few, where numpy's cost per call (a comparison and
    # an any(): ~4 us) was a sixth of the driver's time on a cached 4 KiB read.
    top = max(ptrs.tolist(), default=0) if len(ptrs) < 32 else int(ptrs.max(initial=0))
    if top >= blocks_count:
        raise FSError(errno.EIO, "block pointer beyond the end of the filesystem")
    return ptrs


async def map_indirect(
    i_block: bytes,
    first: int,
    count: int,
    *,
    block_size: int,
    blocks_count: int,
    read_block: ReadBlock,
) -> list[Run]:
    """The runs covering logical blocks [first, first + count) of an indirect-mapped file.

    Raises:
        FSError: EIO for a pointer past the filesystem or a block past the map's reach.
    """
    per = block_size // 4
    root = np.frombuffer(i_block, dtype="<u4")
    runs: list[Run] = []
    lblk, end = first, first + count
    while lblk < end:
        path = indirect_path(lblk, per)
        if len(path) == 1:
            stop = min(end, EXT2_NDIR_BLOCKS)
            append_pointers(runs, lblk, _checked(root[lblk:stop], blocks_count))
            lblk = stop
            continue
        digits = path[1:]
        ptr = int(_checked(root[path[0] : path[0] + 1], blocks_count)[0])
        for level in range(len(digits)):
            if ptr == 0:
                # A hole swallows the rest of this pointer's subtree.
                inside = 0
                for digit in digits[level:]:
                    inside = inside * per + digit
                stop = min(end, lblk + per ** (len(digits) - level) - inside)
                append_run(runs, Run(lblk, 0, stop - lblk))
                break
            ptrs = np.frombuffer(await read_block(ptr), dtype="<u4")
            index = digits[level]
            if level == len(digits) - 1:
                stop = min(end, lblk + per - index)
                leaf = _checked(ptrs[index : index + stop - lblk], blocks_count)
                append_pointers(runs, lblk, leaf)
                break
            ptr = int(_checked(ptrs[index : index + 1], blocks_count)[0])
        lblk = stop
    return runs
