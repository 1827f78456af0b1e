"""One open ext2/ext3/ext4 volume: the async layer that reads the image and answers requests.

Theory of operation. Everything about the format is in the sans-I/O modules beside this
one; this class only fetches bytes and keeps what it parsed. Metadata comes in whole
blocks through one bounded LRU (`_meta_block`): group descriptor blocks, inode table
blocks, indirect blocks, extent nodes, directory and xattr blocks. Parsed group
descriptors, inodes and directories sit in their own bounded LRUs, so a hot lookup or
getattr costs no I/O and no parsing. File data is never cached here (the broker's cache
does that): a read maps its block range to runs and issues one image read per run, and
a sequential reader has the image read ahead of it (`_read_ahead`). A listing reads the
inode-table blocks its entries need in a few large reads (`_prefetch_inodes`).

Requests interleave only at awaits, and a cache is only changed between awaits, so no
locks are needed; two requests missing the same entry both load it, harmlessly.

Every number taken from the image is checked before it is used as an offset or a loop
bound (inode and block numbers against the superblock's counts, directory records,
extent nodes ...), and on metadata_csum volumes every inode, extent, directory leaf and
xattr block is checked against its checksum. As on the kernel, a failed checksum is
EBADMSG and other damage EUCLEAN (EIO where the kernel says so), for the object at hand.

A volume whose journal needs recovery opens read-only through a `ReplayedImage`: the
journal is replayed in memory (recovery.py) and every read, the superblock's included,
sees the blocks replay would have written; the image itself never changes. A writable
open replays onto the image first (journal.py), as the kernel does.
"""

from __future__ import annotations

import errno
import functools
import logging
import stat
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, suppress

from construct import Container

from uvfs import (
    LRU,
    Attr,
    BlockDevice,
    Caller,
    ChargedLRU,
    DirEntry,
    FSError,
    ImageFile,
    Layout,
    MemoryBudget,
    MountOptions,
    Refusal,
    StatFS,
)
from uvfs_fs.ext2 import csum, encrypt, htree, orphan, xattr
from uvfs_fs.ext2.blockmap import Run, map_indirect
from uvfs_fs.ext2.casefold import EXT4_CASEFOLD_FL, Folding
from uvfs_fs.ext2.dirent import EXT2_NAME_LEN, decode_rec_len, find_dirent, scan_dirents
from uvfs_fs.ext2.dirnames import Directory, ExactQuery, FoldQuery, NoKeyLookup, Query
from uvfs_fs.ext2.encrypt import EXT4_ENCRYPT_FL, nokey_name, symlink_target
from uvfs_fs.ext2.extents import map_extents
from uvfs_fs.ext2.group_desc import (
    GroupDesc,
    decode_group_desc,
    desc_location,
    metadata_overhead,
)
from uvfs_fs.ext2.inline_data import inline_area, inline_dirents
from uvfs_fs.ext2.inode import (
    EXT2_INDEX_FL,
    EXT4_EA_INODE_FL,
    EXT4_EXTENTS_FL,
    EXT4_INLINE_DATA_FL,
    EXT4_VERITY_FL,
    Inode,
    check_ibody_xattrs,
    check_iget,
    decode_inode,
    is_fast_symlink,
)
from uvfs_fs.ext2.jbd2 import JournalError
from uvfs_fs.ext2.journal import recover_journal, write_replay
from uvfs_fs.ext2.layout import blocks_spanned, runs_layout
from uvfs_fs.ext2.replayed import ReplayedImage
from uvfs_fs.ext2.superblock import (
    EXT2_ERROR_FS,
    EXT2_VALID_FS,
    EXT3_FEATURE_INCOMPAT_RECOVER,
    SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE,
    Geometry,
    ext2_super_block,
    geometry,
)
from uvfs_fs.ext2.syszone import SystemZone

log = logging.getLogger("uvfs.ext2")

EXT2_ROOT_INO = 2
EXT4_CRC32C_CHKSUM = 1  # s_checksum_type

# Cache bounds. Metadata blocks and directories charge the mount's memory budget
# (-o cache_size, shared with the broker's cache); metadata blocks also keep within 8 MiB.
META_CACHE_BYTES = 8 << 20
DIRENT_CHARGE = 256  # budget bytes per cached directory name: record, index entry, name
INODE_CACHE_ENTRIES = 8192
DESC_CACHE_ENTRIES = 4096
DIR_MAX_NAMES = 1 << 24  # more in one directory is taken for corruption (repeated blocks)
MAP_CHUNK_BLOCKS = 1024  # directory scans map this many blocks at a time
# A listing's inode-table blocks this close together are read as one stretch, the blocks
# between them included: one read of a few more blocks costs less than a second read.
ITABLE_GAP_BLOCKS = 8
XATTR_SIZE_MAX = 1 << 16  # the largest value getxattr(2) returns: larger ea_inode values are EIO


async def read_superblock(image: ImageFile) -> Container:
    """The primary superblock of `image`; `Refusal` when the image is too small to hold one."""
    if image.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE:
        raise Refusal("not an ext2/ext3/ext4 filesystem: image too small for a superblock")
    return ext2_super_block.parse(await image.read(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE))


async def _checked_superblock(image: ImageFile) -> tuple[Container, Geometry]:
    """`image`'s superblock and geometry, its metadata_csum checksum verified."""
    sb = await read_superblock(image)
    geo = geometry(sb, image.size)
    if "metadata_csum" in geo.features:
        if sb.s_checksum_type != EXT4_CRC32C_CHKSUM:
            raise Refusal(f"unknown ext4 checksum type {sb.s_checksum_type}")
        if not csum.superblock_ok(ext2_super_block.build(sb)):
            raise Refusal("ext4 superblock checksum does not match: run e2fsck")
    return sb, geo


class Ext2FileSystem:
    """A read-only ext2/ext3/ext4 volume, answering the driver API's read operations.

    Open one with `Ext2FileSystem.load`. Inode numbers are the volume's own (root is 2).
    """

    root = EXT2_ROOT_INO

    def __init__(
        self, image: ImageFile, sb: Container, geo: Geometry, memory: MemoryBudget | None = None
    ) -> None:
        self.image = image
        memory = memory or MemoryBudget()
        self.sb = sb
        self.geo = geo
        self._filetype = "filetype" in geo.features
        self._inline_data = "inline_data" in geo.features
        self._encrypt = "encrypt" in geo.features
        self._dir_index = "dir_index" in geo.features
        self._huge_file = "huge_file" in geo.features
        self._has_64bit = "64bit" in geo.features
        self._large_dir = "large_dir" in geo.features
        self._ea_inode = "ea_inode" in geo.features
        self._first_ino = sb.s_first_ino if sb.s_rev_level else 11
        self._folding = (
            Folding(sb.s_encoding, sb.s_encoding_flags) if "casefold" in geo.features else None
        )
        self._itable_blocks = -(-geo.inodes_per_group * geo.inode_size // geo.block_size)
        self._meta: ChargedLRU[int, bytes] = memory.lru("ext2 metadata", capacity=META_CACHE_BYTES)
        self._descs: LRU[int, GroupDesc] = LRU(DESC_CACHE_ENTRIES)
        self._inodes: LRU[int, Inode] = LRU(INODE_CACHE_ENTRIES)
        # children of encrypted directories -> the directory they were last found in
        self._encrypted_parents: LRU[int, int] = LRU(INODE_CACHE_ENTRIES)
        self._zone: SystemZone | None = None  # built when the first inode is read
        # orphans the cleanup truncated: their i_blocks, and their mtime and ctime
        self._truncated: dict[int, int] = {}
        self._truncate_stamp = 0
        self._dirs: ChargedLRU[int, Directory] = memory.lru("ext2 directories")
        # metadata_csum: the checksum seed; None when the volume has no checksums
        self._csum_seed: int | None = None
        if "metadata_csum" in geo.features:
            self._csum_seed = csum.fs_seed(
                sb.s_uuid, sb.s_checksum_seed, "metadata_csum_seed" in geo.features
            )

    @classmethod
    async def load(cls, image: ImageFile, options: MountOptions) -> Ext2FileSystem:
        """Check `image`'s superblock and root directory; `Refusal` when it cannot be read.

        A journal that needs recovery is replayed: in memory for a read-only open, onto
        the image for a writable one (as the kernel and e2fsck do). Errors or an unclean
        state refuse a writable open without ``force``; a read-only one goes on with a
        warning. A writable request of this class still opens read-only: the broker
        mounts a filesystem without `write` read-only.
        """
        sb, geo = await _checked_superblock(image)
        if "needs_recovery" in geo.features:
            image, sb, geo = await Ext2FileSystem(image, sb, geo)._recover(options.writable)
        replayed = isinstance(image, ReplayedImage)
        if sb.s_state & EXT2_ERROR_FS or not (
            sb.s_state & EXT2_VALID_FS or "has_journal" in geo.features
        ):
            if options.writable and not options.force:
                raise Refusal(
                    "ext2 filesystem has errors or was not cleanly unmounted: run e2fsck, "
                    "or mount with force"
                )
            if not options.writable:
                log.warning(
                    "%s: ext2 filesystem has errors or was not cleanly unmounted; "
                    "reading it as it is (run e2fsck)",
                    image.path,
                )
        fs = cls(image, sb, geo, options.memory)
        try:
            root = await fs._inode(EXT2_ROOT_INO)
        except FSError as e:
            raise Refusal(f"corrupt ext2 filesystem: root directory unreadable ({e})") from None
        if not stat.S_ISDIR(root.mode):
            raise Refusal("corrupt ext2 filesystem: the root inode is not a directory")
        if replayed:  # where the kernel (on a device it can write) cleans the orphans up
            await fs._clean_orphans()
        return fs

    async def _recover(self, writable: bool) -> tuple[BlockDevice, Container, Geometry]:
        """Replay the journal: over the image when reading, onto it before writing.

        Returns the image to read from then (a `ReplayedImage` when reading), and its
        superblock and geometry. As ext4_load_journal does, the error state survives
        replay, and an error the journal recorded (it was aborted) puts the volume in it;
        the free counts are the group descriptors' sums, as the kernel counts them.

        An external journal cannot be read: reading, the volume is shown as the image
        holds it, with a warning; writing is refused.
        """
        image, sb, geo = self.image, self.sb, self.geo
        if not sb.s_journal_inum:
            if writable:
                raise Refusal(
                    "ext3/4 journal needs recovery, and it is on an external device: "
                    "mount read-only (-o ro), or replay it with e2fsck -j"
                )
            log.warning(
                "%s: the journal is on an external device and is not replayed; "
                "recent changes may be missing",
                image.path,
            )
            return image, sb, geo
        bs = geo.block_size
        try:
            journal = await self._inode(sb.s_journal_inum)
            runs = await self._map(journal, 0, min(journal.size // bs, geo.blocks_count))
            replay = await recover_journal(image, runs, bs, geo.blocks_count)
        except (FSError, JournalError) as e:
            raise Refusal(f"ext3/4 journal cannot be replayed: {e}") from None
        failed = replay.recovery.failed_commit
        if failed is not None and writable:
            raise Refusal(
                f"ext3/4 journal transaction {failed} fails its commit checksum: run e2fsck, "
                "or mount read-only (-o ro)"
            )
        if failed is not None:
            log.warning(
                "%s: journal transaction %d fails its commit checksum: replayed up to it, as "
                "e2fsck does (the kernel refuses this journal)",
                image.path,
                failed,
            )
        errors = sb.s_state & EXT2_ERROR_FS or (EXT2_ERROR_FS if replay.jsb.errno else 0)
        if writable:
            if not image.writable:
                raise Refusal("ext3/4 journal needs recovery, and the image is read-only")
            await write_replay(image, replay, bs)
        else:
            image = ReplayedImage(image, bs, replay.copies)
        sb, geo = await _checked_superblock(image)
        sb.s_state |= errors
        await Ext2FileSystem(image, sb, geo)._recount_free()
        if writable:  # the journal is empty now: say so, as e2fsck does once it replayed
            sb.s_feature_incompat &= ~EXT3_FEATURE_INCOMPAT_RECOVER
            raw = bytearray(ext2_super_block.build(sb))
            raw[csum.S_CHECKSUM :] = csum.crc32c_le(0xFFFFFFFF, raw[: csum.S_CHECKSUM]).to_bytes(
                4, "little"
            )
            await image.write(SUPERBLOCK_OFFSET, bytes(raw))
            await image.sync()
            sb, geo = await _checked_superblock(image)
        return image, sb, geo

    async def _recount_free(self) -> None:
        """Set the superblock's free counts to the group descriptors' sums, as the kernel
        counts them at mount: after replay the superblock's are stale (jbd2 journals the
        descriptors on every change, the superblock's counters only now and then)."""
        blocks = inodes = 0
        for group in range(self.geo.groups_count):
            desc = await self._group_desc(group)
            blocks += desc.free_blocks_count
            inodes += desc.free_inodes_count
        blocks *= self.geo.cluster_ratio
        self.sb.s_free_blocks_count, self.sb.s_free_blocks_hi = blocks & 0xFFFFFFFF, blocks >> 32
        self.sb.s_free_inodes_count = inodes

    async def _clean_orphans(self) -> None:
        """Count what the kernel's orphan cleanup frees (`orphan.py`) into the free counts
        and the truncated inodes' i_blocks; skipped, as the kernel skips it, on a volume
        with errors or with ro_compat features it could not write."""
        sb, geo = self.sb, self.geo
        ro_compat = sb.s_feature_ro_compat
        listed = await self._orphan_file_entries()
        if (
            not (sb.s_last_orphan or listed)
            or sb.s_state & EXT2_ERROR_FS
            or ro_compat & ~orphan.KERNEL_RO_COMPAT
            or ro_compat & orphan.RO_COMPAT_READONLY
        ):
            return

        def has_blocks(inode: Inode) -> bool:
            return not self._is_inline(inode) and orphan.can_truncate(
                inode, self._is_fast_symlink(inode)
            )

        async def blocks_past(inode: Inode, cut: int) -> int:
            ratio = geo.cluster_ratio
            kept = False
            if cut % ratio:  # the cut splits a cluster: does its part before the cut stay?
                runs = await self._map(inode, cut - cut % ratio, cut % ratio, unwritten=True)
                kept = any(run.physical for run in runs)
            return await orphan.blocks_past(
                inode,
                cut,
                block_size=geo.block_size,
                blocks_count=geo.blocks_count,
                read_block=self._meta_block,
                cluster_ratio=ratio,
                boundary_kept=kept,
            )

        async def xattr_refcount(block: int) -> int:
            return int.from_bytes((await self._meta_block(block))[4:8], "little")

        async def value_inodes(inode: Inode, block_freed: bool) -> list[int]:
            if "ea_inode" not in geo.features:
                return []
            attrs = xattr.parse_ibody(inode.xattr_ibody)
            if block_freed:
                with suppress(FSError):
                    attrs += xattr.parse_block(await self._xattr_block(inode))
            return [value.inum for _, value in attrs if isinstance(value, xattr.ValueInode)]

        async def ea_inode(ino: int) -> tuple[Inode, int] | None:
            try:
                inode = await self._read_inode(ino, orphan=True)
                raw = await self._inode_raw(ino)
            except FSError:
                return None
            if not inode.flags & EXT4_EA_INODE_FL or not stat.S_ISREG(inode.mode):
                return None
            # ext4_xattr_inode_get_ref: i_ctime's seconds over i_version's low word
            low = int.from_bytes(raw[0x24:0x28], "little")
            return inode, (inode.ctime_ns // 10**9 & 0xFFFFFFFF) << 32 | low

        done = await orphan.clean_orphans(
            sb.s_last_orphan,
            listed,
            first_ino=sb.s_first_ino if sb.s_rev_level else 11,
            inodes_count=geo.inodes_count,
            read_orphan=self._orphan_inode,
            has_blocks=has_blocks,
            blocks_past=blocks_past,
            xattr_refcount=xattr_refcount,
            value_inodes=value_inodes,
            ea_inode=ea_inode,
            block_size=geo.block_size,
            stamp_ns=orphan.stamp(whole_seconds=geo.inode_size <= 128),
        )
        free = sb.s_free_blocks_count | sb.s_free_blocks_hi << 32
        free += done.blocks
        sb.s_free_blocks_count, sb.s_free_blocks_hi = free & 0xFFFFFFFF, free >> 32
        sb.s_free_inodes_count += done.inodes
        self._truncated = done.blocks_512
        self._truncate_stamp = done.stamp_ns
        self._inodes.clear()  # the truncated ones were read with their old i_blocks

    async def _orphan_file_entries(self) -> list[int]:
        """The inode numbers the orphan file lists (orphan_file), block after block; none
        when it cannot be read whole (the kernel fails the mount then), with a warning."""
        if "orphan_file" not in self.geo.features:
            return []
        bs = self.geo.block_size
        entries: list[int] = []
        try:
            inode = await self._read_inode(self.sb.s_orphan_file_inum)
            seed = self._inode_seed(inode)
            for run in await self._map(inode, 0, min(inode.size // bs, self.geo.blocks_count)):
                if not run.physical:
                    raise FSError(errno.EIO, "a hole")
                for block in range(run.physical, run.physical + run.count):
                    listed = orphan.orphan_file_entries(await self._meta_block(block), seed, block)
                    if listed is None:
                        raise FSError(errno.EIO, f"block {block}: bad magic or checksum")
                    entries += listed
        except FSError as e:
            log.warning("%s: orphan file unreadable (%s); its orphans are left", self.image.path, e)
            return []
        return entries

    async def _orphan_inode(self, ino: int) -> Inode | None:
        """Inode `ino` as ext4_orphan_get returns it (in use in its group's inode bitmap,
        readable, and truncatable if linked), else None."""
        group, bit = divmod(ino - 1, self.geo.inodes_per_group)
        try:
            desc = await self._group_desc(group)
            csum_bg = {"metadata_csum", "uninit_bg"} & self.geo.features
            if csum_bg and desc.flags & orphan.EXT4_BG_INODE_UNINIT:  # read as a zeroed bitmap
                return None
            bitmap = await self._meta_block(desc.inode_bitmap)
            if not bitmap[bit // 8] >> (bit % 8) & 1:
                return None
            inode = await self._read_inode(ino, orphan=True)
        except FSError:
            return None
        if inode.links_count and not orphan.can_truncate(inode, self._is_fast_symlink(inode)):
            return None
        return inode

    # --- metadata -----------------------------------------------------------------------

    async def _meta_block(self, block: int) -> bytes:
        """One metadata block, through the LRU."""
        data = self._meta.get(block)
        if data is None:
            if not 0 < block < self.geo.blocks_count:
                raise FSError(errno.EIO, f"metadata block {block} outside the filesystem")
            bs = self.geo.block_size
            data = await self.image.read(block * bs, bs)
            self._meta.put(block, data, len(data))
        return data

    async def _group_desc(self, group: int) -> GroupDesc:
        desc = self._descs.get(group)
        if desc is None:
            block, offset = desc_location(self.geo, group)
            raw = await self._meta_block(block)
            desc = decode_group_desc(raw[offset : offset + self.geo.desc_size], self.geo.desc_size)
            self._descs.put(group, desc)
        return desc

    async def _prefetch_inodes(self, inos: Sequence[int]) -> None:
        """Bring the inode-table blocks holding `inos` into the metadata LRU, each stretch
        of them (`ITABLE_GAP_BLOCKS` apart at most) in one image read: a cold listing's
        inodes then cost a read or two rather than one read per table block. Numbers
        `_inode_raw` would refuse are left for it to report."""
        geo, bs = self.geo, self.geo.block_size
        wanted = set()
        for ino in inos:
            if not 0 < ino <= geo.inodes_count or self._inodes.get(ino) is not None:
                continue
            group, index = divmod(ino - 1, geo.inodes_per_group)
            table = (await self._group_desc(group)).inode_table
            if not 0 < table <= geo.blocks_count - self._itable_blocks:
                continue
            block = table + index * geo.inode_size // bs
            if block not in self._meta:
                wanted.add(block)
        stretches: list[list[int]] = []
        for block in sorted(wanted):
            if stretches and block - stretches[-1][1] <= ITABLE_GAP_BLOCKS:
                stretches[-1][1] = block
            else:
                stretches.append([block, block])
        for first, last in stretches:
            data = await self.image.read(first * bs, (last + 1 - first) * bs)
            for block in range(first, last + 1):
                if block not in self._meta:
                    at = (block - first) * bs
                    self._meta.put(block, data[at : at + bs], bs)

    async def _inode(self, ino: int) -> Inode:
        """Inode `ino`, parsed and checked as the kernel's ext4_iget checks it."""
        inode = self._inodes.get(ino)
        if inode is None:
            inode = await self._read_inode(ino)
            self._inodes.put(ino, inode)
        return inode

    async def _inode_raw(self, ino: int) -> bytes:
        """Inode `ino`'s slot in its group's inode table."""
        geo = self.geo
        if not 0 < ino <= geo.inodes_count:
            raise FSError(errno.EIO, f"inode number {ino} out of range")
        group, index = divmod(ino - 1, geo.inodes_per_group)
        table = (await self._group_desc(group)).inode_table
        if not 0 < table <= geo.blocks_count - self._itable_blocks:
            raise FSError(errno.EIO, f"group {group}: inode table at bad block {table}")
        block, offset = divmod(index * geo.inode_size, geo.block_size)
        return (await self._meta_block(table + block))[offset : offset + geo.inode_size]

    async def _read_inode(self, ino: int, *, orphan: bool = False) -> Inode:
        """Inode `ino` read and checked; `orphan`: as the orphan cleanup reads it (an
        unlinked inode passes)."""
        geo = self.geo
        raw = await self._inode_raw(ino)
        inode = decode_inode(
            raw,
            ino,
            huge_file=self._huge_file,
            block_size=geo.block_size,
            has_64bit=self._has_64bit,
            large_dir=self._large_dir,
        )
        extra_isize = int.from_bytes(raw[128:130], "little")
        seed = self._csum_seed
        if seed is not None and not csum.inode_ok(raw, seed, ino, inode.generation, extra_isize):
            raise FSError(errno.EBADMSG, f"inode {ino}: checksum does not match")
        # in-inode attributes are read and checked only past a non-zero i_extra_isize
        system_data = bool(extra_isize) and check_ibody_xattrs(
            inode,
            ea_inode=self._ea_inode,
            first_ino=self._first_ino,
            inodes_count=geo.inodes_count,
        )
        check_iget(
            inode,
            block_ok=functools.partial((await self._system_zone()).block_ok, ino=ino),
            cluster_size=geo.block_size * geo.cluster_ratio,
            inline=self._is_inline(inode) and system_data,
            features=geo.features,
            orphan=orphan,
        )
        blocks_512 = self._truncated.get(ino)
        if blocks_512 is None:
            return inode
        stamp = self._truncate_stamp
        return inode._replace(blocks_512=blocks_512, mtime_ns=stamp, ctime_ns=stamp)

    async def _system_zone(self) -> SystemZone:
        """The blocks no file may own, from every group's descriptor (read once), with the
        journal's, which only the journal may own."""
        if self._zone is None:
            descs = [await self._group_desc(group) for group in range(self.geo.groups_count)]

            def zone(owned: list[tuple[int, int, int]]) -> SystemZone:
                return SystemZone(
                    self.geo,
                    descs,
                    itable_blocks=self._itable_blocks,
                    reserved_gdt_blocks=self.sb.s_reserved_gdt_blocks,
                    owned=owned,
                )

            # the journal inode is read and mapped against the zone without its blocks;
            # failing, it fails the root's read, so the mount (ext4_setup_system_zone)
            self._zone = zone([])
            journal = self.sb.s_journal_inum if "has_journal" in self.geo.features else 0
            if journal:
                inode = await self._inode(journal)
                count = min(-(-inode.size // self.geo.block_size), self.geo.blocks_count)
                runs = await self._map(inode, 0, count, unwritten=True)
                self._zone = zone([(r.physical, r.count, journal) for r in runs if r.physical])
        return self._zone

    def _attr(self, inode: Inode) -> Attr:
        return Attr(
            ino=inode.ino,
            mode=inode.mode,
            nlink=inode.links_count,
            uid=inode.uid,
            gid=inode.gid,
            size=inode.size,
            rdev=inode.rdev,
            blocks=inode.blocks_512,
            blksize=self.geo.block_size,
            atime_ns=inode.atime_ns,
            mtime_ns=inode.mtime_ns,
            ctime_ns=inode.ctime_ns,
            generation=inode.generation,
        )

    # --- data -----------------------------------------------------------------------------

    def _inode_seed(self, inode: Inode) -> int | None:
        if self._csum_seed is None:
            return None
        return csum.inode_seed(self._csum_seed, inode.ino, inode.generation)

    async def _map(
        self, inode: Inode, first: int, count: int, *, unwritten: bool = False
    ) -> list[Run]:
        """The runs of `inode`'s blocks [first, first + count); `unwritten`: uninitialized
        extents as their blocks, not holes (`map_extents`)."""
        if inode.flags & EXT4_EXTENTS_FL:
            seed = self._inode_seed(inode)

            async def read_node(block: int) -> bytes:
                node = await self._meta_block(block)
                eh_max = int.from_bytes(node[4:6], "little")
                if seed is not None and not csum.extent_block_ok(node, seed, eh_max):
                    raise FSError(errno.EIO, f"extent block {block}: checksum does not match")
                return node

            return await map_extents(
                inode.i_block,
                first,
                count,
                blocks_count=self.geo.blocks_count,
                read_block=read_node,
                unwritten=unwritten,
            )
        return await map_indirect(
            inode.i_block,
            first,
            count,
            block_size=self.geo.block_size,
            blocks_count=self.geo.blocks_count,
            read_block=self._meta_block,
        )

    async def _read_data(self, inode: Inode, offset: int, size: int) -> bytes:
        """Bytes [offset, offset + size) of `inode`'s data, clipped at its end of file."""
        end = min(offset + size, inode.size)
        if offset >= end:
            return b""
        if self._is_inline(inode):  # ext4_read_inline_folio: the area, then zeros to i_size
            data = inline_area(inode)[offset:end]
            return data + bytes(end - offset - len(data))
        bs = self.geo.block_size
        first = offset // bs
        runs = await self._map(inode, first, (end - 1) // bs + 1 - first)
        parts = []
        for run in runs:
            lo = max(offset, run.logical * bs)
            hi = min(end, (run.logical + run.count) * bs)
            if run.physical:
                parts.append(
                    await self.image.read(run.physical * bs + lo - run.logical * bs, hi - lo)
                )
            else:
                parts.append(bytes(hi - lo))
        return b"".join(parts)

    def _is_inline(self, inode: Inode) -> bool:
        return self._inline_data and bool(inode.flags & EXT4_INLINE_DATA_FL)

    async def _dir_inode(self, ino: int) -> Inode:
        inode = await self._inode(ino)
        if not stat.S_ISDIR(inode.mode):
            raise FSError(errno.ENOTDIR)
        return inode

    async def _directory(self, ino: int) -> Directory:
        cached = self._dirs.get(ino)
        if cached is not None:
            return cached
        inode = await self._dir_inode(ino)
        if self._is_inline(inode):
            listed, problem = inline_dirents(
                inode, filetype=self._filetype, inodes_count=self.geo.inodes_count
            )
            if problem is not None:
                self._dir_warning(inode, 0, problem)
            records = [(ino, b".", 0), *listed]
            # names past the inode count ended the listing; ".." is read as it is (an
            # out-of-range parent fails its own lookup)
            entries = [(name, child) for child, name, _ in records]
            directory = Directory(entries)
        else:
            directory = await self._block_entries(inode)
            entries = directory.entries
        self._dirs.put(ino, directory, (len(entries) + 1) * DIRENT_CHARGE)
        return directory

    async def _dir_blocks(self, inode: Inode) -> AsyncIterator[tuple[int, bytes | None]]:
        """(logical number, bytes) of directory `inode`'s blocks in order; the bytes are
        empty for a hole, None for a block failing its checksum (with a warning)."""
        bs = self.geo.block_size
        if inode.size > self.geo.blocks_count * bs:
            raise FSError(errno.EIO, f"directory {inode.ino} larger than the filesystem")
        nblocks = -(-inode.size // bs)
        seed = self._inode_seed(inode)
        for first in range(0, nblocks, MAP_CHUNK_BLOCKS):
            count = min(MAP_CHUNK_BLOCKS, nblocks - first)
            for run in await self._map(inode, first, count, unwritten=True):
                if not run.physical:
                    for logical in range(run.logical, run.logical + run.count):
                        yield logical, b""
                    continue
                data = await self.image.read(run.physical * bs, run.count * bs)
                for at in range(0, len(data), bs):
                    block = data[at : at + bs]
                    logical = run.logical + at // bs
                    if seed is not None and not _dir_block_ok(block, logical, inode, seed):
                        self._dir_warning(inode, logical, "checksum does not match")
                        yield logical, None
                    else:
                        yield logical, block

    async def _block_entries(self, inode: Inode) -> Directory:
        """(name, inode) of every record in directory `inode`'s blocks, in order, as the
        kernel lists them: a block failing its checksum is left out and counted, a bad
        record ends its block (`scan_dirents`, with a warning)."""
        entries: list[tuple[bytes, int]] = []
        bad_blocks = cut_blocks = 0
        first_hole = False
        async with aclosing(self._dir_blocks(inode)) as blocks:
            async for logical, block in blocks:
                if block == b"":  # a hole holds no names
                    first_hole = first_hole or logical == 0
                    continue
                if block is None:
                    bad_blocks += 1
                    continue
                records, problem = scan_dirents(
                    block,
                    filetype=self._filetype,
                    inodes_count=self.geo.inodes_count,
                )
                if problem is not None:
                    self._dir_warning(inode, logical, problem)
                    cut_blocks += 1
                entries += [(name, child) for child, name, _ in records]
                if len(entries) > DIR_MAX_NAMES:
                    raise FSError(
                        errno.EIO, f"directory {inode.ino} holds over {DIR_MAX_NAMES} names"
                    )
        directory = Directory(entries, bad_blocks, cut_blocks)
        directory.first_hole = first_hole
        return directory

    async def _scan_find(self, inode: Inode, query: Query) -> int | None:
        """`query` looked up in a damaged directory as the kernel's linear search does:
        block by block, failing at the first block with a bad checksum (EBADMSG) or a
        record its walk cannot pass (EUCLEAN) before the name is found."""
        async with aclosing(self._dir_blocks(inode)) as blocks:
            async for _, block in blocks:
                if block is None:
                    raise FSError(
                        errno.EBADMSG, f"directory {inode.ino}: block checksum does not match"
                    )
                if not block:
                    continue  # a hole
                child = find_dirent(block, query.matches, inodes_count=self.geo.inodes_count)
                if child is not None:
                    return child
        return None

    def _dir_warning(self, inode: Inode, logical: int, problem: str) -> None:
        log.warning("%s: directory %d, block %d: %s", self.image.path, inode.ino, logical, problem)

    def _lists_by_hash(self, inode: Inode) -> bool:
        """Whether the kernel lists directory `inode` through its htree code (is_dx_dir):
        indexed, or of exactly one block, or inline, on a dir_index volume."""
        one_block = inode.size // self.geo.block_size == 1
        return self._dir_index and bool(
            inode.flags & EXT2_INDEX_FL or one_block or self._is_inline(inode)
        )

    async def _xattrs(self, ino: int) -> list[tuple[bytes, xattr.Value]]:
        """`ino`'s shown attributes; ea_inode values are read by `_xattr_value`."""
        inode = await self._inode(ino)
        attrs = xattr.parse_ibody(inode.xattr_ibody)
        if inode.file_acl:
            attrs += xattr.parse_block(await self._xattr_block(inode))
        return attrs

    async def _xattr_block(self, inode: Inode) -> bytes:
        """`inode`'s external attribute block, its header and checksum checked."""
        block = await self._meta_block(inode.file_acl)
        seed = self._csum_seed
        xattr.check_block_header(block)  # before the checksum, as the kernel checks
        if seed is not None and not csum.xattr_block_ok(block, seed, inode.file_acl):
            raise FSError(errno.EBADMSG, f"xattr block {inode.file_acl}: checksum does not match")
        return block

    async def _xattr_value(self, owner: int, name: bytes, value: xattr.Value) -> bytes:
        """The value of attribute `name` of inode `owner`, read from its EA inode if need be.

        The EA inode must be another inode, flagged EXT4_EA_INODE_FL, holding exactly the
        entry's size (else EUCLEAN, as ext4_xattr_inode_iget answers), at most
        `XATTR_SIZE_MAX` bytes (checked before anything is read).
        """
        if isinstance(value, bytes):
            return value
        where = f"inode {owner}: attribute {name!r} in inode {value.inum}"
        if "ea_inode" not in self.geo.features:
            raise FSError(errno.EUCLEAN, f"{where}, without the ea_inode feature")
        if value.inum == owner:
            raise FSError(errno.EUCLEAN, f"{where}: its own inode")
        if value.size > XATTR_SIZE_MAX:
            raise FSError(errno.EIO, f"{where}: {value.size} bytes")
        ea = await self._inode(value.inum)
        if not ea.flags & EXT4_EA_INODE_FL or not stat.S_ISREG(ea.mode):
            raise FSError(errno.EUCLEAN, f"{where}: not an EA inode")
        if ea.size != value.size:
            raise FSError(errno.EUCLEAN, f"{where}: {ea.size} bytes, not {value.size}")
        data = await self._read_data(ea, 0, value.size)
        # ext4_xattr_inode_verify_hashes: the value's crc32c is kept in the EA inode's
        # i_atime; a Lustre EA inode (i_mtime names its owner, generations equal, and the
        # entry's hash is not the stored one) has none
        stored = ea.atime_ns // 10**9 & 0xFFFFFFFF
        owner_inode = await self._inode(owner)
        lustre = (
            value.e_hash != stored
            and ea.mtime_ns // 10**9 & 0xFFFFFFFF == owner
            and ea.generation == owner_inode.generation
        )
        if not lustre:
            seed = csum.fs_seed(
                self.sb.s_uuid, self.sb.s_checksum_seed, "metadata_csum_seed" in self.geo.features
            )
            if csum.crc32c_le(seed, data) != stored or not xattr.entry_hash_ok(value, stored):
                raise FSError(errno.EUCLEAN, f"{where}: EA inode hash validation failed")
        return xattr.shown_value(name, data)

    async def _dx_find(self, inode: Inode, query: Query) -> int | None:
        """The inode `query` finds in indexed directory `inode`, looked up through its hash
        index, or None when it is absent. Reads the index blocks on the name's path and
        the leaves its hash may be in.

        Raises:
            htree.DxCorrupt: the index or a leaf it leads to is malformed.
        """
        nblocks = -(-inode.size // self.geo.block_size)
        read_index, read_leaf = self._dx_readers(inode)
        leaves = htree.dx_leaves(
            await read_index(0),
            query.hashed or b"",
            target=query.target,
            seed=self.sb.s_hash_seed,
            unsigned=bool(self.sb.s_flags & htree.EXT2_FLAGS_UNSIGNED_HASH),
            csum=self._csum_seed is not None,
            max_levels=2 if "large_dir" in self.geo.features else 1,
            nblocks=nblocks,
            read_block=read_index,
        )
        async with aclosing(leaves):
            async for logical in leaves:
                block = await read_leaf(logical)
                child = find_dirent(block, query.matches, inodes_count=self.geo.inodes_count)
                if child is not None:
                    return child
        return None

    def _dx_readers(
        self, inode: Inode
    ) -> tuple[Callable[[int], Awaitable[bytes]], Callable[[int], Awaitable[bytes]]]:
        """Readers of indexed directory `inode`'s blocks by logical number, for an htree
        walk: (index blocks, leaves). A hole is EIO; on metadata_csum volumes an index
        block failing its dx_tail checksum or a leaf failing its own is EBADMSG, as the
        kernel's dx_probe and leaf reads fail."""
        seed = self._inode_seed(inode)

        async def read(logical: int, index: bool) -> bytes:
            runs = await self._map(inode, logical, 1, unwritten=True)
            if not runs or not runs[0].physical:
                raise FSError(errno.EUCLEAN, f"directory {inode.ino}: hole at block {logical}")
            block = await self._meta_block(runs[0].physical)
            if seed is not None and not (
                htree.dx_csum_ok(block, root=logical == 0, seed=seed)
                if index
                else _dir_block_ok(block, logical, inode, seed)
            ):
                raise FSError(
                    errno.EBADMSG, f"directory {inode.ino}: block {logical} checksum does not match"
                )
            return block

        async def read_index(logical: int) -> bytes:
            return await read(logical, True)

        async def read_leaf(logical: int) -> bytes:
            return await read(logical, False)

        return read_index, read_leaf

    async def _dx_listing(self, inode: Inode) -> tuple[list[tuple[bytes, int]], bool] | None:
        """Indexed directory `inode`'s records as the kernel lists them, through its index,
        and whether its lookups find each of them (`htree.dx_listing`); None when the
        index is damaged (the kernel lists linearly). A leaf failing its checksum is
        EBADMSG, as the kernel's listing is."""
        read_index, read_leaf = self._dx_readers(inode)

        def leaf_records(block: bytes) -> list[tuple[bytes, int]]:
            records, _ = scan_dirents(
                block,
                filetype=self._filetype,
                inodes_count=self.geo.inodes_count,
            )
            return [(name, child) for child, name, _ in records]

        folding = self._folding is not None and inode.flags & EXT4_CASEFOLD_FL
        try:
            return await htree.dx_listing(
                await read_index(0),
                csum=self._csum_seed is not None,
                max_levels=2 if "large_dir" in self.geo.features else 1,
                nblocks=-(-inode.size // self.geo.block_size),
                read_node=read_index,
                read_leaf=read_leaf,
                leaf_records=leaf_records,
                hashed=Folding.hash_name if folding else bytes,
                seed=self.sb.s_hash_seed,
                unsigned=bool(self.sb.s_flags & htree.EXT2_FLAGS_UNSIGNED_HASH),
            )
        except htree.DxCorrupt as e:
            log.warning(
                "%s: directory %d: htree index damaged (%s); listing it linearly",
                self.image.path,
                inode.ino,
                e,
            )
            return None

    async def _find(self, parent: int, name: bytes) -> int | None:
        """The inode `name` names in directory `parent`, or None: through the hash index of
        an indexed directory not yet read whole (or whose index lists other names than its
        blocks hold), else from the parsed directory, or from its blocks if some are
        damaged. A damaged index is searched linearly, as the kernel does (with a warning)."""
        inode = await self._dir_inode(parent)
        query = self._query(inode, name)
        directory = self._dirs.get(parent)
        indexed = self._dir_index and inode.flags & EXT2_INDEX_FL and not self._is_inline(inode)
        trusted = directory is not None and directory.trusted
        if not trusted and name not in (b".", b"..") and indexed:
            try:
                return await self._dx_find(inode, query)
            except htree.DxCorrupt as e:
                log.warning(
                    "%s: directory %d: htree index damaged (%s); searching it linearly",
                    self.image.path,
                    parent,
                    e,
                )
        if directory is None:
            directory = await self._directory(parent)
        if directory.bad_blocks or directory.cut_blocks:
            return await self._scan_find(inode, query)
        return query.find(directory)

    def _query(self, inode: Inode, name: bytes) -> Query:
        """A lookup of `name` in directory `inode`: by no-key name in an encrypted one (no
        key is ever loaded), by fold in a casefolded one, else by its bytes."""
        if inode.flags & EXT4_ENCRYPT_FL:
            return NoKeyLookup(name)
        if self._folding is not None and inode.flags & EXT4_CASEFOLD_FL:
            return FoldQuery(self._folding, name)
        return ExactQuery(name)

    async def _nokey_names(self, inode: Inode, names: list[bytes]) -> list[bytes]:
        """The no-key names encrypted directory `inode` lists for its stored `names`, with
        the hashes the kernel's readdir gives them: those of the index's hash in an indexed
        directory (none if the index is damaged), of s_def_hash_version in a directory of
        one block, else none (ext4_readdir and ext4_htree_fill_tree)."""
        version = None
        if self._dir_index and inode.flags & EXT2_INDEX_FL:
            runs = await self._map(inode, 0, 1, unwritten=True)
            if runs and runs[0].physical:
                root = await self._meta_block(runs[0].physical)
                try:
                    csum = self._csum_seed is not None
                    levels = 2 if "large_dir" in self.geo.features else 1
                    version = htree.parse_root(root, csum=csum, max_levels=levels).hash_version
                except htree.DxCorrupt:
                    version = None
        elif self._lists_by_hash(inode):
            version = self.sb.s_def_hash_version
        if version is None:
            return [nokey_name(name) for name in names]
        if version <= htree.DX_HASH_TEA and self.sb.s_flags & htree.EXT2_FLAGS_UNSIGNED_HASH:
            version += htree.DX_HASH_UNSIGNED_DELTA
        try:
            return [
                nokey_name(name, *htree.dx_hash_pair(name, version, self.sb.s_hash_seed))
                for name in names
            ]
        except htree.DxCorrupt as e:
            raise FSError(errno.EIO, f"directory {inode.ino}: {e}") from None

    async def _context(self, inode: Inode) -> bytes:
        """`inode`'s encryption context (ext4_get_context): ENODATA without one, ERANGE
        when it is longer than any context."""
        key = (encrypt.EXT4_XATTR_INDEX_ENCRYPTION, b"c")
        value = xattr.ibody_value(inode.xattr_ibody, *key)
        if value is None and inode.file_acl:
            value = xattr.block_value(await self._xattr_block(inode), *key)
        if value is None:
            raise FSError(errno.ENODATA, f"inode {inode.ino}: no encryption context")
        if len(value) > encrypt.FSCRYPT_CONTEXT_MAX:
            raise FSError(errno.ERANGE, f"inode {inode.ino}: encryption context too long")
        return value

    async def _policy(self, inode: Inode) -> bytes | int:
        """`inode`'s encryption policy, or the errno fscrypt_get_policy answers (EINVAL for
        a context too long or of no known version)."""
        try:
            context = await self._context(inode)
        except FSError as e:
            return errno.EINVAL if e.errno == errno.ERANGE else e.errno
        policy = encrypt.context_policy(context)
        return errno.EINVAL if policy is None else policy

    async def _permitted(self, parent: Inode, child: Inode) -> bool:
        """Whether `child` may sit in directory `parent` (fscrypt_has_permitted_context):
        anything in an unencrypted one; in an encrypted one, only encrypted nodes whose
        contexts both read and hold the same policy (or both no known one)."""
        kinds = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
        if stat.S_IFMT(child.mode) not in kinds or not parent.flags & EXT4_ENCRYPT_FL:
            return True
        if not child.flags & EXT4_ENCRYPT_FL:
            return False
        for node in (parent, child):  # fscrypt_get_encryption_info, unsupported allowed
            try:
                await self._context(node)
            except FSError as e:
                if e.errno != errno.ERANGE:
                    return False
        policies = [await self._policy(parent), await self._policy(child)]
        if policies == [errno.EINVAL, errno.EINVAL]:
            return True
        return not isinstance(policies[0], int) and policies[0] == policies[1]

    async def _check_child(self, parent: Inode, child: Inode) -> None:
        """EPERM for a directory or symlink whose encryption context does not fit its
        encrypted parent's, as ext4_lookup answers; a child of an encrypted directory
        keeps its parent, for `open`'s check (which the last lookup's parent makes)."""
        if not parent.flags & EXT4_ENCRYPT_FL:
            if self._encrypt:
                self._encrypted_parents.pop(child.ino)
            return
        linked = stat.S_ISDIR(child.mode) or stat.S_ISLNK(child.mode)
        if linked and not await self._permitted(parent, child):
            raise FSError(errno.EPERM, f"inconsistent encryption contexts: {child.ino}")
        self._encrypted_parents.put(child.ino, parent.ino)

    async def _encrypted_target(self, inode: Inode) -> bytes:
        """What encrypted symlink `inode` reads as without the key: from i_block when it
        is fast, else from its whole first block (ext4_encrypted_get_link)."""
        if self._is_fast_symlink(inode):
            return symlink_target(inode.i_block)
        runs = await self._map(inode, 0, 1)
        if not runs or not runs[0].physical:
            raise FSError(errno.EIO, f"symlink {inode.ino}: no block")
        bs = self.geo.block_size
        return symlink_target(await self.image.read(runs[0].physical * bs, bs))

    async def _shown_attr(self, inode: Inode) -> Attr:
        """`inode`'s attributes as stat shows them: an encrypted symlink's size is that of
        the target it reads as (fscrypt_symlink_getattr)."""
        if inode.flags & EXT4_EA_INODE_FL:  # ext4_iget's check_igot_inode: only xattrs use one
            raise FSError(errno.EUCLEAN, f"inode {inode.ino}: unexpected EA_INODE flag")
        attr = self._attr(inode)
        if stat.S_ISLNK(inode.mode) and inode.flags & EXT4_ENCRYPT_FL:
            attr = attr._replace(size=len(await self._encrypted_target(inode)))
        return attr

    # --- the driver API -------------------------------------------------------------------

    async def _overhead(self) -> int:
        """Blocks statfs leaves out: s_overhead_clusters, or counted as the kernel does.

        The count is exact without bigalloc; with it the kernel counts clusters touched by
        metadata, which this closed form approximates by blocks (mke2fs always records
        s_overhead_clusters, so the count is only needed for older images).
        """
        # As the kernel, a recorded count past the blocks count is ignored as ridiculous.
        if 0 < self.sb.s_overhead_clusters <= self.geo.blocks_count:
            return self.sb.s_overhead_clusters * self.geo.cluster_ratio
        overhead = metadata_overhead(self.geo, self.sb.s_reserved_gdt_blocks)
        if "has_journal" in self.geo.features and self.sb.s_journal_inum:
            journal = await self._inode(self.sb.s_journal_inum)
            overhead += journal.size // self.geo.block_size
        return overhead

    async def lookup(self, parent: int, name: bytes) -> Attr:
        """The node called `name` in directory `parent`."""
        if len(name) > EXT2_NAME_LEN:
            raise FSError(errno.ENAMETOOLONG)
        child = await self._find(parent, name)
        if child is None:
            raise FSError(errno.ENOENT)
        inode = await self._inode(child)
        await self._check_child(await self._inode(parent), inode)
        return await self._shown_attr(inode)

    async def getattr(self, ino: int) -> Attr:
        """The attributes of inode `ino`."""
        return await self._shown_attr(await self._inode(ino))

    async def readdir(self, ino: int) -> Sequence[DirEntry]:
        """Every entry of directory `ino` in on-disk order, without "." and ".." (no-key
        names in an encrypted directory)."""
        directory = await self._directory(ino)
        inode = await self._dir_inode(ino)
        records = directory.entries
        if self._dir_index and inode.flags & EXT2_INDEX_FL and not self._is_inline(inode):
            if directory.listing is None:
                # Until the index's listing is read and holds the same names, each where
                # the index leads, lookups go through the index (a listing that fails
                # leaves them there).
                directory.trusted = False
                listed = await self._dx_listing(inode)
                directory.listing, routed = listed or (directory.entries, True)
                # lookups may use the parsed names if they are the listed ones, each
                # where the index leads its lookup
                same = sorted(directory.listing) == sorted(directory.entries)
                directory.trusted = same and routed
                if directory.listing is not directory.entries:  # a second list: charge it
                    names = len(directory.entries) + len(directory.listing)
                    self._dirs.put(ino, directory, (names + 1) * DIRENT_CHARGE)
            records = directory.listing
        elif self._lists_by_hash(inode) and not self._is_inline(inode):
            if directory.first_hole:  # the kernel's htree read of block 0 finds a hole
                raise FSError(errno.EUCLEAN, f"directory {ino}: hole at block 0")
            if directory.bad_blocks:
                raise FSError(errno.EBADMSG, f"directory {ino}: block checksum does not match")
        entries = [(name, child) for name, child in records if name not in (b".", b"..")]
        names = [name for name, _ in entries]
        if inode.flags & EXT4_ENCRYPT_FL:
            names = await self._nokey_names(inode, names)
        elif any(not name or b"/" in name for name in names):  # the VFS's verify_dirent_name
            raise FSError(errno.EIO, f"directory {ino}: a name that cannot be listed")
        # a NUL inside a name would cut it short on its way through FUSE
        entries = [entry for entry, name in zip(entries, names, strict=True) if b"\0" not in name]
        names = [name for name in names if b"\0" not in name]
        # A listed name's attributes are those of the inode its lookup finds (the kernel's
        # stat looks it up; FUSE takes a listing's attributes instead): where a lookup may
        # find another record (a duplicate name, a damaged index or damaged blocks), or
        # none, it is made.
        looked_up = set(names) if not directory.trusted or directory.bad_blocks else set()
        looked_up |= {name for name, n in Counter(names).items() if n > 1}
        await self._prefetch_inodes([child for _, child in entries])
        listing = []
        for shown, (_, child) in zip(names, entries, strict=True):
            try:
                found = await self._find(ino, shown) if shown in looked_up else child
                if found is None:
                    raise FSError(errno.ENOENT, "listed, but its lookup does not find it")
                child_inode = await self._inode(found)
                await self._check_child(inode, child_inode)
                listing.append(DirEntry(shown, await self._shown_attr(child_inode)))
            except FSError as e:  # the kernel lists the name and fails its stat: no attrs to
                # give FUSE, so the name alone is left out rather than the whole listing
                log.warning("%s: directory %d: %r left out: %s", self.image.path, ino, shown, e)
        return listing

    async def open(self, ino: int, flags: int, caller: Caller) -> int:
        """Open file `ino`. An encrypted regular file fails as fscrypt_file_open fails
        without the key: ENODATA or ERANGE when its context cannot be read, EINVAL when
        it holds no policy this kernel supports, else ENOKEY (the key is never had); a
        file whose context does not fit its encrypted parent's (last looked up through)
        is EPERM. An fs-verity file is EOPNOTSUPP, as a kernel built without
        CONFIG_FS_VERITY answers (its Merkle tree is not checked here, and its bytes are
        not served unchecked)."""
        inode = await self._inode(ino)
        if stat.S_ISREG(inode.mode) and inode.flags & EXT4_ENCRYPT_FL:
            policy = encrypt.context_policy(await self._context(inode))
            if policy is None or not encrypt.policy_supported(
                policy,
                casefolded=bool(inode.flags & EXT4_CASEFOLD_FL),
                stable_inodes="stable_inodes" in self.geo.features,
                blkbits=self.geo.block_size.bit_length() - 1,
            ):
                raise FSError(errno.EINVAL, f"inode {ino}: unsupported encryption policy")
            raise FSError(errno.ENOKEY, f"inode {ino} is encrypted")
        parent = self._encrypted_parents.get(ino)
        regular = stat.S_ISREG(inode.mode) and parent is not None
        if regular and not await self._permitted(await self._inode(parent), inode):
            raise FSError(errno.EPERM, f"inconsistent encryption contexts: {ino}")
        if stat.S_ISREG(inode.mode) and inode.flags & EXT4_VERITY_FL:
            raise FSError(errno.EOPNOTSUPP, f"inode {ino}: fs-verity files are not read")
        return 0

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes of regular file `ino` from `offset`."""
        inode = await self._inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise FSError(errno.EISDIR)
        if not stat.S_ISREG(inode.mode):
            raise FSError(errno.EINVAL)
        return await self._read_data(inode, offset, size)

    async def read_layout(self, ino: int, offset: int, size: int) -> Layout | None:
        """Where regular file `ino`'s bytes [offset, offset + size) lie in the image (see
        fs/ext2/layout.py); None where a read is not the image's bytes as they are."""
        inode = await self._inode(ino)
        if (
            not stat.S_ISREG(inode.mode)
            or self._is_inline(inode)
            or inode.flags & EXT4_ENCRYPT_FL
            or self.image.writable
            or isinstance(self.image, ReplayedImage)
        ):
            return None
        end = min(offset + size, inode.size)
        if offset >= end:
            return Layout(min(offset, inode.size), inode.size, inode.size, ())
        bs = self.geo.block_size
        runs = await self._map(inode, *blocks_spanned(offset, end, bs))
        return runs_layout(runs, bs, offset, end, inode.size)

    async def readlink(self, ino: int) -> bytes:
        """The target of symbolic link `ino`: in i_block when fast, in a data block when not."""
        inode = await self._inode(ino)
        if not stat.S_ISLNK(inode.mode):
            raise FSError(errno.EINVAL)
        if self._is_inline(inode):  # ext4_read_inline_link: what of i_size the area holds
            return inline_area(inode)[: inode.size].split(b"\0", 1)[0]
        if inode.flags & EXT4_ENCRYPT_FL:
            if not 0 < inode.size <= self.geo.block_size:
                raise FSError(errno.EIO, f"symlink {ino} of {inode.size} bytes")
            return await self._encrypted_target(inode)
        if self._is_fast_symlink(inode):  # its length was checked with the inode
            return inode.i_block[: inode.size]
        # ext4_get_link: the first block (a hole is "bad symlink"), as a string ending at
        # i_size or the block's last byte, or at a NUL before
        runs = await self._map(inode, 0, 1)
        if not runs[0].physical:
            raise FSError(errno.EUCLEAN, f"symlink {ino}: no block")
        bs = self.geo.block_size
        target = await self.image.read(runs[0].physical * bs, min(inode.size, bs - 1))
        return target.split(b"\0", 1)[0]

    def _is_fast_symlink(self, inode: Inode) -> bool:
        """As the kernel decides: a symlink owning no block but its xattr block is fast,
        whatever its flags say (some kernels set EXTENTS_FL on fast symlinks)."""
        cluster = self.geo.block_size * self.geo.cluster_ratio
        return is_fast_symlink(
            inode, cluster, self._is_inline(inode), "ea_inode" in self.geo.features
        )

    async def statfs(self) -> StatFS:
        """Totals as the kernel's ext4 driver reports them (minus metadata overhead)."""
        sb, geo = self.sb, self.geo
        wide = "64bit" in geo.features
        free = sb.s_free_blocks_count | (sb.s_free_blocks_hi << 32 if wide else 0)
        reserved = sb.s_r_blocks_count | (sb.s_r_blocks_count_hi << 32 if wide else 0)
        if "extent" in geo.features:
            # ext4 holds back 2% (at most 4096 clusters) for its own allocations.
            clusters = geo.blocks_count // geo.cluster_ratio
            reserved += min(clusters // 50, 4096) * geo.cluster_ratio
        return StatFS(
            block_size=geo.block_size,
            blocks=max(geo.blocks_count - await self._overhead(), 0),
            blocks_free=free,
            blocks_avail=max(free - reserved, 0),
            files=geo.inodes_count,
            files_free=sb.s_free_inodes_count,
            name_max=EXT2_NAME_LEN,
        )

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        """The value of extended attribute `name` of `ino`; ENODATA when it has none."""
        for key, value in await self._xattrs(ino):
            if key == name:
                return await self._xattr_value(ino, key, value)
        raise FSError(errno.ENODATA)

    async def listxattr(self, ino: int) -> Sequence[bytes]:
        """The names of `ino`'s extended attributes, in-inode ones first."""
        return [key for key, _ in await self._xattrs(ino)]


def _dir_block_ok(block: bytes, logical: int, inode: Inode, seed: int) -> bool:
    """Whether directory block number `logical` of `inode` passes its checksum.

    htree roots and nodes keep theirs in a dx_tail and hold no names: they pass unchecked.
    """
    if inode.flags & EXT2_INDEX_FL and logical == 0:
        return True
    first_len = decode_rec_len(int.from_bytes(block[4:6], "little"), len(block))
    if block[:4] == b"\0\0\0\0" and first_len == len(block):
        return True  # an index node: one unused record spanning the block
    return csum.dir_block_ok(block, seed)
