"""Where a seed's metadata lies: the byte ranges the fuzzer damages, found by walking it.

ext2: the superblock, every group descriptor block, block and inode bitmaps and the inode
table blocks the walk touched, plus every block the driver read while walking the tree
other than file contents (directory, htree, extent, indirect and xattr blocks), and the
first blocks of the journal (its superblock, descriptors, commits and revokes).

ZFS: for every vdev, each label's config nvlist and each valid uberblock slot (both carry
their checksum inside, so a mutation is resealed and reaches the parsers), and the blocks
the test suite's `walk_pool` reaches, other than file contents, that the driver itself
reads as it walks the seed: object sets, dnode blocks, ZAPs, SA and DSL objects, indirect
blocks (space maps and the like stay out: no read-only walk reaches them). Those are
located through their first DVA on a disk or mirror top-level vdev (a raidz vdev spreads
a block over its members: only its labels are damaged). A bp-addressed block keeps its
checksum in its parent, so damage to it as stored is read with checksum verification off
(`Region.unverified`), and damage to its logical contents is applied as it is
decompressed (see _mutate.py): either way the parsers see what a crafter who recomputed
the checksums would show them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from uvfs import MountOptions
from uvfs_fs.ext2 import DRIVER as EXT2
from uvfs_fs.ext2.group_desc import desc_location
from uvfs_fs.zfs import DRIVER as ZFS
from uvfs_fs.zfs.blkptr import BlockPtr
from uvfs_fs.zfs.dnode import DMU_OT_DNODE, DMU_OT_OBJSET, DMU_OT_PLAIN_FILE_CONTENTS
from uvfs_fs.zfs.label import (
    VDEV_LABEL_START_SIZE,
    VDEV_PHYS_OFFSET,
    VDEV_PHYS_SIZE,
    VDEV_UBERBLOCK_OFFSET,
    label_offsets,
)
from uvfs_fs.zfs.spa import open_pool
from uvfs_fs.zfs.uberblock import VDEV_UBERBLOCK_RING, parse_ring
from uvfs_fs.zfs.vdev import LeafVdev, MirrorVdev

from ._corpus import Seed
from ._walk import FuzzImage, Walk, walk_images

JOURNAL_BLOCKS = 24  # journal blocks damaged: its superblock and the first transactions
ZFS_BLOCKS_MAX = 400  # bp-addressed blocks kept per seed (the walk reaches thousands)


@dataclass(frozen=True, slots=True)
class Region:
    """Bytes [start, end) of file `file` (index into the seed's files), holding `kind`.

    `seal` names an embedded checksum to recompute after damage ("eck": a ZFS label or
    uberblock zio_eck_t; "ext4_sb": a metadata_csum superblock's s_checksum);
    `unverified` says the case must run without bp checksums; `record` is the size of
    the records the region is an array of (inodes, dnodes, block pointers), whose known
    fields the mutator aims at, 0 when not an array.
    """

    kind: str
    file: int
    start: int
    end: int
    seal: str = ""
    unverified: bool = False
    record: int = 0
    compress: int = -1  # a ZFS block's compression (enum zio_compress); -1 for others
    lsize: int = 0  # and its logical size


def _merge_blocks(kind: str, blocks: set[int], bs: int, record: int = 0) -> list[Region]:
    return [Region(kind, 0, b * bs, (b + 1) * bs, record=record) for b in sorted(blocks) if b > 0]


async def _ext2_regions(seed: Seed) -> list[Region]:
    with FuzzImage(str(seed.files[0])) as image:
        fs = await EXT2.open([image], MountOptions())
        geo, bs = fs.geo, fs.geo.block_size
        walked: set[int] = set()
        walks: list[Walk] = []

        def record(offset: int, size: int) -> None:
            if walks and not walks[0].data_reads:
                walked.update(range(offset // bs, (offset + size - 1) // bs + 1))

        image.on_read = record
        await walk_images(EXT2, [image], walks.append)
        image.on_read = None
        csummed = "metadata_csum" in geo.features
        regions = [Region("superblock", 0, 1024, 2048, "ext4_sb" if csummed else "")]
        descs, bitmaps, tables = set(), set(), set()
        itable_blocks = -(-geo.inodes_per_group * geo.inode_size // bs)
        for group in range(geo.groups_count):
            descs.add(desc_location(geo, group)[0])
            d = await fs._group_desc(group)
            bitmaps.update((d.block_bitmap, d.inode_bitmap))
            tables.update(range(d.inode_table, d.inode_table + itable_blocks))
        regions += _merge_blocks("group_desc", descs, bs)
        regions += _merge_blocks("bitmap", bitmaps, bs)
        regions += _merge_blocks("inode_table", tables & walked, bs, geo.inode_size)
        regions += _merge_blocks("walked", walked - tables - descs - {0, 1}, bs)
        if fs.sb.s_journal_inum:
            journal = await fs._inode(fs.sb.s_journal_inum)
            runs = await fs._map(journal, 0, JOURNAL_BLOCKS)
            blocks = {r.physical + i for r in runs if r.physical for i in range(r.count)}
            regions += _merge_blocks("journal", blocks, bs)
        return regions


def _vdev_files(vdev: object, files: list[str]) -> list[int]:
    """Indexes into `files` of the leaves holding a whole copy of `vdev`'s blocks."""
    if isinstance(vdev, LeafVdev):
        return [files.index(vdev.image.path)] if vdev.image is not None else []
    if isinstance(vdev, MirrorVdev):
        return [i for child in vdev.children for i in _vdev_files(child, files)]
    return []


def _bp_kind(bp: BlockPtr) -> tuple[str, int]:
    """The region kind of `bp`'s block and the size of the records it is an array of."""
    record = 128 if bp.level else 512 if bp.type in (DMU_OT_DNODE, DMU_OT_OBJSET) else 0
    kind = "zfs_indirect" if bp.level else f"zfs_type{bp.type}"
    return kind, record


async def _zfs_regions(seed: Seed) -> list[Region]:
    from tests.zfs.zfsfuse import walk_pool  # the test suite's block-tree walker

    files = [str(p) for p in seed.files]
    regions: list[Region] = []
    images = [FuzzImage(p) for p in files]
    try:
        for index, image in enumerate(images):
            for label in label_offsets(image.size):
                start = label + VDEV_PHYS_OFFSET
                regions.append(Region("label_nvlist", index, start, start + VDEV_PHYS_SIZE, "eck"))
                ring = label + VDEV_UBERBLOCK_OFFSET
                for ashift in (9, 12):
                    data = image.read_sync(ring, VDEV_UBERBLOCK_RING)
                    step = 1 << max(ashift, 10)
                    slots = [ub.offset for ub in parse_ring(data, ring, ashift)]
                    if slots:
                        regions += [Region("uberblock", index, o, o + step, "eck") for o in slots]
                        break
        read: set[tuple[int, int]] = set()  # (file, sector) of every sector the driver read
        for index, image in enumerate(images):
            image.on_read = lambda offset, size, index=index: read.update(
                (index, sector) for sector in range(offset >> 9, (offset + size + 511) >> 9)
            )
        await walk_images(ZFS, images)
        for image in images:
            image.on_read = None
        try:
            pool = await open_pool(images)
        except Exception:
            return regions  # a seed refused whole (a missing member): its labels only
        seen: set[tuple[int, int]] = set()
        blocks: list[Region] = []
        try:
            async for v in walk_pool(pool):
                bp = v.bp
                if bp.embedded or bp.is_hole or not bp.dvas:
                    continue
                if bp.level == 0 and bp.type == DMU_OT_PLAIN_FILE_CONTENTS:
                    continue
                dva = bp.dvas[0]
                if dva.gang or dva.vdev >= len(pool.vdevs):
                    continue
                for f in _vdev_files(pool.vdevs[dva.vdev], files)[:1]:
                    start = VDEV_LABEL_START_SIZE + dva.offset
                    if (f, start) not in seen and (f, start >> 9) in read:
                        seen.add((f, start))
                        kind, record = _bp_kind(bp)
                        end = start + bp.psize
                        blocks.append(
                            Region(kind, f, start, end, "", True, record, bp.compress, bp.lsize)
                        )
        except Exception:
            pass  # an encrypted or partly unreadable seed: the blocks reached so far
        step = max(1, len(blocks) // ZFS_BLOCKS_MAX)
        return regions + blocks[::step]
    finally:
        for image in images:
            image.close()


async def _regions(driver: str, seed: Seed) -> list[Region]:
    return await (_ext2_regions(seed) if driver == "ext2" else _zfs_regions(seed))


def regions(driver: str, seed: Seed, workdir: Path) -> list[Region]:
    """The metadata regions of `seed`, found once and kept in `workdir`."""
    stamp = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]  # stale if changed
    cache = workdir / "regions" / f"{driver}-{seed.name}-{stamp}.json"
    if cache.exists():
        return [Region(**r) for r in json.loads(cache.read_text())]
    found = trio.run(_regions, driver, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([asdict(r) for r in found]))
    return found
