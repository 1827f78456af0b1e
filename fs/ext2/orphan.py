"""Orphan cleanup, as the kernel's ext4_orphan_cleanup does it, counted instead of written.

An orphan is an inode the kernel must finish with after a crash: deleted while still open
(no links left: freed whole) or cut short by a truncate still under way (links left: its
blocks past i_size freed). The superblock's s_last_orphan names the first; each orphan's
i_dtime names the next (NEXT_ORPHAN). The kernel processes the list when it mounts the
volume on a device it can write, even for a read-only mount; on a read-only device it
skips it ("write access unavailable"). The driver does it where it stands in for the
first case: a read-only open that replays the journal in memory (the kernel refuses to
replay on a read-only device). Nothing is written: the result is the blocks and inodes
freed, for statfs, and the new i_blocks of each truncated inode, for stat, with the
mtime and ctime ext4_truncate gives it: the time of the cleanup.

With the orphan_file feature, the orphan file's blocks list more orphans, after the
list: each block holds inode numbers (0 for a free slot) and ends with a magic and a
checksum (`orphan_file_entries`). The list stops, as ext4_orphan_get makes it stop, at an
inode number outside [s_first_ino, s_inodes_count], one whose bit is clear in its group's
inode bitmap, one the kernel cannot read, a linked one it cannot truncate (not a file,
directory or slow symlink), or one whose NEXT_ORPHAN is past the inode count; and at a
repeat (the kernel ends a cycle there too: a freed inode's bit is clear, a truncated
one's link is reset). The orphan file's entries refused so are skipped.

The blocks freed are found by walking the block map as ext4_ext_remove_space and
ext4_ind_truncate do: data blocks at or past the cut, and every tree block left without a
mapped block before it. A deleted inode is cut at 0 and also releases its xattr block
(freed with its last reference) and its references to EA inodes (ea_inode: an EA inode
keeps its count in i_ctime's seconds and i_version's low word, and goes with its last).
With bigalloc, clusters are freed whole (but the one the cut splits, if it keeps a
block).
"""

from __future__ import annotations

import errno
import stat
import struct
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from time import time_ns

from uvfs import FSError
from uvfs_fs.ext2.blockmap import EXT2_NDIR_BLOCKS, ReadBlock
from uvfs_fs.ext2.csum import crc32c_le
from uvfs_fs.ext2.extents import parse_node
from uvfs_fs.ext2.inode import EXT4_EXTENTS_FL, Inode

# ro_compat bits the kernel knows (EXT4_FEATURE_RO_COMPAT_SUPP, with read-only): it
# skips the cleanup on a volume with any other, or with read-only, as it could not write
KERNEL_RO_COMPAT = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400 | 0x2000
KERNEL_RO_COMPAT |= 0x8000 | 0x10000
RO_COMPAT_READONLY = 0x1000
EXT4_BG_INODE_UNINIT = 0x0001  # bg_flags: the group's inode bitmap was never written


@dataclass
class Cleanup:
    """What the cleanup frees: blocks (clusters' blocks) and inodes; the i_blocks (512-byte
    units) each truncated inode is left with, and the time ext4_truncate stamps its mtime
    and ctime with (the cleanup's: the mount's)."""

    blocks: int = 0
    inodes: int = 0
    blocks_512: dict[int, int] = field(default_factory=dict)
    stamp_ns: int = 0


def stamp(whole_seconds: bool) -> int:
    """The time now, in ns, as an inode keeps it: whole seconds in a 128-byte inode."""
    now = time_ns()
    return now - now % 1_000_000_000 if whole_seconds else now


async def blocks_past(
    inode: Inode,
    cut: int,
    *,
    block_size: int,
    blocks_count: int,
    read_block: ReadBlock,
    cluster_ratio: int = 1,
    boundary_kept: bool = False,
) -> int:
    """The blocks a truncate of `inode`'s map at logical block `cut` frees: data blocks at
    or past it (uninitialized ones too), and the tree blocks left without a mapped block
    before it. With bigalloc (`cluster_ratio` blocks a cluster) whole clusters are freed:
    each cluster a freed data block lies in, but the one of the cut's logical cluster when
    `boundary_kept` (a block of it before the cut stays mapped), and one per tree block.

    Raises:
        FSError: EIO for a malformed tree (as the walks of `extents` and `blockmap`).
    """
    freed: list[tuple[int, int, int]] = []  # (logical, physical, count) of data
    if inode.flags & EXT4_EXTENTS_FL:
        tree = await _extents_past(inode.i_block, None, cut, blocks_count, read_block, freed)
    else:
        per_block = block_size // 4
        pointers = [int.from_bytes(inode.i_block[i : i + 4], "little") for i in range(0, 60, 4)]
        tree, lo = 0, 0
        for i, ptr in enumerate(pointers):
            level = max(i - EXT2_NDIR_BLOCKS + 1, 0)  # 0: data, 1-3: indirect levels
            if ptr:
                walk = _IndirectWalk(cut, per_block, blocks_count, read_block, freed)
                tree += (await walk.past(ptr, level, lo))[0]
            lo += per_block**level
    if cluster_ratio == 1:
        return tree + sum(count for _, _, count in freed)
    boundary = cut // cluster_ratio if boundary_kept and cut % cluster_ratio else None
    clusters = {
        cluster
        for logical, physical, count in freed
        for cluster in range(physical // cluster_ratio, (physical + count - 1) // cluster_ratio + 1)
        if boundary is None
        or (logical + (cluster * cluster_ratio - physical)) // cluster_ratio != boundary
    }
    return (len(clusters) + tree) * cluster_ratio


async def _extents_past(
    node: bytes,
    depth: int | None,
    cut: int,
    blocks_count: int,
    read_block: ReadBlock,
    freed: list[tuple[int, int, int]],
) -> int:
    """The tree blocks freed below `node`; its data runs freed go to `freed`."""
    node_depth, entries = parse_node(node, blocks_count)
    if depth is not None and node_depth != depth:
        raise FSError(errno.EIO, f"extent tree: node of depth {node_depth} where {depth} was due")
    if not node_depth:
        for start, length, physical, _ in entries:
            first = max(start, cut)
            if first < start + length:
                freed.append((first, physical + first - start, start + length - first))
        return 0
    tree = 0
    for i, (start, child) in enumerate(entries):
        end = entries[i + 1][0] if i + 1 < len(entries) else 1 << 32
        if end > cut:  # a child starting at or past the cut goes whole, its block too
            below = await read_block(child)
            tree += await _extents_past(below, node_depth - 1, cut, blocks_count, read_block, freed)
            tree += start >= cut
    return tree


class _IndirectWalk:
    """ext4_ind_truncate's frees below one pointer of the classic block map."""

    def __init__(
        self,
        cut: int,
        per_block: int,
        blocks_count: int,
        read_block: ReadBlock,
        freed: list[tuple[int, int, int]],
    ) -> None:
        self.cut, self.per_block, self.blocks_count = cut, per_block, blocks_count
        self.read_block, self.freed = read_block, freed

    async def past(self, ptr: int, level: int, lo: int) -> tuple[int, bool]:
        """(indirect blocks freed, whether `ptr` stays) for a pointer of `level` (0: data)
        mapping logical blocks from `lo`; freed data goes to `freed`."""
        if lo + self.per_block**level <= self.cut:
            return 0, True
        if not level:
            self.freed.append((lo, ptr, 1))
            return 0, False
        if not 0 < ptr < self.blocks_count:
            raise FSError(errno.EIO, f"indirect block {ptr} outside the filesystem")
        block = await self.read_block(ptr)
        tree, stays = 0, False
        span = self.per_block ** (level - 1)
        for i in range(self.per_block):
            child = int.from_bytes(block[4 * i : 4 * i + 4], "little")
            if child:
                t, s = await self.past(child, level - 1, lo + i * span)
                tree, stays = tree + t, stays or s
        return tree + (not stays), stays


def can_truncate(inode: Inode, fast_symlink: bool) -> bool:
    """ext4_can_truncate: a file, a directory or a slow symlink."""
    mode = stat.S_IFMT(inode.mode)
    return mode in (stat.S_IFREG, stat.S_IFDIR) or (mode == stat.S_IFLNK and not fast_symlink)


async def clean_orphans(
    first: int,
    listed: Sequence[int],
    *,
    first_ino: int,
    inodes_count: int,
    read_orphan: Callable[[int], Awaitable[Inode | None]],
    has_blocks: Callable[[Inode], bool],
    blocks_past: Callable[[Inode, int], Awaitable[int]],
    xattr_refcount: Callable[[int], Awaitable[int]],
    value_inodes: Callable[[Inode, bool], Awaitable[list[int]]],
    ea_inode: Callable[[int], Awaitable[tuple[Inode, int] | None]],
    block_size: int,
    stamp_ns: int,
) -> Cleanup:
    """Count what the cleanup of the orphan list from inode `first`, then of the orphan
    file's entries `listed`, frees. The list ends at the first orphan refused or failing
    (ext4_orphan_get, or a truncate putting the volume in error); an orphan file entry
    refused or failing is skipped.

    Args:
        read_orphan: the inode if the kernel's ext4_orphan_get would return it (in use in
            its bitmap, readable, links 0 allowed, truncatable if linked), else None.
        has_blocks: whether the inode's i_block is a block map (not inline data, a fast
            symlink or a device number).
        blocks_past: `blocks_past` for an inode and a cut.
        xattr_refcount: the h_refcount of an xattr block.
        value_inodes: the EA inodes an inode's attributes name: in the inode, and in its
            block if that is freed with it (ext4_xattr_inode_dec_ref_all).
        ea_inode: an EA inode and its reference count, or None if the kernel cannot
            read it (ext4_xattr_inode_iget): skipped.
        stamp_ns: the truncated inodes' new mtime and ctime (`stamp`).
    """
    done = Cleanup(stamp_ns=stamp_ns)
    refs: dict[int, int] = {}  # xattr blocks' references, as the deletions leave them
    ea_refs: dict[int, tuple[Inode, int]] = {}  # EA inodes and their references, likewise
    seen: set[int] = set()

    async def process(ino: int) -> Inode | None:
        """Clean orphan `ino` up; the inode, or None when it is refused (or seen)."""
        if ino in seen or not first_ino <= ino <= inodes_count:
            return None
        seen.add(ino)
        inode = await read_orphan(ino)
        if inode is None or inode.dtime > inodes_count:
            return None
        cut = -(-inode.size // block_size) if inode.links_count else 0
        freed = await blocks_past(inode, cut) if has_blocks(inode) else 0
        if inode.links_count:
            done.blocks_512[ino] = max(inode.blocks_512 - freed * (block_size // 512), 0)
        else:
            block_freed = False
            if inode.file_acl:
                if inode.file_acl not in refs:
                    refs[inode.file_acl] = await xattr_refcount(inode.file_acl)
                refs[inode.file_acl] -= 1
                block_freed = refs[inode.file_acl] == 0
                freed += block_freed
            for ea in await value_inodes(inode, block_freed):
                freed += await release(ea)
            done.inodes += 1
        done.blocks += freed
        return inode

    async def release(ino: int) -> int:
        """Drop a reference to EA inode `ino`; the blocks freed with it at the last."""
        if ino not in ea_refs:
            got = await ea_inode(ino)
            if got is None:
                return 0
            ea_refs[ino] = got
        ea, count = ea_refs[ino]
        ea_refs[ino] = ea, count - 1
        if count != 1:
            return 0
        done.inodes += 1
        return await blocks_past(ea, 0) if has_blocks(ea) else 0

    ino = first
    with suppress(FSError):  # a failed truncate: the error state skips the rest of the list
        while ino and (inode := await process(ino)) is not None:
            ino = inode.dtime  # NEXT_ORPHAN
    for ino in listed:
        with suppress(FSError):
            await process(ino)
    return done


EXT4_ORPHAN_BLOCK_MAGIC = 0x0B10CA04


def orphan_file_entries(block: bytes, seed: int | None, blocknr: int) -> list[int] | None:
    """The inode numbers an orphan file block lists, or None when its tail's magic or (with
    `seed`, the orphan file's metadata_csum seed) its checksum is wrong: the kernel then
    fails the mount (ext4_init_orphan_info)."""
    tail = len(block) - 8
    magic, checksum = struct.unpack_from("<II", block, tail)
    if magic != EXT4_ORPHAN_BLOCK_MAGIC:
        return None
    if seed is not None:
        crc = crc32c_le(crc32c_le(seed, blocknr.to_bytes(8, "little")), block[:tail])
        if crc != checksum:
            return None
    return [ino for (ino,) in struct.iter_unpack("<I", block[:tail]) if ino]
