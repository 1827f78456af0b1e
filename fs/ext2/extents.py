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
from bisect import bisect_right
from collections.abc import Callable

from construct import Int16ul, Int32ul, Struct

from uvfs import FSError
from uvfs_fs.ext2.blockmap import ReadBlock, Run, append_run
from uvfs_fs.ext2.record import FastRecord

EXT4_EXT_MAGIC = 0xF30A
EXT4_MAX_EXTENT_DEPTH = 5
EXT_INIT_MAX_LEN = 1 << 15  # longer ee_len values mean uninitialized, length - 2^15
EXT4_EXT_ROOT_MAX = 4  # entries the 60-byte i_block holds after the header
EXT4_EXT_CHECK_DEPTH = 32  # the depth __ext4_ext_check rejects past (a walk stops at 5)

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

EXT_HEADER = FastRecord(ext4_extent_header, "ext4_extent_header")
EXT_ENTRY = FastRecord(ext4_extent, "ext4_extent").struct
EXT_INDEX = FastRecord(ext4_extent_idx, "ext4_extent_idx").struct


def _corrupt(why: str) -> FSError:
    return FSError(errno.EIO, f"extent tree: {why}")


def parse_node(node: bytes, blocks_count: int) -> tuple[int, list[tuple[int, ...]]]:
    """A checked node: (eh_depth, entries).

    Entries are (first logical block, length, physical start, uninitialized) in a leaf and
    (first logical block, child block) in an index node, in increasing logical order.

    Raises:
        FSError: EIO for bad magic, counts that do not fit the node, too deep a tree,
            entries out of order or overlapping, or blocks outside the filesystem.
    """
    if len(node) < EXT_HEADER.size:
        raise _corrupt("node shorter than its header")
    h = EXT_HEADER.unpack(node)
    if h.eh_magic != EXT4_EXT_MAGIC:
        raise _corrupt(f"bad magic {h.eh_magic:#x}")
    if h.eh_entries > h.eh_max or EXT_HEADER.size + EXT_ENTRY.size * h.eh_max > len(node):
        raise _corrupt(f"{h.eh_entries} of {h.eh_max} entries in a {len(node)}-byte node")
    if h.eh_depth > EXT4_MAX_EXTENT_DEPTH:
        raise _corrupt(f"depth {h.eh_depth}")
    raw = node[EXT_HEADER.size : EXT_HEADER.size + EXT_ENTRY.size * h.eh_entries]
    entries: list[tuple[int, ...]] = []
    end = 0  # where the previous entry's blocks end: the next must start at or after
    if h.eh_depth:
        for ei_block, leaf_lo, leaf_hi, _ in EXT_INDEX.iter_unpack(raw):
            child = leaf_lo | leaf_hi << 32
            if entries and ei_block <= entries[-1][0]:
                raise _corrupt("index entries out of order")
            if not 0 < child < blocks_count:
                raise _corrupt(f"index points at block {child}")
            entries.append((ei_block, child))
        return h.eh_depth, entries
    for ee_block, ee_len, start_hi, start_lo in EXT_ENTRY.iter_unpack(raw):
        uninit = ee_len > EXT_INIT_MAX_LEN
        length = ee_len - EXT_INIT_MAX_LEN if uninit else ee_len
        physical = start_lo | start_hi << 32
        if length == 0 or ee_block < end:
            raise _corrupt("empty or overlapping extents")
        if physical == 0 or physical + length > blocks_count:
            raise _corrupt("extent outside the filesystem")
        end = ee_block + length
        entries.append((ee_block, length, physical, uninit))
    return 0, entries


def check_root(i_block: bytes, block_ok: Callable[[int, int], bool]) -> None:
    """The kernel's ext4_ext_check_inode: the root in i_block checked when the inode is
    read, so a bad root makes the inode itself unreadable, not just its data.

    `block_ok(start, count)` says whether blocks may belong to a file (ext4_inode_block_valid).

    Raises:
        FSError: EUCLEAN (EFSCORRUPTED) for a bad magic, eh_max 0 or past 4, more entries
            than eh_max, an empty index root, a depth past 32, or an entry that is empty,
            wraps, overlaps the one before or lies outside the filesystem.
    """
    h = EXT_HEADER.unpack(i_block)

    def bad(why: str) -> FSError:
        return FSError(errno.EUCLEAN, f"extent tree root: {why}")

    if h.eh_magic != EXT4_EXT_MAGIC:
        raise bad(f"bad magic {h.eh_magic:#x}")
    if not 0 < h.eh_max <= EXT4_EXT_ROOT_MAX or h.eh_entries > h.eh_max:
        raise bad(f"{h.eh_entries} of {h.eh_max} entries")
    if h.eh_depth and not h.eh_entries:
        raise bad(f"no entries at depth {h.eh_depth}")
    raw = i_block[EXT_HEADER.size : EXT_HEADER.size + EXT_ENTRY.size * h.eh_entries]
    cur = 0  # entries must not start before the previous one ends (an index: its start + 1)
    if h.eh_depth:
        for ei_block, leaf_lo, leaf_hi, _ in EXT_INDEX.iter_unpack(raw):
            if not block_ok(leaf_lo | leaf_hi << 32, 1) or ei_block < cur:
                raise bad("bad index entry")
            cur = ei_block + 1
    else:
        for ee_block, ee_len, start_hi, start_lo in EXT_ENTRY.iter_unpack(raw):
            length = ee_len - EXT_INIT_MAX_LEN if ee_len > EXT_INIT_MAX_LEN else ee_len
            if not length or ee_block + length >= 1 << 32 or ee_block < cur:
                raise bad("empty, wrapping or overlapping extent")
            if not block_ok(start_lo | start_hi << 32, length):
                raise bad("extent outside the filesystem or on its metadata")
            cur = ee_block + length
    if h.eh_depth > EXT4_EXT_CHECK_DEPTH:
        raise bad(f"depth {h.eh_depth}")


async def map_extents(
    i_block: bytes,
    first: int,
    count: int,
    *,
    blocks_count: int,
    read_block: ReadBlock,
    unwritten: bool = False,
) -> list[Run]:
    """The runs covering logical blocks [first, first + count) of an extent-mapped file.

    Uninitialized extents and gaps between extents come back as holes; with `unwritten`,
    uninitialized extents come back as their blocks (a directory: the kernel reads its
    blocks with ext4_bread, whatever the extent's flag says).

    Raises:
        FSError: EIO for any inconsistency in the nodes visited.
    """
    end = first + count
    data: list[Run] = []

    async def walk(node: bytes, depth: int | None, lo: int, hi: int) -> None:
        node_depth, entries = parse_node(node, blocks_count)
        if depth is not None and node_depth != depth:
            raise _corrupt(f"node of depth {node_depth} where {depth} was due")
        # a child's first entry starts where its parent's index says (ext4_valid_extent_entries)
        if depth is not None and entries and entries[0][0] != lo:
            raise _corrupt(f"node starts at block {entries[0][0]}, its index at {lo}")
        # The last entry starting at or before `first` is the first one that can matter.
        i = max(bisect_right(entries, (max(lo, first), 1 << 64)) - 1, 0)
        stop = min(hi, end)
        if node_depth:
            for j in range(i, len(entries)):
                start, child = entries[j]
                child_lo = max(lo, start)
                child_hi = min(hi, entries[j + 1][0]) if j + 1 < len(entries) else hi
                if child_lo >= stop:
                    break
                if child_hi > max(lo, first):
                    await walk(await read_block(child), node_depth - 1, child_lo, child_hi)
            return
        for start, length, physical, uninit in entries[i:]:
            s = max(lo, first, start)
            if s >= stop:
                break
            t = min(stop, start + length)
            if s < t:
                hole = uninit and not unwritten
                append_run(data, Run(s, 0 if hole else physical + s - start, t - s))

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
