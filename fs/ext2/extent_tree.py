"""Editing an ext4 extent tree: the write side of `extents` (sans-I/O but for `collect`).

A file's tree is edited as its list of extents: `collect` reads every node once (the
leaves' extents in order, and the tree's own blocks), `place` maps a range of logical
blocks to new physical ones (overwriting what mapped it, merging with a contiguous
neighbour, splitting extents it cuts), `cut` drops everything from a logical block on
(truncate), and `pack` lays the list out again as the kernel's shapes allow: up to four
extents in i_block (depth 0), else full leaves of (block_size - 12) / 12 extents under
index levels until four entries fit in i_block. So a tree grows a level when its root
fills, and shrinks again when a truncate leaves it small; the node blocks are reused in
order, and only the difference allocated or freed. An edit costs a pass over the file's
extents, which allocation keeps few (a file written in order is one extent per 32768
blocks).

Entries are `Extent` tuples, (first logical block, length, physical start, uninitialized),
as `extents.parse_node` returns them; the on-disk records are `extents`' definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from uvfs_fs.ext2.blockmap import ReadBlock
from uvfs_fs.ext2.extents import (
    EXT4_EXT_MAGIC,
    EXT4_EXT_ROOT_MAX,
    EXT_ENTRY,
    EXT_HEADER,
    EXT_INDEX,
    EXT_INIT_MAX_LEN,
    parse_node,
)

Extent = tuple[int, int, int, bool]
EXT_UNINIT_MAX_LEN = EXT_INIT_MAX_LEN - 1  # the longest uninitialized extent


def empty_root() -> bytes:
    """i_block of a new extent-mapped file: a root leaf with no extents."""
    return EXT_HEADER.struct.pack(EXT4_EXT_MAGIC, 0, EXT4_EXT_ROOT_MAX, 0, 0).ljust(60, b"\0")


async def collect(
    i_block: bytes, *, blocks_count: int, read_block: ReadBlock
) -> tuple[list[Extent], list[int]]:
    """(every extent in logical order, the tree's node blocks in walk order).

    Raises:
        FSError: EIO for a node `extents.parse_node` rejects.
    """
    extents: list[Extent] = []
    nodes: list[int] = []

    async def walk(node: bytes) -> None:
        depth, entries = parse_node(node, blocks_count)
        if not depth:
            extents.extend(entries)  # type: ignore[arg-type]
            return
        for _, child in entries:
            nodes.append(child)
            await walk(await read_block(child))

    await walk(i_block)
    return extents, nodes


def lookup(extents: Sequence[Extent], first: int, count: int) -> list[Extent]:
    """Blocks [first, first + count) as (logical, length, physical, uninitialized) pieces;
    a hole has physical 0."""
    out: list[Extent] = []
    cursor, end = first, first + count
    for logical, length, physical, uninit in extents:
        if logical + length <= cursor:
            continue
        if logical >= end:
            break
        if logical > cursor:
            out.append((cursor, logical - cursor, 0, False))
            cursor = logical
        stop = min(end, logical + length)
        out.append((cursor, stop - cursor, physical + cursor - logical, uninit))
        cursor = stop
    if cursor < end:
        out.append((cursor, end - cursor, 0, False))
    return out


def _clip(extents: Sequence[Extent], lo: int, hi: int) -> list[Extent]:
    """The parts of `extents` outside logical blocks [lo, hi)."""
    out: list[Extent] = []
    for logical, length, physical, uninit in extents:
        end = logical + length
        if end <= lo or logical >= hi:
            out.append((logical, length, physical, uninit))
            continue
        if logical < lo:
            out.append((logical, lo - logical, physical, uninit))
        if end > hi:
            out.append((hi, end - hi, physical + hi - logical, uninit))
    return out


def _merged(extents: list[Extent]) -> list[Extent]:
    """Neighbours contiguous in both logical and physical blocks (and in state) joined, up
    to the longest extent each state allows."""
    out: list[Extent] = []
    for ext in extents:
        if out:
            logical, length, physical, uninit = out[-1]
            limit = EXT_UNINIT_MAX_LEN if uninit else EXT_INIT_MAX_LEN
            if (
                uninit == ext[3]
                and logical + length == ext[0]
                and physical + length == ext[2]
                and length < limit
            ):
                take = min(ext[1], limit - length)
                out[-1] = (logical, length + take, physical, uninit)
                if take == ext[1]:
                    continue
                ext = (ext[0] + take, ext[1] - take, ext[2] + take, ext[3])
        out.append(ext)
    return out


def place(
    extents: Sequence[Extent], logical: int, physical: int, count: int, *, uninit: bool = False
) -> tuple[list[Extent], list[tuple[int, int]]]:
    """Map logical blocks [logical, logical + count) to physical ones from `physical`:
    (the new list, the (physical, count) runs no longer mapped, to free).

    Blocks of an extent mapped where they already are (an uninitialized extent being
    written) are not freed.
    """
    hi = logical + count
    dropped = []
    for lo_, n, phys, _ in lookup(extents, logical, count):
        if phys and phys != physical + lo_ - logical:
            dropped.append((phys, n))
    new = _clip(extents, logical, hi)
    new.append((logical, count, physical, uninit))
    new.sort()
    out: list[Extent] = []
    for ext in new:  # long runs: split to the longest extent allowed
        limit = EXT_UNINIT_MAX_LEN if ext[3] else EXT_INIT_MAX_LEN
        start, left, phys = ext[0], ext[1], ext[2]
        while left:
            take = min(left, limit)
            out.append((start, take, phys, ext[3]))
            start, left, phys = start + take, left - take, phys + take
    return _merged(out), dropped


def cut(extents: Sequence[Extent], keep: int) -> tuple[list[Extent], list[tuple[int, int]]]:
    """Drop every block from logical block `keep` on: (the list left, (physical, count)
    runs freed)."""
    kept: list[Extent] = []
    freed: list[tuple[int, int]] = []
    for logical, length, physical, uninit in extents:
        if logical >= keep:
            freed.append((physical, length))
        elif logical + length > keep:
            kept.append((logical, keep - logical, physical, uninit))
            freed.append((physical + keep - logical, logical + length - keep))
        else:
            kept.append((logical, length, physical, uninit))
    return kept, freed


@dataclass(frozen=True, slots=True)
class Packed:
    """A tree laid out: i_block, and each node block's contents in the order of `nodes`
    (the block numbers they were given)."""

    i_block: bytes
    nodes: list[int]
    contents: list[bytearray]


def nodes_needed(entries: int, per_node: int) -> int:
    """How many node blocks a tree of `entries` extents takes (`pack`'s shape)."""
    total = 0
    while entries > EXT4_EXT_ROOT_MAX:
        entries = -(-entries // per_node)
        total += entries
    return total


def _node(entries: list[tuple], depth: int, eh_max: int, size: int) -> bytearray:
    out = bytearray(size)
    EXT_HEADER.struct.pack_into(out, 0, EXT4_EXT_MAGIC, len(entries), eh_max, depth, 0)
    at = EXT_HEADER.size
    for entry in entries:
        if depth:
            first, child = entry
            EXT_INDEX.pack_into(out, at, first, child & 0xFFFFFFFF, child >> 32, 0)
        else:
            logical, length, physical, uninit = entry
            ee_len = length + EXT_INIT_MAX_LEN if uninit else length
            EXT_ENTRY.pack_into(out, at, logical, ee_len, physical >> 32, physical & 0xFFFFFFFF)
        at += EXT_ENTRY.size
    return out


def pack(extents: Sequence[Extent], block_size: int, blocks: Callable[[int], list[int]]) -> Packed:
    """Lay `extents` out as a tree; `blocks(n)` gives the n node blocks to put it in."""
    per_node = (block_size - EXT_HEADER.size) // EXT_ENTRY.size
    level: list[tuple] = list(extents)
    depth = 0
    numbers: list[int] = []
    contents: list[bytearray] = []
    given = blocks(nodes_needed(len(extents), per_node))
    while len(level) > EXT4_EXT_ROOT_MAX:
        parents: list[tuple] = []
        for i in range(0, len(level), per_node):
            chunk = level[i : i + per_node]
            block = given[len(numbers)]
            numbers.append(block)
            contents.append(_node(chunk, depth, per_node, block_size))
            parents.append((chunk[0][0], block))
        level, depth = parents, depth + 1
    root = _node(level, depth, EXT4_EXT_ROOT_MAX, 60)
    return Packed(bytes(root), numbers, contents)
