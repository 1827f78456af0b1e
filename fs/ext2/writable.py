"""Read-write ext2, ext3 and ext4: `WritableExt2`, and `DRIVER` to mount it.

Theory of operation
===================

Write-back. File data goes to the image as soon as it is written, into blocks allocated
for it; every metadata change (bitmaps, group descriptors, inode tables, directory and
indirect blocks, the superblock's counters) is made in memory and written back by
`_flush`: on fsync, at unmount, and after a request once `FLUSH_SECONDS` have passed or
`DIRTY_LIMIT` bytes are waiting.

ext2 (no journal): a flush first makes the data durable (fdatasync), then writes the
metadata in block order, then syncs again: data before the metadata that points at it, so
after a crash every pointer on disk leads to data that was written, and e2fsck -fy has
only orphans and counts to fix.

ext3 (has_journal): a flush is one jbd2 transaction in ordered mode (journaled.py): the
metadata blocks and the superblock are committed to the journal, the file data made
durable by the commit's first barrier, and checkpointed home later; the volume carries
needs_recovery while mounted, so after a crash journal replay alone makes it consistent
(its orphan list then freed). A flush is also kept under a quarter of the log.

Blocks freed since the last flush are not reused until the flush has written the change
that freed them (`_deferred`): otherwise new data could overwrite a block that the
metadata still on disk gives to another file, and a crash would put that data into a
file fsync'd earlier. statfs counts them as free already.

Serialisation. Every request that changes anything holds `_lock` from start to end, and
so does a flush: a flush never sees half a rename. Reads do not take it; they find
either the state before or after a change, because the in-memory structures are updated
between awaits. Metadata blocks live in `_blocks` (a write-back cache: dirty blocks are
pinned until flushed, clean ones evicted least recently used, but only while no change is
running, so a change can hold a block's buffer across awaits).

Space is checked before anything is allocated: a request that cannot get every block
and inode it needs fails with ENOSPC having changed nothing.

Unlinked files still open stay allocated (links 0) until the kernel forgets them
(`forget`), or the unmount; their freeing happens under the lock at the next request.
On a journaled volume they are on the orphan list too, as on ext3, so that after a crash
e2fsck, the kernel or the next writable mount here frees them; on ext2, e2fsck -fy does.

The superblock is marked not clean (s_state) while an ext2 volume is mounted writable; `close`
puts back the state it had at mount time once everything else is on disk, as the kernel
does: clean, unless a volume that needed checking was mounted with ``force``. A journaled
volume keeps its state and has needs_recovery instead, cleared once `close` has
checkpointed the journal.

What is written. Only what this module keeps consistent: ext2 and ext3 volumes made for
Linux (an ext3 journal inside the volume), and ext4 with mke2fs's defaults: metadata
checksums and uninit_bg (every block written is sealed: csum.py), extents (new files get
extent trees, edited as lists by extent_tree.py), 64bit. Other features (quota, bigalloc,
inline_data...) refuse a writable mount and say so; read-only they mount as before.
An htree directory that is changed loses its index flag and is read linearly from then
on, which e2fsck accepts (``e2fsck -D`` rebuilds the index).
Extended attributes of the user, trusted and security namespaces are set in the inode
when it has room, else in the attribute block, which is copied first when other inodes
share it.

Permissions are the kernel's and the broker's (uvfs/_broker.py): the kernel checks modes,
ACLs, sticky directories and ownership before a request arrives, and clears setuid/setgid
on writes and truncation by others; the broker gives new nodes their group in setgid
directories, their inherited ACLs and umask. This module clears setuid/setgid on chown.

Periodic write-back: the broker calls `sync` every few seconds, which flushes what has
waited `FLUSH_SECONDS`, so an idle mount does not keep changes in memory (and checkpoints
its journal once nothing waits). fsync covers the
whole volume (directory entries included), which is also what fsync of a directory
needs.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import numpy as np
import trio
from construct import Container

from uvfs import (
    LRU,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Attr,
    Caller,
    DirEntry,
    FSError,
    ImageFile,
    MemoryBudget,
    MountOptions,
    Refusal,
    SetAttr,
    StatFS,
)
from uvfs_fs.ext2 import Ext2Driver, csum
from uvfs_fs.ext2.alloc import GroupStats, block_groups, orlov_group, other_group
from uvfs_fs.ext2.bitmap import Bitmap
from uvfs_fs.ext2.blockmap import max_indirect_blocks
from uvfs_fs.ext2.bmap import missing_indirect, set_run
from uvfs_fs.ext2.dirent import (
    EXT2_FT_BLKDEV,
    EXT2_FT_CHRDEV,
    EXT2_FT_DIR,
    EXT2_FT_FIFO,
    EXT2_FT_REG_FILE,
    EXT2_FT_SOCK,
    EXT2_FT_SYMLINK,
    dirent_rec_len,
    iter_dirents,
)
from uvfs_fs.ext2.dirops import (
    DirBlock,
    check_name,
    empty_block,
    first_block,
)
from uvfs_fs.ext2.extent_tree import (
    collect,
    cut,
    empty_root,
    lookup,
    nodes_needed,
    pack,
    place,
)
from uvfs_fs.ext2.filesystem import EXT2_ROOT_INO, Ext2FileSystem
from uvfs_fs.ext2.group_desc import (
    decode_group_desc,
    desc_blocks_count,
    desc_location,
    group_first_block,
    group_has_super,
    update_group_desc,
)
from uvfs_fs.ext2.inode import EXT2_INDEX_FL, EXT4_EXTENTS_FL, Inode, decode_inode
from uvfs_fs.ext2.inode_build import blank_slot, encode_inode, encode_rdev
from uvfs_fs.ext2.jbd2 import JournalError
from uvfs_fs.ext2.journaled import MetadataJournal, NotEmpty
from uvfs_fs.ext2.superblock import (
    COMPAT,
    EXT2_GOOD_OLD_REV,
    EXT2_VALID_FS,
    EXT3_FEATURE_INCOMPAT_RECOVER,
    FEATURE_NAMES,
    INCOMPAT,
    RO_COMPAT,
    SUPERBLOCK_OFFSET,
    Geometry,
    ext2_super_block,
)
from uvfs_fs.ext2.truncate import truncate_blocks
from uvfs_fs.ext2.xattr_build import (
    RawEntry,
    build_block,
    build_ibody,
    parse_block_raw,
    parse_ibody_raw,
    split_name,
    stored_value,
)

log = logging.getLogger("uvfs.ext2")

FLUSH_SECONDS = 5.0
DIRTY_LIMIT = 32 << 20  # bytes of dirty metadata that trigger a flush
CLEAN_CACHE_BYTES = 32 << 20
INODE_CACHE_ENTRIES = 16384  # decoded inodes (their table blocks are the truth)

EXT2_LINK_MAX = 32000
FAST_SYMLINK_MAX = 59  # longest target kept in i_block (60 bytes, NUL-terminated)

# What this writer keeps consistent. Anything else set refuses a writable mount.
WRITE_COMPAT_REFUSED = frozenset({"lazy_bg", "snapshot_bitmap", "orphan_file", "fast_commit"})
WRITE_RO_COMPAT = frozenset(
    {"sparse_super", "large_file", "huge_file", "dir_nlink", "extra_isize", "metadata_csum",
     "uninit_bg"}
)  # fmt: skip
WRITE_INCOMPAT = frozenset(
    {"filetype", "meta_bg", "flex_bg", "metadata_csum_seed", "extent", "64bit"}
)

# bg_flags (uninit_bg and metadata_csum): what mke2fs left uninitialised in a group
EXT4_BG_INODE_UNINIT = 0x1  # the inode bitmap reads as zeros
EXT4_BG_BLOCK_UNINIT = 0x2  # the block bitmap is computed from the group's layout

EXT2_OS_LINUX = 0  # s_creator_os


_FILE_TYPES = {
    stat.S_IFREG: EXT2_FT_REG_FILE,
    stat.S_IFDIR: EXT2_FT_DIR,
    stat.S_IFCHR: EXT2_FT_CHRDEV,
    stat.S_IFBLK: EXT2_FT_BLKDEV,
    stat.S_IFIFO: EXT2_FT_FIFO,
    stat.S_IFSOCK: EXT2_FT_SOCK,
    stat.S_IFLNK: EXT2_FT_SYMLINK,
}


def _kill_priv(mode: int) -> int:
    """`mode` without setuid, and without setgid when it means setgid (group-executable)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode


class ReadOnlyVolume(Refusal):
    """The volume can be read but not written here (a feature this writer does not keep)."""


class _Dir:
    """A directory being edited: names -> (inode, logical block), and room per block."""

    __slots__ = ("blocks", "names", "phys", "room", "seed")

    def __init__(self, seed: int | None) -> None:
        self.seed = seed  # metadata_csum: its leaves' checksum seed
        self.names: dict[bytes, tuple[int, int]] = {}
        self.phys: list[int] = []  # physical block of each logical block (0: a hole)
        self.room: list[int] = []  # largest record a new name could take, per block
        self.blocks: list[DirBlock | None] = []  # parsed blocks, None until edited


class WritableExt2(Ext2FileSystem):
    """An ext2 volume mounted read-write: every write-side operation of the driver API.

    Open one with `WritableExt2.load` and `MountOptions(writable=True)`; `close` writes
    everything back and marks the volume clean.
    """

    def __init__(
        self, image: ImageFile, sb: Container, geo: Geometry, memory: MemoryBudget | None = None
    ) -> None:
        super().__init__(image, sb, geo, memory)
        self._writable = False
        self._mount_state = EXT2_VALID_FS  # s_state before we marked the volume in use
        self._lock = trio.Lock()
        self._blocks: OrderedDict[int, bytearray] = OrderedDict()
        self._dirty: set[int] = set()
        self._bitmaps: dict[tuple[str, int], Bitmap] = {}
        self._dirty_bitmaps: set[tuple[str, int]] = set()
        self._dirty_groups: set[int] = set()
        self._deferred: list[int] = []  # blocks freed since the last flush
        self._wdirs: OrderedDict[int, _Dir] = OrderedDict()
        self._icache: LRU[int, Inode] = LRU(INODE_CACHE_ENTRIES)
        # Changed inodes not yet encoded into their table blocks (ino -> inode, fresh slot):
        # a written file changes ~6 times before a flush, and is encoded once.
        self._dirty_inodes: dict[int, tuple[Inode, bool]] = {}
        self._orphans: set[int] = set()  # links 0, maybe still open
        self._forgotten: set[int] = set()  # orphans the kernel let go of: free them
        self._data_written = False
        self._last_flush = time.monotonic()
        self._rng = random.Random()
        self._per_block = geo.block_size // 4
        self._max_blocks = max_indirect_blocks(self._per_block)
        self._group_blocks: list[tuple[int, int, int]] = []  # (block bitmap, inode bitmap, table)
        self._stats = GroupStats([], [], [])
        self._journal: MetadataJournal | None = None  # has_journal: flushes are transactions
        self._bg_flags: list[int] = []  # per group: bg_flags
        self._itable_unused: list[int] = []  # per group: bg_itable_unused
        # uninit_bg or metadata_csum: descriptors carry a checksum and uninit flags
        self._gdt_csum = bool({"uninit_bg", "metadata_csum"} & geo.features)
        # metadata_csum: directory leaves to seal when written (block -> its owner's seed)
        self._to_seal: dict[int, int] = {}
        # extent: new files and directories are extent-mapped, as the kernel makes them
        self._extents = "extent" in geo.features
        self._per_node = (geo.block_size - 12) // 12  # entries of an extent tree block

    @classmethod
    async def load(cls, image: ImageFile, options: MountOptions) -> WritableExt2:
        """Open `image`; when `options.writable`, check it can be written and mark it in use.

        Raises:
            Refusal: the image cannot be read, or cannot be written safely (a feature this
                writer does not keep consistent, a journal that cannot be replayed, errors
                or an unclean state without ``force``). A journal that needs recovery is
                replayed onto the image first, as the kernel and e2fsck do.
        """
        fs = await super().load(image, options)
        assert isinstance(fs, WritableExt2)
        if options.writable:
            await fs._start_writing(options)
        return fs

    async def _start_writing(self, options: MountOptions) -> None:
        sb, geo = self.sb, self.geo
        if not self.image.writable:
            raise Refusal("ext2: the image is open read-only")
        if not sb.s_state & EXT2_VALID_FS and not options.force:
            raise Refusal(
                "ext2 filesystem was not cleanly unmounted: run e2fsck, or mount with force"
            )
        names = geo.features
        refused = sorted(
            (names & WRITE_COMPAT_REFUSED)
            | {n for n in names if _word(n) == RO_COMPAT and n not in WRITE_RO_COMPAT}
            | {n for n in names if _word(n) == INCOMPAT and n not in WRITE_INCOMPAT}
        )
        if refused:
            raise ReadOnlyVolume(
                f"ext2: cannot write a volume with feature(s) {', '.join(refused)}; "
                "mount it read-only (-o ro)"
            )
        if geo.blocks_count >> 32:
            raise ReadOnlyVolume(
                "ext2: cannot write a volume of 2^32 blocks or more (block maps and slow "
                "symlinks hold 32-bit block numbers); mount it read-only (-o ro)"
            )
        if sb.s_creator_os != EXT2_OS_LINUX:
            raise ReadOnlyVolume("ext2: only volumes made for Linux are writable (the inode's osd2 "
                          "fields differ); mount it read-only (-o ro)")  # fmt: skip
        if "has_journal" in names:
            self._journal = await self._open_journal()
        free_b, free_i, dirs = [], [], []
        for group in range(geo.groups_count):
            block, offset = desc_location(geo, group)
            raw = await self._block(block)
            d = decode_group_desc(bytes(raw[offset : offset + geo.desc_size]), geo.desc_size)
            self._group_blocks.append((d.block_bitmap, d.inode_bitmap, d.inode_table))
            self._bg_flags.append(d.flags if self._gdt_csum else 0)
            self._itable_unused.append(d.itable_unused if self._gdt_csum else 0)
            free_b.append(d.free_blocks_count)
            free_i.append(d.free_inodes_count)
            dirs.append(d.used_dirs_count)
        self._stats = GroupStats(free_b, free_i, dirs)
        self._writable = True
        orphans = await self._orphan_list() if self._journal is not None else []
        now = int(time.time())
        self._mount_state = sb.s_state
        if self._journal is None:
            sb.s_state &= ~EXT2_VALID_FS
        else:  # as ext4: the state stays valid, and a crash leaves the journal to replay
            sb.s_feature_incompat |= EXT3_FEATURE_INCOMPAT_RECOVER
        sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xFFFF
        sb.s_mtime = now & 0xFFFFFFFF
        await self._write_super()
        await self.image.sync()
        if orphans:
            for inode in orphans:  # each the head of the list by then
                await self._release_inode(await self._inode(inode.ino))
            await self._flush()

    async def _open_journal(self) -> MetadataJournal:
        inum = self.sb.s_journal_inum
        if not inum or self.sb.s_journal_dev:
            raise Refusal("ext3: external journals are not supported for writing; mount -o ro")
        journal = await self._inode(inum)
        bs = self.geo.block_size
        try:
            runs = await self._map(journal, 0, min(journal.size // bs, self.geo.blocks_count))
            return await MetadataJournal.open(self.image, runs, self.geo)
        except NotEmpty:
            raise Refusal(
                "ext3: the journal is not empty; replay it first (e2fsck, or mount once "
                "with the kernel), or mount read-only (-o ro)"
            ) from None
        except (FSError, JournalError) as e:
            raise Refusal(f"ext3: the journal cannot be written ({e}); run e2fsck") from None

    # --- metadata blocks ------------------------------------------------------------------

    async def _block(self, block: int) -> bytearray:
        """Metadata block `block`, editable; call `_changed` after editing it."""
        buf = self._blocks.get(block)
        if buf is None:
            if not 0 < block < self.geo.blocks_count:
                raise FSError(errno.EIO, f"metadata block {block} outside the filesystem")
            buf = bytearray(await self._read_home(block))
            existing = self._blocks.get(block)  # loaded by another request meanwhile
            if existing is not None:
                return existing
            self._blocks[block] = buf
            if not self._lock.locked():
                self._trim_cache()
        else:
            self._blocks.move_to_end(block)
        return buf

    async def _read_home(self, block: int) -> bytes:
        """Metadata block `block` as the last flush left it: from the journal's committed
        copies until their checkpoint has written them home, else from the image."""
        committed = None if self._journal is None else self._journal.committed(block)
        if committed is not None:
            return committed
        return await self.image.read(block * self.geo.block_size, self.geo.block_size)

    def _new_block(self, block: int, content: bytearray) -> bytearray:
        """Install `content` as the new metadata block `block` (just allocated)."""
        self._blocks[block] = content
        self._changed(block)
        return content

    def _changed(self, block: int) -> None:
        self._dirty.add(block)
        self._blocks.move_to_end(block)  # dirty blocks gather at the young end: no eviction scan

    def _trim_cache(self) -> None:
        limit = max(64, CLEAN_CACHE_BYTES // self.geo.block_size) + len(self._dirty)
        blocks = self._blocks
        while len(blocks) > limit:
            for block in blocks:
                if block not in self._dirty:
                    del blocks[block]
                    break
            else:
                return

    async def _meta_block(self, block: int) -> bytes:
        """The read side's metadata reader, answered from the write-back cache."""
        return bytes(await self._block(block))

    # --- the `bmap.Pointers` store ----------------------------------------------------------

    async def pointers(self, block: int) -> np.ndarray:
        ptrs = np.frombuffer(await self._block(block), dtype="<u4")
        if (ptrs >= self.geo.blocks_count).any():
            raise FSError(errno.EIO, f"indirect block {block} points past the filesystem")
        return ptrs

    def changed(self, block: int) -> None:
        self._changed(block)

    async def new_indirect(self, goal: int) -> int:
        block, _ = await self._alloc_blocks(goal, 1)
        self._new_block(block, bytearray(self.geo.block_size))
        return block

    # --- bitmaps and allocation -----------------------------------------------------------

    async def _bitmap(self, kind: str, group: int) -> Bitmap:
        key = (kind, group)
        bm = self._bitmaps.get(key)
        if bm is None:
            geo = self.geo
            block_bitmap, inode_bitmap, _ = self._group_blocks[group]
            flags = self._bg_flags[group]
            if kind == "b":
                count = min(geo.blocks_per_group, geo.blocks_count - group_first_block(geo, group))
                if flags & EXT4_BG_BLOCK_UNINIT:
                    bm = Bitmap(self._padding(count), count)
                    for start, n in self._own_metadata(group):
                        bm.set_range(start, n)
                else:
                    bm = Bitmap(await self._read_home(block_bitmap), count)
            else:
                count = geo.inodes_per_group
                if flags & EXT4_BG_INODE_UNINIT:
                    bm = Bitmap(self._padding(count), count)
                else:
                    bm = Bitmap(await self._read_home(inode_bitmap), count)
            bm = self._bitmaps.setdefault(key, bm)
        return bm

    def _padding(self, count: int) -> bytes:
        """A bitmap block whose first `count` bits are clear and the rest set (padding)."""
        bits = np.ones(8 * self.geo.block_size, dtype=bool)
        bits[:count] = False
        return np.packbits(bits, bitorder="little").tobytes()

    def _own_metadata(self, group: int) -> list[tuple[int, int]]:
        """(first, count) runs of group `group` (indexes in it) that its superblock copy,
        descriptors and own bitmaps and inode table take: an uninitialised block bitmap,
        as the kernel's ext4_init_block_bitmap computes it."""
        geo = self.geo
        runs = []
        if group_has_super(geo, group):
            table = desc_blocks_count(geo)
            if "meta_bg" in geo.features:
                table = min(table, geo.first_meta_bg)
            runs.append((0, 1 + table + self.sb.s_reserved_gdt_blocks))
        dpb = geo.descs_per_block
        if (
            "meta_bg" in geo.features
            and group >= geo.first_meta_bg * dpb
            and group % dpb in (0, 1, dpb - 1)
        ):
            runs.append((int(group_has_super(geo, group)), 1))
        first = group_first_block(geo, group)
        end = first + geo.blocks_per_group
        itable = -(-geo.inodes_per_group * geo.inode_size // geo.block_size)
        block_bitmap, inode_bitmap, table = self._group_blocks[group]
        for start, n in ((block_bitmap, 1), (inode_bitmap, 1), (table, itable)):
            if first <= start < end:
                runs.append((start - first, min(n, end - start)))
        return runs

    def _mark(self, kind: str, group: int) -> None:
        self._dirty_bitmaps.add((kind, group))
        self._dirty_groups.add(group)

    def _group_of_block(self, block: int) -> int:
        return (block - self.geo.first_data_block) // self.geo.blocks_per_group

    async def _alloc_blocks(self, goal: int, want: int) -> tuple[int, int]:
        """Up to `want` contiguous free blocks, as near `goal` as possible: (first, count)."""
        geo = self.geo
        goal = min(max(goal, geo.first_data_block), geo.blocks_count - 1)
        goal_group = self._group_of_block(goal)
        for group in block_groups(self._stats, goal_group):
            bm = await self._bitmap("b", group)
            base = group_first_block(geo, group)
            start = goal - base if group == goal_group else 0
            found = bm.find_free_run(start, want)
            if found is None and start:
                found = bm.find_free_run(0, want)
            if found is None:
                continue
            index, count = found
            bm.set_range(index, count)
            self._stats.free_blocks[group] -= count
            self._mark("b", group)
            return base + index, count
        raise FSError(errno.ENOSPC)

    def _free_blocks(self, blocks: list[int]) -> None:
        """Give `blocks` back once the next flush has dropped every reference to them."""
        for block in blocks:
            self._blocks.pop(block, None)
            self._dirty.discard(block)
        self._deferred.extend(blocks)

    async def _apply_deferred(self) -> list[int]:
        """Mark the blocks freed since the last flush free; returns them."""
        if not self._deferred:
            return []
        blocks = np.unique(np.array(self._deferred, dtype=np.int64))
        self._deferred = []
        geo = self.geo
        groups = (blocks - geo.first_data_block) // geo.blocks_per_group
        for group in np.unique(groups).tolist():
            mine = blocks[groups == group] - group_first_block(geo, group)
            bm = await self._bitmap("b", group)
            if not bm.bits[mine].all():
                raise FSError(errno.EIO, f"group {group}: freeing blocks already free")
            bm.bits[mine] = False
            self._stats.free_blocks[group] += len(mine)
            self._mark("b", group)
        return blocks.tolist()

    async def _alloc_inode(self, parent: int, is_dir: bool) -> int:
        geo = self.geo
        parent_group = (parent - 1) // geo.inodes_per_group
        if is_dir:
            group = orlov_group(
                self._stats,
                parent_group,
                top_level=parent == EXT2_ROOT_INO,
                inodes_per_group=geo.inodes_per_group,
                blocks_per_group=geo.blocks_per_group,
                rng=self._rng,
            )
        else:
            group = other_group(self._stats, parent_group)
        if group is None:
            raise FSError(errno.ENOSPC)
        bm = await self._bitmap("i", group)
        index = bm.find_free(geo.first_ino - 1 if group == 0 else 0)
        if index is None:
            raise FSError(errno.EIO, f"group {group} counts free inodes its bitmap lacks")
        bm.set_range(index)
        if self._gdt_csum:  # inodes past bg_itable_unused's mark must stay unused
            used = geo.inodes_per_group - self._itable_unused[group]
            self._itable_unused[group] = geo.inodes_per_group - max(used, index + 1)
        self._stats.free_inodes[group] -= 1
        self._stats.used_dirs[group] += is_dir
        self._mark("i", group)
        return group * geo.inodes_per_group + index + 1

    async def _reserve(self, blocks: int, inodes: int = 0) -> None:
        """ENOSPC unless `blocks` blocks and `inodes` inodes can be allocated now."""
        if int(self._stats.free_inodes.sum()) < inodes:
            raise FSError(errno.ENOSPC)
        if int(self._stats.free_blocks.sum()) < blocks and self._deferred:
            await self._flush()  # makes the blocks freed since the last flush usable
        if int(self._stats.free_blocks.sum()) < blocks:
            raise FSError(errno.ENOSPC)

    # --- inodes ---------------------------------------------------------------------------

    async def _inode(self, ino: int) -> Inode:
        """Inode `ino` if in use (or unlinked but still open)."""
        changed = self._dirty_inodes.get(ino)
        inode = self._icache.get(ino) if changed is None else changed[0]
        if inode is None:
            geo = self.geo
            if not 0 < ino <= geo.inodes_count:
                raise FSError(errno.EIO, f"inode number {ino} out of range")
            if self._writable:
                block, offset = self._slot(ino)
                raw = await self._block(block)
                inode = self._decode(ino, bytes(raw[offset : offset + geo.inode_size]))
                self._icache.put(ino, inode)
            else:
                return await super()._inode(ino)
        if inode.links_count == 0 and ino not in self._orphans:
            raise FSError(errno.EIO, f"inode {ino} is not in use")
        return inode

    def _decode(self, ino: int, raw: bytes) -> Inode:
        # Writable volumes have no large_dir (see WRITE_INCOMPAT).
        return decode_inode(
            raw,
            ino,
            huge_file=self._huge_file,
            block_size=self.geo.block_size,
            has_64bit="64bit" in self.geo.features,
        )

    def _slot(self, ino: int) -> tuple[int, int]:
        """(inode table block, byte offset in it) of inode `ino`."""
        geo = self.geo
        group, index = divmod(ino - 1, geo.inodes_per_group)
        block, offset = divmod(index * geo.inode_size, geo.block_size)
        return self._group_blocks[group][2] + block, offset

    async def _put(self, inode: Inode, *, fresh: bool = False) -> Inode:
        """Keep `inode` as changed; `_encode_inodes` writes it into its table slot (over a
        blank slot when `fresh`) at the next flush."""
        before = self._dirty_inodes.get(inode.ino)
        self._dirty_inodes[inode.ino] = (inode, fresh or (before is not None and before[1]))
        self._icache.put(inode.ino, inode)
        return inode

    async def _encode_inodes(self) -> None:
        """Encode every changed inode into its inode-table block."""
        size = self.geo.inode_size
        for inode, fresh in self._dirty_inodes.values():
            block, offset = self._slot(inode.ino)
            raw = await self._block(block)
            old = blank_slot(size) if fresh else bytes(raw[offset : offset + size])
            slot = bytearray(encode_inode(inode, old, huge_file=self._huge_file))
            if self._csum_seed is not None:
                csum.seal_inode(slot, self._csum_seed, inode.ino, inode.generation)
            raw[offset : offset + size] = slot
            self._changed(block)
        self._dirty_inodes.clear()

    async def _new_inode(
        self, parent: Inode, mode: int, caller: Caller, *, i_block: bytes = bytes(60)
    ) -> Inode:
        ino = await self._alloc_inode(parent.ino, stat.S_ISDIR(mode))
        now = time.time_ns()
        blank = self._decode(ino, blank_slot(self.geo.inode_size))
        if self._extents and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            blank = blank._replace(flags=EXT4_EXTENTS_FL)
            i_block = empty_root()
        inode = blank._replace(
            mode=mode,
            uid=caller.uid,
            gid=caller.gid,
            links_count=1,
            atime_ns=now,
            mtime_ns=now,
            ctime_ns=now,
            crtime_ns=now,
            generation=self._rng.getrandbits(32),
            i_block=i_block,
        )
        return await self._put(inode, fresh=True)

    def _ft(self, mode: int) -> int:
        return _FILE_TYPES[stat.S_IFMT(mode)] if self._filetype else 0

    async def _release_inode(self, inode: Inode) -> None:
        """Free an inode with no links left, its blocks and its xattr block."""
        geo = self.geo
        freed: list[int] = []
        if self._has_blocks(inode):
            _, freed, _ = await self._cut_blocks(inode, 0)
        if inode.file_acl:
            freed += await self._drop_xattr_block(inode.file_acl)
        self._free_blocks(freed)
        group, index = divmod(inode.ino - 1, geo.inodes_per_group)
        bm = await self._bitmap("i", group)
        bm.clear_range(index)
        self._stats.free_inodes[group] += 1
        self._stats.used_dirs[group] -= stat.S_ISDIR(inode.mode)
        self._mark("i", group)
        if self._journal is not None:
            await self._orphan_unlist(inode)
        self._orphans.discard(inode.ino)
        self._forgotten.discard(inode.ino)
        self._wdirs.pop(inode.ino, None)
        await self._put(
            inode._replace(
                links_count=0,
                size=0,
                blocks_512=0,
                file_acl=0,
                # An extent root stays, empty, as the kernel's truncate leaves it: e2fsck
                # finds an inode table block of flagged inodes without one insane.
                i_block=empty_root() if inode.flags & EXT4_EXTENTS_FL else bytes(60),
                dtime=int(time.time()) & 0xFFFFFFFF,
            )
        )

    async def _drop_xattr_block(self, block: int) -> list[int]:
        """One reference less to a shared xattr block; the block itself when it was the last."""
        raw = await self._block(block)
        refcount = int.from_bytes(raw[4:8], "little")
        if refcount > 1:
            raw[4:8] = (refcount - 1).to_bytes(4, "little")
            self._xattr_changed(block)
            return []
        return [block]

    def _xattr_changed(self, block: int) -> None:
        """`_changed` for an xattr block, sealed now (metadata_csum): the read side's
        getxattr checks it in the write-back cache."""
        self._changed(block)
        if self._csum_seed is not None:
            csum.seal_xattr_block(self._blocks[block], self._csum_seed, block)

    def _has_blocks(self, inode: Inode) -> bool:
        """Whether i_block maps blocks (not a fast symlink's text or a device number)."""
        if stat.S_ISREG(inode.mode) or stat.S_ISDIR(inode.mode):
            return True
        if stat.S_ISLNK(inode.mode):
            own = inode.blocks_512 - (self.geo.block_size // 512 if inode.file_acl else 0)
            return own > 0
        return False

    async def _unlink_inode(self, inode: Inode, links: int = 1) -> None:
        """Drop `links` links; at zero the inode waits in `_orphans` for the kernel to let go
        (on a journaled volume, on the orphan list too)."""
        left = max(inode.links_count - links, 0)
        dtime = inode.dtime
        if left == 0 and inode.ino not in self._orphans:
            self._orphans.add(inode.ino)
            if self._journal is not None:
                dtime, self.sb.s_last_orphan = self.sb.s_last_orphan, inode.ino
        await self._put(inode._replace(links_count=left, ctime_ns=time.time_ns(), dtime=dtime))

    # --- the orphan list (journaled volumes) ------------------------------------------------
    #
    # As ext3 keeps it: s_last_orphan names the newest unlinked inode still open, whose
    # i_dtime names the next one, and so on to 0. Each change is in the same transaction
    # as the unlink or the freeing, so after a crash replay leaves a list that e2fsck (or
    # the next writable mount) frees.

    async def _orphan_unlist(self, inode: Inode) -> None:
        """Take `inode` (about to be freed) off the orphan list."""
        if self.sb.s_last_orphan == inode.ino:
            self.sb.s_last_orphan = inode.dtime
            return
        ino = self.sb.s_last_orphan
        for _ in range(len(self._orphans)):
            before = await self._inode(ino)
            if before.dtime == inode.ino:
                await self._put(before._replace(dtime=inode.dtime))
                return
            ino = before.dtime
        raise FSError(errno.EIO, f"inode {inode.ino} is missing from the orphan list")

    async def _orphan_list(self) -> list[Inode]:
        """The inodes a crash left on the orphan list, newest first (the mount frees them,
        as the kernel's does).

        Raises:
            Refusal: the list is damaged, or holds an inode being truncated (links left),
                which e2fsck finishes.
        """
        listed: list[Inode] = []
        ino = self.sb.s_last_orphan
        while ino:
            if not self.geo.first_ino <= ino <= self.geo.inodes_count or ino in self._orphans:
                raise Refusal(f"ext3: the orphan list is damaged at inode {ino}; run e2fsck")
            self._orphans.add(ino)
            inode = await self._inode(ino)
            if inode.links_count or not inode.mode:
                raise Refusal(
                    f"ext3: orphan inode {ino} is still linked or free; run e2fsck -p, "
                    "or mount read-only (-o ro)"
                )
            listed.append(inode)
            ino = inode.dtime
        return listed

    # --- directories ----------------------------------------------------------------------

    async def _dir(self, ino: int) -> _Dir:
        d = self._wdirs.get(ino)
        if d is not None:
            self._wdirs.move_to_end(ino)
            return d
        inode = await self._inode(ino)
        if not stat.S_ISDIR(inode.mode):
            raise FSError(errno.ENOTDIR)
        bs = self.geo.block_size
        if inode.size % bs or inode.size > self.geo.blocks_count * bs:
            raise FSError(errno.EIO, f"directory {ino} of {inode.size} bytes")
        d = _Dir(self._owner_seed(inode))
        for run in await self._map(inode, 0, inode.size // bs):
            for lblk in range(run.logical, run.logical + run.count):
                phys = run.physical + lblk - run.logical if run.physical else 0
                d.phys.append(phys)
                d.blocks.append(None)
                if not phys:
                    d.room.append(0)  # a hole in a directory holds no names, takes none
                    continue
                block = await self._block(phys)
                for child, name, _ in iter_dirents(bytes(block), filetype=self._filetype):
                    if child > self.geo.inodes_count:
                        raise FSError(errno.EIO, f"directory {ino}: entry for inode {child}")
                    d.names.setdefault(name, (child, lblk))
                if d.seed is not None and not csum.has_dir_tail(block):
                    block = bytearray(block)  # the room once a tail is cut (when edited)
                d.room.append(DirBlock(block, tail=d.seed is not None).room())
        self._wdirs[ino] = d
        while len(self._wdirs) > 4096:
            self._wdirs.popitem(last=False)
        return d

    async def _dir_block(self, d: _Dir, lblk: int) -> DirBlock:
        """Block `lblk` of directory `d`, parsed once and kept while its buffer is cached."""
        data = await self._block(d.phys[lblk])
        block = d.blocks[lblk]
        if block is None or block.data is not data:
            block = d.blocks[lblk] = DirBlock(data, tail=d.seed is not None)
        if d.seed is not None:
            self._to_seal[d.phys[lblk]] = d.seed
        return block

    def _owner_seed(self, inode: Inode) -> int | None:
        """metadata_csum: the checksum seed of `inode`'s directory leaves."""
        if self._csum_seed is None:
            return None
        return csum.inode_seed(self._csum_seed, inode.ino, inode.generation)

    async def _dir_need(self, dir_inode: Inode, d: _Dir, name: bytes) -> int:
        """Blocks adding `name` would allocate (0, or 1 and the indirect blocks)."""
        if any(r >= dirent_rec_len(len(name)) for r in d.room):
            return 0
        return 1 + await self._map_need(dir_inode, len(d.phys), 1, 1)

    async def _dir_add(self, dir_ino: int, name: bytes, child: int, mode: int) -> None:
        """Add `name` -> `child`, growing the directory by a block if none has room."""
        d = await self._dir(dir_ino)
        inode = await self._inode(dir_ino)
        need = dirent_rec_len(len(name))
        ft = self._ft(mode)
        blocks_512 = inode.blocks_512
        i_block = inode.i_block
        size = inode.size
        for lblk, free in enumerate(d.room):
            if free >= need:
                block = await self._dir_block(d, lblk)
                if not block.add(child, name, ft):
                    raise FSError(errno.EIO, f"directory {dir_ino}: room count was wrong")
                d.room[lblk] = block.room()
                self._changed(d.phys[lblk])
                break
        else:
            lblk = len(d.phys)
            last = next((p for p in reversed(d.phys) if p), 0)
            goal = last + 1 if last else self._group_goal(dir_ino)
            phys, _ = await self._alloc_blocks(goal, 1)
            tail = d.seed is not None
            data = self._new_block(phys, empty_block(self.geo.block_size, tail=tail))
            block = DirBlock(data, tail=tail)
            if tail:
                self._to_seal[phys] = d.seed
            block.add(child, name, ft)
            i_block, created = await self._map_blocks(inode, [(lblk, phys, 1)])
            d.phys.append(phys)
            d.blocks.append(block)
            d.room.append(block.room())
            size += self.geo.block_size
            blocks_512 += (1 + created) * (self.geo.block_size // 512)
        d.names[name] = (child, lblk)
        now = time.time_ns()
        await self._put(
            inode._replace(
                size=size,
                blocks_512=blocks_512,
                i_block=i_block,
                flags=inode.flags & ~EXT2_INDEX_FL,
                mtime_ns=now,
                ctime_ns=now,
            )
        )

    async def _dir_remove(self, dir_ino: int, name: bytes) -> None:
        d = await self._dir(dir_ino)
        _, lblk = d.names.pop(name)
        block = await self._dir_block(d, lblk)
        if block.remove(name) is None:
            raise FSError(errno.EIO, f"directory {dir_ino}: {name!r} missing from its block")
        d.room[lblk] = block.room()
        self._changed(d.phys[lblk])
        await self._touch_dir(dir_ino)

    async def _dir_retarget(self, dir_ino: int, name: bytes, child: int, mode: int) -> None:
        d = await self._dir(dir_ino)
        _, lblk = d.names[name]
        block = await self._dir_block(d, lblk)
        if not block.retarget(name, child, self._ft(mode)):
            raise FSError(errno.EIO, f"directory {dir_ino}: {name!r} missing from its block")
        d.names[name] = (child, lblk)
        self._changed(d.phys[lblk])
        await self._touch_dir(dir_ino)

    async def _touch_dir(self, dir_ino: int, links: int = 0) -> None:
        inode = await self._inode(dir_ino)
        now = time.time_ns()
        await self._put(
            inode._replace(
                links_count=inode.links_count + links,
                flags=inode.flags & ~EXT2_INDEX_FL,
                mtime_ns=now,
                ctime_ns=now,
            )
        )

    async def _set_parent(self, dir_ino: int, parent: int) -> None:
        d = await self._dir(dir_ino)
        if not d.phys or not d.phys[0]:
            raise FSError(errno.EIO, f"directory {dir_ino} has no first block")
        (await self._dir_block(d, 0)).set_dotdot(parent)
        self._changed(d.phys[0])
        d.names[b".."] = (parent, 0)
        inode = await self._inode(dir_ino)
        if inode.flags & EXT2_INDEX_FL:  # its root block is a plain leaf now
            await self._put(inode._replace(flags=inode.flags & ~EXT2_INDEX_FL))

    # --- block maps: indirect blocks, or an extent tree -----------------------------------

    async def _map_need(self, inode: Inode, first: int, count: int, holes: int) -> int:
        """Map blocks (indirect or extent tree nodes) mapping `holes` new blocks among
        [first, first + count) may allocate: exact for indirect maps, a bound for trees
        (each new piece may add an extent; `holes` also counts the extents converting
        uninitialized ones may add)."""
        if inode.flags & EXT4_EXTENTS_FL:
            extents, nodes = await self._extent_tree(inode)
            return max(0, nodes_needed(len(extents) + holes + 2, self._per_node) - len(nodes))
        i_block = np.frombuffer(bytearray(inode.i_block), dtype="<u4")
        return await missing_indirect(i_block, first, count, self._per_block, self)

    async def _map_blocks(
        self, inode: Inode, runs: list[tuple[int, int, int]]
    ) -> tuple[bytes, int]:
        """Map each (logical, physical, count) of `runs` in `inode`: (its new i_block, map
        blocks added less data blocks it no longer maps)."""
        if not inode.flags & EXT4_EXTENTS_FL:
            pointers = np.frombuffer(bytearray(inode.i_block), dtype="<u4")
            created = 0
            for logical, phys, n in runs:
                created += await set_run(pointers, logical, phys, n, self._per_block, self)
            return pointers.tobytes(), created
        extents, nodes = await self._extent_tree(inode)
        dropped: list[int] = []
        for logical, phys, n in runs:
            extents, gone = place(extents, logical, phys, n)
            dropped += [b for start, k in gone for b in range(start, start + k)]
        self._free_blocks(dropped)
        i_block, delta = await self._store_tree(inode, extents, nodes)
        return i_block, delta - len(dropped)

    async def _cut_blocks(self, inode: Inode, keep: int) -> tuple[bytes, list[int], int]:
        """Unmap blocks from logical block `keep` on: (the new i_block, the data and map
        blocks to free, map blocks among them beyond the data: for `blocks_512`)."""
        if not inode.flags & EXT4_EXTENTS_FL:
            pointers = np.frombuffer(bytearray(inode.i_block), dtype="<u4")
            freed = await truncate_blocks(pointers, keep, self._per_block, self)
            return pointers.tobytes(), freed, 0
        extents, nodes = await self._extent_tree(inode)
        extents, gone = cut(extents, keep)
        freed = [b for start, k in gone for b in range(start, start + k)]
        i_block, delta = await self._store_tree(inode, extents, nodes)
        return i_block, freed, -delta

    async def _extent_tree(self, inode: Inode) -> tuple[list, list[int]]:
        return await collect(
            inode.i_block, blocks_count=self.geo.blocks_count, read_block=self._meta_block
        )

    async def _store_tree(self, inode: Inode, extents: list, old: list[int]) -> tuple[bytes, int]:
        """Lay `extents` out as `inode`'s tree in its `old` node blocks, allocating or
        freeing the difference: (i_block, node blocks added, negative when freed)."""
        need = nodes_needed(len(extents), self._per_node)
        given = old[:need]
        goal = old[-1] + 1 if old else self._group_goal(inode.ino)
        while len(given) < need:
            phys, got = await self._alloc_blocks(goal, need - len(given))
            given += range(phys, phys + got)
            goal = phys + got
        self._free_blocks(old[need:])
        packed = pack(extents, self.geo.block_size, lambda n: given)
        seed = self._owner_seed(inode)
        for block, content in zip(packed.nodes, packed.contents, strict=True):
            if seed is not None:  # sealed now: reads check it in the write-back cache
                csum.seal_extent_block(content, seed, self._per_node)
            if self._blocks.get(block) != content:  # nodes left as they were stay clean
                self._new_block(block, content)
        return packed.i_block, need - len(old)

    def _group_goal(self, ino: int) -> int:
        """Where the blocks of inode `ino` start looking: its group, after the inode table."""
        group = (ino - 1) // self.geo.inodes_per_group
        table = self._group_blocks[group][2]
        itable_blocks = -(-self.geo.inodes_per_group * self.geo.inode_size // self.geo.block_size)
        first = group_first_block(self.geo, group)
        last = first + self.geo.blocks_per_group
        return table + itable_blocks if first <= table < last else first

    async def _lookup_entry(self, parent: int, name: bytes) -> tuple[int, Inode]:
        if len(name) > 255:
            raise FSError(errno.ENAMETOOLONG)
        entry = (await self._dir(parent)).names.get(name)
        if entry is None:
            raise FSError(errno.ENOENT)
        return entry[0], await self._inode(entry[0])

    async def _absent(self, parent: int, name: bytes) -> tuple[Inode, _Dir]:
        """The parent, checked to be a directory without `name`."""
        check_name(name)
        d = await self._dir(parent)
        if name in d.names:
            raise FSError(errno.EEXIST)
        return await self._inode(parent), d

    # --- housekeeping ---------------------------------------------------------------------

    @asynccontextmanager
    async def _change(self) -> AsyncIterator[None]:
        """One change: under the lock, from `_begin` to `_end` (skipped when it fails)."""
        async with self._lock:
            await self._begin()
            yield
            await self._end()

    async def _begin(self) -> None:
        """Start of a change (under the lock): free what the kernel has let go of."""
        for ino in sorted(self._forgotten):
            inode = await self._inode(ino)
            if inode.links_count == 0:
                await self._release_inode(inode)
        self._forgotten.clear()

    async def _end(self) -> None:
        """End of a change (under the lock): flush when due, keep the cache in bounds."""
        blocks = len(self._dirty) + len(self._dirty_bitmaps)
        dirty = blocks * self.geo.block_size + len(self._dirty_inodes) * self.geo.inode_size
        # A transaction stays under its share of the log: count every block it may log.
        logged = blocks + len(self._dirty_inodes) + len(self._dirty_groups) + 1
        if (
            dirty > DIRTY_LIMIT
            or (self._journal is not None and logged > self._journal.max_blocks)
            or time.monotonic() - self._last_flush > FLUSH_SECONDS
        ):
            await self._flush()
        self._trim_cache()

    def _super_bytes(self) -> bytes:
        """The superblock as written now (its write time set, sealed)."""
        self.sb.s_wtime = int(time.time()) & 0xFFFFFFFF
        raw = bytearray(ext2_super_block.build(self.sb))
        if self._csum_seed is not None:
            csum.seal_superblock(raw)
        return bytes(raw)

    async def _write_super(self) -> None:
        """Write the superblock in place (outside the journal: mount and unmount only, when
        a journaled volume's journal is empty)."""
        await self.image.write(SUPERBLOCK_OFFSET, self._super_bytes())

    def _count_into_super(self) -> None:
        pending = len(self._deferred)
        free = int(self._stats.free_blocks.sum()) + pending
        self.sb.s_free_blocks_count = free & 0xFFFFFFFF
        if "64bit" in self.geo.features:
            self.sb.s_free_blocks_hi = free >> 32
        self.sb.s_free_inodes_count = int(self._stats.free_inodes.sum())

    async def _flush(self) -> None:
        """Write every change back: data made durable first, then metadata, then the sync;
        on a journaled volume, the metadata is one transaction (journaled.py)."""
        freed = await self._apply_deferred()
        await self._encode_inodes()
        geo = self.geo
        writes: dict[int, bytes] = {}
        bitmap_csums: dict[tuple[str, int], int] = {}
        for kind, group in self._dirty_bitmaps:
            where = self._group_blocks[group][0 if kind == "b" else 1]
            writes[where] = self._bitmaps[kind, group].to_block()
            # Written now: the group's bitmap is initialised from here on.
            uninit = EXT4_BG_BLOCK_UNINIT if kind == "b" else EXT4_BG_INODE_UNINIT
            self._bg_flags[group] &= ~uninit
            if self._csum_seed is not None:
                live = (geo.blocks_per_group if kind == "b" else geo.inodes_per_group) // 8
                bitmap_csums[kind, group] = csum.bitmap_csum(self._csum_seed, writes[where][:live])
        self._dirty_bitmaps.clear()
        for group in sorted(self._dirty_groups):
            await self._write_desc(group, bitmap_csums)
        self._dirty_groups.clear()
        self._seal_blocks()
        for block in self._dirty:
            writes[block] = bytes(self._blocks[block])
        self._dirty.clear()
        self._count_into_super()
        if self._journal is not None:
            if writes or freed:  # the commit's first barrier makes the file data durable too
                await self._journal.commit(writes, freed, self._super_bytes())
            elif self._data_written:
                await self.image.sync()
        else:
            if self._data_written:
                await self.image.sync()
            await self._write_runs(
                [(block * geo.block_size, data) for block, data in writes.items()]
            )
            await self._write_super()
            await self.image.sync()
        self._data_written = False
        self._last_flush = time.monotonic()

    async def _write_desc(self, group: int, bitmap_csums: dict[tuple[str, int], int]) -> None:
        """Put group `group`'s counts, flags and (new) bitmap checksums into its
        descriptor, and seal it."""
        block, offset = desc_location(self.geo, group)
        raw = await self._block(block)
        size = self.geo.desc_size
        values = {
            "free_blocks_count": int(self._stats.free_blocks[group]),
            "free_inodes_count": int(self._stats.free_inodes[group]),
            "used_dirs_count": int(self._stats.used_dirs[group]),
        }
        if self._gdt_csum:
            values |= {"flags": self._bg_flags[group], "itable_unused": self._itable_unused[group]}
        if ("b", group) in bitmap_csums:
            values["block_bitmap_csum"] = bitmap_csums["b", group]
        if ("i", group) in bitmap_csums:
            values["inode_bitmap_csum"] = bitmap_csums["i", group]
        update_group_desc(raw, offset, size, **values)
        if self._gdt_csum:
            checksum = csum.group_desc_csum(
                raw[offset : offset + size], group, seed=self._csum_seed, uuid=self.sb.s_uuid
            )
            raw[offset + csum.BG_CHECKSUM : offset + csum.BG_CHECKSUM + 2] = checksum.to_bytes(
                2, "little"
            )
        self._changed(block)

    def _seal_blocks(self) -> None:
        """metadata_csum: seal the directory leaves about to be written (once per flush,
        however often they changed; the write side reads them unchecked meanwhile)."""
        for block, owner_seed in self._to_seal.items():
            data = self._blocks.get(block)
            if data is not None and block in self._dirty:  # else freed since
                csum.seal_dir_block(data, owner_seed)
        self._to_seal.clear()

    # --- reading ----------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attr:
        if not self._writable:
            return await super().lookup(parent, name)
        _, inode = await self._lookup_entry(parent, name)
        return self._attr(inode)

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        if not self._writable:
            return await super().readdir(ino)
        d = await self._dir(ino)
        return [
            DirEntry(name, self._attr(await self._inode(child)))
            for name, (child, _) in list(d.names.items())
            if name not in (b".", b"..")
        ]

    async def statfs(self) -> StatFS:
        if self._writable:
            async with self._lock:
                await self._begin()  # unlinked inodes the kernel let go of count as free
                self._count_into_super()
        return await super().statfs()

    # --- files ----------------------------------------------------------------------------

    async def open(self, ino: int, flags: int, caller: Caller) -> int:
        """Open `ino`; O_TRUNC on a writable open empties it (the kernel leaves that to us)."""
        if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
            async with self._change():
                inode = await self._inode(ino)
                if stat.S_ISREG(inode.mode) and inode.size:
                    await self._truncate(inode, 0, kill=caller.uid != 0)
        return 0

    def _max_size(self) -> int:
        bs = self.geo.block_size
        limit = self._max_blocks * bs
        if not self._huge_file:
            limit = min(limit, ((1 << 32) - 1) * 512 // bs * bs - bs * 4)
        if "large_file" not in self.geo.features and self.sb.s_rev_level == EXT2_GOOD_OLD_REV:
            limit = min(limit, (1 << 31) - 1)
        return limit

    def _need_large_file(self, size: int) -> None:
        if size >= 1 << 31 and "large_file" not in self.geo.features:
            self.sb.s_feature_ro_compat |= 0x0002
            self.geo = replace(self.geo, features=self.geo.features | {"large_file"})

    async def write(self, ino: int, handle: int, offset: int, data: bytes) -> int:
        """Write `data` at `offset`: all of it, or nothing and ENOSPC/EFBIG."""
        if not data:
            return 0
        async with self._change():
            inode = await self._inode(ino)
            if not stat.S_ISREG(inode.mode):
                raise FSError(errno.EISDIR if stat.S_ISDIR(inode.mode) else errno.EINVAL)
            end = offset + len(data)
            if end > self._max_size():
                raise FSError(errno.EFBIG)
            await self._write_locked(inode, offset, data)
        return len(data)

    async def _write_locked(self, inode: Inode, offset: int, data: bytes) -> Inode:
        bs = self.geo.block_size
        end = offset + len(data)
        first, last = offset // bs, (end - 1) // bs
        count = last - first + 1
        # (logical, count, physical or 0, in an uninitialized extent), as extent_tree.lookup
        if inode.flags & EXT4_EXTENTS_FL:
            runs = lookup((await self._extent_tree(inode))[0], first, count)
        else:
            runs = [
                (r.logical, r.count, r.physical, False)
                for r in await self._map(inode, first, count)
            ]
        holes = sum(n for _, n, phys, _ in runs if not phys)
        splits = 2 * sum(uninit for *_, uninit in runs)  # extents a conversion may add
        if holes or splits:
            await self._reserve(holes + await self._map_need(inode, first, count, holes + splits))
        # Allocate the holes, each near the block before it.
        placed: list[tuple[int, int, int, bool]] = []  # logical, physical, count, new
        goal = 0
        if first:
            before = await self._map(inode, first - 1, 1)
            goal = before[0].physical + 1 if before[0].physical else 0
        goal = goal or self._group_goal(inode.ino)
        for logical, n, physical, uninit in runs:
            if physical:  # blocks of an uninitialized extent are written whole, as new ones
                placed.append((logical, physical, n, uninit))
                goal = physical + n
                continue
            left = n
            while left:
                phys, got = await self._alloc_blocks(goal, left)
                placed.append((logical, phys, got, True))
                logical, left, goal = logical + got, left - got, phys + got
        # Data first: new blocks whole (zeros around the data), old ones just the bytes.
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(data)
        for logical, phys, n, new in placed:
            lo = max(offset, logical * bs)
            hi = min(end, (logical + n) * bs)
            chunk = view[lo - offset : hi - offset]
            if new:
                head, tail = lo - logical * bs, (logical + n) * bs - hi
                chunk = bytes(head) + bytes(chunk) + bytes(tail) if head or tail else chunk
                pieces.append((phys * bs, chunk))
            else:
                pieces.append((phys * bs + lo - logical * bs, chunk))
        await self._write_data(pieces)
        # Then the pointers and the inode.
        new_runs = [(logical, phys, n) for logical, phys, n, new in placed if new]
        allocated = holes
        i_block, created = await self._map_blocks(inode, new_runs)  # initialized now
        now = time.time_ns()
        self._need_large_file(end)
        return await self._put(
            inode._replace(
                i_block=i_block,
                size=max(inode.size, end),
                blocks_512=inode.blocks_512 + (allocated + created) * (bs // 512),
                mode=inode.mode,
                mtime_ns=now,
                ctime_ns=now,
            )
        )

    async def _write_data(self, pieces: list[tuple[int, bytes | memoryview]]) -> None:
        """Write file data (made durable by the next flush, before any metadata)."""
        await self._write_runs(pieces)
        self._data_written = True

    async def _write_runs(self, pieces: list[tuple[int, bytes | memoryview]]) -> None:
        """Write (byte offset, bytes) pieces, joining those contiguous on disk into one write."""
        pieces.sort(key=lambda p: p[0])
        i = 0
        while i < len(pieces):
            start, first = pieces[i]
            stop = start + len(first)
            parts = [first]
            j = i + 1
            while j < len(pieces) and pieces[j][0] == stop:
                parts.append(pieces[j][1])
                stop += len(pieces[j][1])
                j += 1
            await self.image.write(start, parts[0] if len(parts) == 1 else b"".join(parts))
            i = j

    async def _truncate(self, inode: Inode, size: int, *, kill: bool) -> Inode:
        if size > self._max_size():
            raise FSError(errno.EFBIG)
        bs = self.geo.block_size
        i_block = inode.i_block
        blocks_512 = inode.blocks_512
        if size < inode.size:
            keep = -(-size // bs)
            i_block, freed, tree_delta = await self._cut_blocks(inode, keep)
            self._free_blocks(freed)
            blocks_512 -= (len(freed) + tree_delta) * (bs // 512)
            if size % bs:
                # Bytes past the end of the last block must read as zeros if it grows again.
                runs = await self._map(inode._replace(i_block=i_block), keep - 1, 1)
                tail = size % bs
                if runs[0].physical:
                    await self._write_data([(runs[0].physical * bs + tail, bytes(bs - tail))])
        self._need_large_file(size)
        now = time.time_ns()
        return await self._put(
            inode._replace(
                i_block=i_block,
                size=size,
                blocks_512=blocks_512,
                mode=_kill_priv(inode.mode) if kill else inode.mode,
                mtime_ns=now,
                ctime_ns=now,
            )
        )

    async def release(self, ino: int, handle: int) -> None:
        """Nothing is held per open file: every write already reached the block layer."""

    async def fsync(self, ino: int, handle: int, datasync: bool) -> None:
        """Write everything back (one flush covers every file: there is no per-file state)."""
        async with self._lock:
            await self._begin()
            await self._flush()

    async def sync(self) -> None:
        """Write back what has waited `FLUSH_SECONDS` (the broker asks every few seconds)."""
        if not self._writable:
            return
        async with self._lock:
            waiting = (
                self._dirty or self._dirty_bitmaps or self._dirty_groups or self._data_written
                or self._deferred or self._forgotten
            )  # fmt: skip
            if time.monotonic() - self._last_flush < FLUSH_SECONDS:
                return
            if waiting:
                await self._begin()
                await self._flush()
            elif self._journal is not None and self._journal.live:
                await self._journal.checkpoint()  # idle: the image alone holds everything

    def forget(self, ino: int) -> None:
        """The kernel let go of `ino`: an unlinked inode may now be freed (next request)."""
        if ino in self._orphans:
            self._forgotten.add(ino)

    async def close(self) -> None:
        """Free every unlinked inode, write everything back, restore the volume's state."""
        if not self._writable:
            return
        async with self._lock:
            self._forgotten |= self._orphans
            await self._begin()
            await self._flush()
            if self._journal is not None:
                await self._journal.checkpoint()
                self.sb.s_feature_incompat &= ~EXT3_FEATURE_INCOMPAT_RECOVER
            self.sb.s_state = self._mount_state
            await self._write_super()
            await self.image.sync()
            self._writable = False

    # --- creating names ---------------------------------------------------------------------

    async def _make(
        self,
        parent: int,
        name: bytes,
        mode: int,
        caller: Caller,
        *,
        i_block: bytes = bytes(60),
        extra_blocks: int = 0,
    ) -> Inode:
        """Create inode `name` in `parent` (type and bits in `mode`), checked for space."""
        parent_inode, d = await self._absent(parent, name)
        if parent_inode.links_count == 0:
            raise FSError(errno.ENOENT)  # the directory was removed while open
        await self._reserve(extra_blocks + await self._dir_need(parent_inode, d, name), 1)
        inode = await self._new_inode(parent_inode, mode, caller, i_block=i_block)
        await self._dir_add(parent, name, inode.ino, mode)
        return inode

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, caller: Caller
    ) -> tuple[Attr, int]:
        async with self._change():
            inode = await self._make(parent, name, stat.S_IFREG | (mode & 0o7777), caller)
        return self._attr(inode), 0

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, caller: Caller) -> Attr:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in _FILE_TYPES or kind in (stat.S_IFDIR, stat.S_IFLNK):
            raise FSError(errno.EINVAL)
        i_block = bytes(60)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            i_block = encode_rdev(rdev).ljust(60, b"\0")
        async with self._change():
            inode = await self._make(parent, name, kind | (mode & 0o7777), caller, i_block=i_block)
        return self._attr(inode)

    async def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> Attr:
        async with self._change():
            parent_inode = await self._inode(parent)
            if parent_inode.links_count >= EXT2_LINK_MAX:
                raise FSError(errno.EMLINK)
            inode = await self._make(
                parent, name, stat.S_IFDIR | (mode & 0o7777), caller, extra_blocks=1
            )
            bs = self.geo.block_size
            phys, _ = await self._alloc_blocks(self._group_goal(inode.ino), 1)
            i_block, created = await self._map_blocks(inode, [(0, phys, 1)])
            seed = self._owner_seed(inode)
            block = first_block(
                inode.ino, parent, bs, filetype=self._filetype, tail=seed is not None
            )
            self._new_block(phys, block)
            if seed is not None:
                self._to_seal[phys] = seed
            inode = await self._put(
                inode._replace(
                    links_count=2,
                    size=bs,
                    blocks_512=(1 + created) * (bs // 512),
                    i_block=i_block,
                )
            )
            await self._touch_dir(parent, links=1)
        return self._attr(inode)

    async def symlink(self, parent: int, name: bytes, target: bytes, caller: Caller) -> Attr:
        bs = self.geo.block_size
        if len(target) >= bs:
            raise FSError(errno.ENAMETOOLONG)
        mode = stat.S_IFLNK | 0o777
        async with self._change():
            if len(target) <= FAST_SYMLINK_MAX:
                fast = target.ljust(60, b"\0")
                inode = await self._make(parent, name, mode, caller, i_block=fast)
                inode = await self._put(inode._replace(size=len(target)))
            else:
                inode = await self._make(parent, name, mode, caller, extra_blocks=1)
                phys, _ = await self._alloc_blocks(self._group_goal(inode.ino), 1)
                await self._write_data([(phys * bs, target.ljust(bs, b"\0"))])
                inode = await self._put(
                    inode._replace(
                        size=len(target),
                        blocks_512=bs // 512,
                        i_block=phys.to_bytes(4, "little") + bytes(56),
                    )
                )
        return self._attr(inode)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        async with self._change():
            inode = await self._inode(ino)
            if stat.S_ISDIR(inode.mode):
                raise FSError(errno.EPERM)
            if inode.links_count >= EXT2_LINK_MAX:
                raise FSError(errno.EMLINK)
            if inode.links_count == 0:
                raise FSError(errno.ENOENT)
            parent_inode, d = await self._absent(new_parent, new_name)
            await self._reserve(await self._dir_need(parent_inode, d, new_name))
            await self._dir_add(new_parent, new_name, ino, inode.mode)
            inode = await self._put(
                inode._replace(links_count=inode.links_count + 1, ctime_ns=time.time_ns())
            )
        return self._attr(inode)

    # --- removing names ---------------------------------------------------------------------

    async def unlink(self, parent: int, name: bytes) -> None:
        async with self._change():
            _, inode = await self._lookup_entry(parent, name)
            if stat.S_ISDIR(inode.mode):
                raise FSError(errno.EISDIR)
            await self._dir_remove(parent, name)
            await self._unlink_inode(inode)

    async def _empty_dir(self, ino: int) -> None:
        d = await self._dir(ino)
        if any(name not in (b".", b"..") for name in d.names):
            raise FSError(errno.ENOTEMPTY)

    async def rmdir(self, parent: int, name: bytes) -> None:
        async with self._change():
            ino, inode = await self._lookup_entry(parent, name)
            if not stat.S_ISDIR(inode.mode):
                raise FSError(errno.ENOTDIR)
            await self._empty_dir(ino)
            await self._dir_remove(parent, name)
            await self._unlink_inode(inode, links=inode.links_count)
            await self._touch_dir(parent, links=-1)

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        async with self._change():
            src_ino, src = await self._lookup_entry(old_parent, old_name)
            check_name(new_name)
            if stat.S_ISDIR(src.mode) and old_parent != new_parent:
                await self._not_below(new_parent, src_ino)
            dst_entry = (await self._dir(new_parent)).names.get(new_name)
            if flags & RENAME_EXCHANGE:
                if dst_entry is None:
                    raise FSError(errno.ENOENT)
                await self._exchange(old_parent, old_name, src, new_parent, new_name)
            elif dst_entry is None:
                await self._move(old_parent, old_name, src, new_parent, new_name)
            elif flags & RENAME_NOREPLACE:
                raise FSError(errno.EEXIST)
            elif dst_entry[0] != src_ino:
                await self._replace(old_parent, old_name, src, new_parent, new_name)

    async def _not_below(self, ino: int, ancestor: int) -> None:
        """EINVAL when directory `ino` is `ancestor` or inside it (the kernel checks too)."""
        seen = 0
        while ino != EXT2_ROOT_INO:
            if ino == ancestor or seen > self.geo.inodes_count:
                raise FSError(errno.EINVAL)
            ino = (await self._dir(ino)).names[b".."][0]
            seen += 1

    async def _moved_dir(self, inode: Inode, old_parent: int, new_parent: int) -> None:
        """A directory changed parents: its ".." and both parents' link counts follow."""
        if stat.S_ISDIR(inode.mode) and old_parent != new_parent:
            await self._set_parent(inode.ino, new_parent)
            await self._touch_dir(old_parent, links=-1)
            await self._touch_dir(new_parent, links=1)

    async def _move(
        self, old_parent: int, old_name: bytes, src: Inode, new_parent: int, new_name: bytes
    ) -> None:
        parent_inode, d = await self._absent(new_parent, new_name)
        moving_dir = stat.S_ISDIR(src.mode) and old_parent != new_parent
        if moving_dir and parent_inode.links_count >= EXT2_LINK_MAX:
            raise FSError(errno.EMLINK)
        await self._reserve(await self._dir_need(parent_inode, d, new_name))
        await self._dir_add(new_parent, new_name, src.ino, src.mode)
        await self._dir_remove(old_parent, old_name)
        await self._moved_dir(src, old_parent, new_parent)
        await self._put((await self._inode(src.ino))._replace(ctime_ns=time.time_ns()))

    async def _replace(
        self, old_parent: int, old_name: bytes, src: Inode, new_parent: int, new_name: bytes
    ) -> None:
        _, dst = await self._lookup_entry(new_parent, new_name)
        if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst.mode):
            raise FSError(errno.ENOTDIR)
        if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst.mode):
            raise FSError(errno.EISDIR)
        if stat.S_ISDIR(dst.mode):
            await self._empty_dir(dst.ino)
        await self._dir_retarget(new_parent, new_name, src.ino, src.mode)
        await self._dir_remove(old_parent, old_name)
        if stat.S_ISDIR(dst.mode):
            await self._unlink_inode(dst, links=dst.links_count)
            await self._touch_dir(new_parent, links=-1)  # the replaced directory's ".."
        else:
            await self._unlink_inode(dst)
        await self._moved_dir(src, old_parent, new_parent)
        await self._put((await self._inode(src.ino))._replace(ctime_ns=time.time_ns()))

    async def _exchange(
        self, old_parent: int, old_name: bytes, src: Inode, new_parent: int, new_name: bytes
    ) -> None:
        _, dst = await self._lookup_entry(new_parent, new_name)
        await self._dir_retarget(new_parent, new_name, src.ino, src.mode)
        await self._dir_retarget(old_parent, old_name, dst.ino, dst.mode)
        if old_parent != new_parent:
            for inode, was, now in ((src, old_parent, new_parent), (dst, new_parent, old_parent)):
                if stat.S_ISDIR(inode.mode):
                    await self._set_parent(inode.ino, now)
                    await self._touch_dir(was, links=-1)
                    await self._touch_dir(now, links=1)
        now_ns = time.time_ns()
        for ino in (src.ino, dst.ino):
            await self._put((await self._inode(ino))._replace(ctime_ns=now_ns))

    # --- attributes -------------------------------------------------------------------------

    async def setattr(self, ino: int, changes: SetAttr, caller: Caller) -> Attr:
        async with self._change():
            inode = await self._inode(ino)
            if changes.size is not None:
                if stat.S_ISDIR(inode.mode):
                    raise FSError(errno.EISDIR)
                if not stat.S_ISREG(inode.mode):
                    raise FSError(errno.EINVAL)
                if changes.size != inode.size or caller.uid != 0:
                    inode = await self._truncate(inode, changes.size, kill=caller.uid != 0)
            mode = inode.mode
            if changes.mode is not None:
                mode = stat.S_IFMT(mode) | (changes.mode & 0o7777)
            if (changes.uid is not None or changes.gid is not None) and not stat.S_ISDIR(mode):
                mode = _kill_priv(mode)
            inode = await self._put(
                inode._replace(
                    mode=mode,
                    uid=inode.uid if changes.uid is None else changes.uid,
                    gid=inode.gid if changes.gid is None else changes.gid,
                    atime_ns=inode.atime_ns if changes.atime_ns is None else changes.atime_ns,
                    mtime_ns=inode.mtime_ns if changes.mtime_ns is None else changes.mtime_ns,
                    ctime_ns=time.time_ns(),
                )
            )
        return self._attr(inode)

    # --- extended attributes ------------------------------------------------------------------

    async def _raw_xattrs(self, inode: Inode) -> tuple[list[RawEntry], list[RawEntry]]:
        block = parse_block_raw(bytes(await self._block(inode.file_acl))) if inode.file_acl else []
        return parse_ibody_raw(inode.xattr_ibody), block

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int) -> None:
        """Set `name` (user.*, trusted.*, security.*, the POSIX ACLs): in the inode if it
        fits, else in its block."""
        index, suffix = split_name(name)
        async with self._change():
            inode = await self._inode(ino)
            ibody, block = await self._raw_xattrs(inode)
            key = (index, suffix)
            exists = any((e.index, e.name) == key for e in ibody + block)
            if flags & os.XATTR_CREATE and exists:
                raise FSError(errno.EEXIST)
            if flags & os.XATTR_REPLACE and not exists:
                raise FSError(errno.ENODATA)
            ibody = [e for e in ibody if (e.index, e.name) != key]
            block = [e for e in block if (e.index, e.name) != key]
            new = RawEntry(index, suffix, stored_value(index, value))
            if build_ibody([*ibody, new], len(inode.xattr_ibody)) is not None:
                ibody.append(new)
            else:
                block.append(new)
            await self._store_xattrs(inode, ibody, block)

    async def removexattr(self, ino: int, name: bytes) -> None:
        """Remove `name`; ENODATA when it is not set."""
        index, suffix = split_name(name)
        async with self._change():
            inode = await self._inode(ino)
            ibody, block = await self._raw_xattrs(inode)
            kept_ibody = [e for e in ibody if (e.index, e.name) != (index, suffix)]
            kept_block = [e for e in block if (e.index, e.name) != (index, suffix)]
            if len(kept_ibody) + len(kept_block) == len(ibody) + len(block):
                raise FSError(errno.ENODATA)
            await self._store_xattrs(inode, kept_ibody, kept_block)

    async def _store_xattrs(
        self, inode: Inode, ibody: list[RawEntry], block: list[RawEntry]
    ) -> None:
        """Write both areas; the block is rewritten in place unless shared (then copied)."""
        bs = self.geo.block_size
        area = build_ibody(ibody, len(inode.xattr_ibody))
        data = build_block(block, bs) if block else None
        if area is None or (block and data is None):
            raise FSError(errno.ENOSPC, "extended attributes do not fit")
        file_acl, blocks_512 = inode.file_acl, inode.blocks_512
        old = await self._block(file_acl) if file_acl else None
        shared = old is not None and int.from_bytes(old[4:8], "little") > 1
        if data is not None and old is not None and not shared:
            old[:] = data
            self._xattr_changed(file_acl)
        elif data is not None:
            await self._reserve(1)
            new_block, _ = await self._alloc_blocks(self._group_goal(inode.ino), 1)
            self._new_block(new_block, bytearray(data))
            self._xattr_changed(new_block)
            if file_acl:
                self._free_blocks(await self._drop_xattr_block(file_acl))
            else:
                blocks_512 += bs // 512
            file_acl = new_block
        elif file_acl:
            self._free_blocks(await self._drop_xattr_block(file_acl))
            file_acl, blocks_512 = 0, blocks_512 - bs // 512
        await self._put(
            inode._replace(
                xattr_ibody=area,
                file_acl=file_acl,
                blocks_512=blocks_512,
                ctime_ns=time.time_ns(),
            )
        )


def _word(feature: str) -> int:
    """Which feature word (`COMPAT`, `INCOMPAT`, `RO_COMPAT`) `feature` sits in."""
    for (word, _), name in FEATURE_NAMES.items():
        if name == feature:
            return word
    return {"C": COMPAT, "I": INCOMPAT}.get(feature[len("FEATURE_") :][:1], RO_COMPAT)


class WritableExt2Driver(Ext2Driver):
    """The ext2 driver type, opening images read-write when asked (see module docstring)."""

    async def open(self, sources: Sequence[ImageFile], options: MountOptions) -> Ext2FileSystem:
        """`WritableExt2` for a writable mount; read-only when only reading is possible.

        A volume with features this writer does not keep (ext4) opens read-only, so the
        mount goes on read-only with a warning, as for a driver that cannot write (after its
        journal, if it needed recovery, was replayed onto the image); errors or an unclean
        state refuse the mount without ``force``.
        """
        if not options.writable:
            return await super().open(sources, options)
        if len(sources) != 1:
            raise Refusal(f"ext2 takes exactly one image, not {len(sources)}")
        try:
            return await WritableExt2.load(sources[0], options)
        except ReadOnlyVolume as e:
            log.warning("%s: %s", sources[0].path, e)
            return await super().open(sources, replace(options, writable=False))


DRIVER = WritableExt2Driver()

__all__ = ["DRIVER", "ReadOnlyVolume", "WritableExt2", "WritableExt2Driver"]
