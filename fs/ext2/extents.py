"""The ext4 extent tree: header, index and leaf records, and the walk from logical to physical.

A file with EXT4_EXTENTS_FL keeps in i_block a 12-byte `ext4_extent_header` and four
12-byte entries; a node of depth 0 holds extents (logical start, length, physical start),
a deeper node holds indexes (logical start, child block). Index i covers logical blocks from
its ei_block up to the next index's. A leaf extent longer than 32768 is "uninitialized":
allocated but never written, it reads as zeros.

Every node is checked before use (magic, entry counts within eh_max and the node's bytes,
depth one less than its parent's and at most 5, starts strictly increasing, extents not
overlapping, physical blocks inside the filesystem), and each child is clipped to its
parent index's range, so the runs come out sorted and disjoint and a walk over N blocks
visits at most N + 1 children per node, whatever the tree says.
"""

from __future__ import annotations

import errno

import numpy as np
from construct import Int16ul, Int32ul, Struct
from uvfs_fs.ext2.blockmap import ReadBlock, Run, append_run

from uvfs._api import FSError

EXT4_EXT_MAGIC = 0xF30A
EXT4_MAX_EXTENT_DEPTH = 5
EXT_INIT_MAX_LEN = 1 << 15  # longer ee_len values mean uninitialized, length - 2^15

# fmt: off
ext4_extent_header = Struct(
    "eh_magic" / Int16ul,                   # 0x0
    "eh_entries" / Int16ul,                 # 0x2
    "eh_max" / Int16ul,                     # 0x4
    "eh_depth" / Int16ul,                   # 0x6
    "eh_generation" / Int32ul,              # 0x8
).compile()

ext4_extent = Struct(
    "ee_block" / Int32ul,                   # 0x0 first logical block
    "ee_len" / Int16ul,                     # 0x4
    "ee_start_hi" / Int16ul,                # 0x6
    "ee_start_lo" / Int32ul,                # 0x8
).compile()

ext4_extent_idx = Struct(
    "ei_block" / Int32ul,                   # 0x0 first logical block covered
    "ei_leaf_lo" / Int32ul,                 # 0x4 child node block
    "ei_leaf_hi" / Int16ul,                 # 0x8
    "ei_unused" / Int16ul,                  # 0xa
).compile()
# fmt: on

# The same records as numpy dtypes, to decode a node's entries in one call.
_EXTENT_DTYPE = np.dtype(
    [("ee_block", "<u4"), ("ee_len", "<u2"), ("ee_start_hi", "<u2"), ("ee_start_lo", "<u4")]
)
_INDEX_DTYPE = np.dtype(
    [("ei_block", "<u4"), ("ei_leaf_lo", "<u4"), ("ei_leaf_hi", "<u2"), ("ei_unused", "<u2")]
)
_HEADER_SIZE = 12
_ENTRY_SIZE = 12


def _corrupt(why: str) -> FSError:
    return FSError(errno.EIO, f"extent tree: {why}")


def parse_node(node: bytes) -> tuple[int, np.ndarray]:
    """A checked node's (eh_depth, entries): an extent array at depth 0, else an index array.

    Raises:
        FSError: EIO for bad magic, counts that do not fit the node, or too deep a tree.
    """
    if len(node) < _HEADER_SIZE:
        raise _corrupt("node shorter than its header")
    h = ext4_extent_header.parse(node[:_HEADER_SIZE])
    if h.eh_magic != EXT4_EXT_MAGIC:
        raise _corrupt(f"bad magic {h.eh_magic:#x}")
    if h.eh_entries > h.eh_max or _HEADER_SIZE + _ENTRY_SIZE * h.eh_max > len(node):
        raise _corrupt(f"{h.eh_entries} of {h.eh_max} entries in a {len(node)}-byte node")
    if h.eh_depth > EXT4_MAX_EXTENT_DEPTH:
        raise _corrupt(f"depth {h.eh_depth}")
    dtype = _INDEX_DTYPE if h.eh_depth else _EXTENT_DTYPE
    entries = np.frombuffer(node, dtype=dtype, count=h.eh_entries, offset=_HEADER_SIZE)
    return h.eh_depth, entries


async def map_extents(
    i_block: bytes,
    first: int,
    count: int,
    *,
    blocks_count: int,
    read_block: ReadBlock,
) -> list[Run]:
    """The runs covering logical blocks [first, first + count) of an extent-mapped file.

    Uninitialized extents and gaps between extents come back as holes.

    Raises:
        FSError: EIO for any inconsistency in the nodes visited.
    """
    end = first + count
    data: list[Run] = []

    async def walk(node: bytes, depth: int | None, lo: int, hi: int) -> None:
        node_depth, entries = parse_node(node)
        if depth is not None and node_depth != depth:
            raise _corrupt(f"node of depth {node_depth} where {depth} was due")
        starts = entries["ei_block" if node_depth else "ee_block"].astype(np.int64)
        if (np.diff(starts) <= 0).any():
            raise _corrupt("entries out of order")
        # The last entry starting at or before `first` is the first one that can matter.
        i = max(int(np.searchsorted(starts, max(lo, first), side="right")) - 1, 0)
        if node_depth:
            leaves = entries["ei_leaf_lo"].astype(np.int64) | (
                entries["ei_leaf_hi"].astype(np.int64) << 32
            )
            for j in range(i, len(entries)):
                child_lo = max(lo, int(starts[j]))
                child_hi = min(hi, int(starts[j + 1]) if j + 1 < len(entries) else hi)
                if child_lo >= min(hi, end):
                    break
                if child_hi <= max(lo, first):
                    continue
                leaf = int(leaves[j])
                if not 0 < leaf < blocks_count:
                    raise _corrupt(f"index points at block {leaf}")
                await walk(await read_block(leaf), node_depth - 1, child_lo, child_hi)
            return
        lengths = entries["ee_len"].astype(np.int64)
        uninit = lengths > EXT_INIT_MAX_LEN
        lengths = np.where(uninit, lengths - EXT_INIT_MAX_LEN, lengths)
        phys = entries["ee_start_lo"].astype(np.int64) | (
            entries["ee_start_hi"].astype(np.int64) << 32
        )
        if (lengths == 0).any() or (starts[:-1] + lengths[:-1] > starts[1:]).any():
            raise _corrupt("empty or overlapping extents")
        if ((phys == 0) | (phys + lengths > blocks_count)).any():
            raise _corrupt("extent outside the filesystem")
        for j in range(i, len(entries)):
            s = max(lo, first, int(starts[j]))
            t = min(hi, end, int(starts[j] + lengths[j]))
            if s >= min(hi, end):
                break
            if s < t:
                physical = 0 if uninit[j] else int(phys[j] + s - starts[j])
                append_run(data, Run(s, physical, t - s))

    await walk(i_block, None, 0, 1 << 32)
    runs: list[Run] = []
    cursor = first
    for run in data:
        if run.logical > cursor:
            append_run(runs, Run(cursor, 0, run.logical - cursor))
        append_run(runs, run)
        cursor = run.logical + run.count
    if cursor < end:
        append_run(runs, Run(cursor, 0, end - cursor))
    return runs
