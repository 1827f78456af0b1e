"""Metaslabs (module/zfs/metaslab.c): a top-level vdev's space, its allocator and frees.

A top-level vdev's allocatable space is cut into metaslabs of 2^metaslab_shift bytes
(the vdev tree's ``metaslab_shift``; ``asize >> metaslab_shift`` of them). The MOS object
``metaslab_array`` lists each one's space map object (0: none yet, all free); replaying a
space map gives the metaslab's allocated space (`load_pool_metaslabs`). A pool with
log_spacemap logs each txg's changes, for all metaslabs at once, in a log space map per
txg (the MOS directory's ``com.delphix:log_spacemap_zap``: txg -> object, two-word
entries naming their vdev), and copies them into a metaslab's own map only now and then:
the metaslab's "unflushed txg" (an array in its vdev's top-level ZAP) says from which txg
on the logs still hold its changes, and loading replays those after its own map. Blocks
of one object may come from hosts of either byte order (a pool moved between machines),
so each block of a map is decoded in its own order.

The allocator is simpler than upstream's weighted, segment-size-aware one: `metaslab_alloc`
takes a metaslab the txg already changes, else the one with the most space it may hand
out, and the first free segment there that fits (all sizes are whole sectors of the
vdev, so offsets stay sector-aligned).
What a txg allocates and frees is kept apart until `Metaslab.sync` turns it into space map
records (one debug record, then the entries, per kind, as metaslab_sync writes them).
Space freed in a txg is not reused until TXG_DEFER_SIZE more txgs have synced, as
upstream's defer trees ensure: until then the last synced uberblocks may still point at
it. A block allocated and freed within the same txg never reached a space map and returns
at once.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from uvfs import FSError
from uvfs_fs.zfs.blkptr import DVA, SPA_MINBLOCKSHIFT
from uvfs_fs.zfs.dmu import ObjectSet, read_block
from uvfs_fs.zfs.dnode import DnodePhys
from uvfs_fs.zfs.nvlist import NvValue, unpack_nvlist
from uvfs_fs.zfs.range_tree import RangeTree
from uvfs_fs.zfs.spacemap import (
    SM_ALLOC,
    SM_FREE,
    SmDebug,
    SmEntry,
    SmRecord,
    parse_entries,
    parse_space_map_phys,
    replay,
)
from uvfs_fs.zfs.zap import Zap

TXG_DEFER_SIZE = 2  # txgs a freed range waits before it may be allocated again
MAX_METASLABS = 1 << 17  # a bound on asize >> metaslab_shift from a hostile config
DMU_POOL_LOG_SPACEMAP_ZAP = b"com.delphix:log_spacemap_zap"  # MOS dir: hex txg -> map
VDEV_TOP_ZAP = "com.delphix:vdev_zap_top"  # vdev tree: the top-level vdev's ZAP
VDEV_TOP_ZAP_MS_UNFLUSHED_PHYS_TXGS = b"com.delphix:ms_unflushed_phys_txgs"


@dataclass
class Metaslab:
    """One metaslab: its synced allocation state and this txg's changes.

    `allocated` is the space map's view once this txg syncs (this txg's allocations in,
    its frees out); `allocatable` is the free space that may be handed out now (free
    space less the frees still waiting out their txgs).
    """

    vdev: int
    id: int
    start: int  # byte offset in the vdev's allocatable space
    size: int
    shift: int  # the space map's unit: the vdev's ashift
    sm_object: int  # the space map object; 0 when none was ever written
    allocated: RangeTree
    unflushed_txg: int = 0  # log_spacemap: the log space maps hold its changes from here
    allocatable: RangeTree = field(init=False)
    allocating: RangeTree = field(default_factory=RangeTree)  # this txg's allocations
    freeing: RangeTree = field(default_factory=RangeTree)  # this txg's frees
    deferred: list[RangeTree] = field(default_factory=list)  # older frees, newest last

    def __post_init__(self) -> None:
        self.allocatable = self.allocated.complement(self.start, self.start + self.size)

    def alloc(self, size: int) -> int | None:
        """The offset of `size` bytes taken from the first free segment that fits, or None."""
        if size <= 0 or size & ((1 << self.shift) - 1):
            raise ValueError(
                f"allocation of {size} bytes is not whole {1 << self.shift}-byte sectors"
            )
        for start, end in self.allocatable:
            if end - start >= size:
                self.allocatable.remove(start, size)
                self.allocated.add(start, size)
                self.allocating.add(start, size)
                return start
        return None

    def claim(self, offset: int, size: int) -> None:
        """Allocate [offset, offset + size), already taken out of `allocatable` (a place
        reserved for a rewrite)."""
        self.allocated.add(offset, size)
        self.allocating.add(offset, size)

    def free(self, offset: int, size: int) -> None:
        """Free [offset, offset + size), allocated in this metaslab.

        Raises:
            RangeError: the range is not all allocated.
        """
        self.allocated.remove(offset, size)
        if self.allocating.contains(offset, size):
            self.allocating.remove(offset, size)
            self.allocatable.add(offset, size)
        else:
            self.freeing.add(offset, size)

    def records(self, txg: int, syncpass: int = 1) -> list[SmRecord]:
        """The space map records of this txg's allocations and frees so far (as
        metaslab_sync writes them), in map units."""
        records: list[SmRecord] = []
        for action, tree in ((SM_ALLOC, self.allocating), (SM_FREE, self.freeing)):
            if len(tree):
                records.append(SmDebug(action, syncpass, txg))
                records += [SmEntry(action, (s - self.start) >> self.shift, (e - s) >> self.shift)
                            for s, e in tree]  # fmt: skip
        return records

    def sync(self, txg: int, syncpass: int = 1) -> list[SmRecord]:
        """`records`; then this txg's frees start waiting and the oldest come back."""
        records = self.records(txg, syncpass)
        self.deferred.append(self.freeing)
        self.allocating, self.freeing = RangeTree(), RangeTree()
        if len(self.deferred) > TXG_DEFER_SIZE:
            for start, end in self.deferred.pop(0):
                self.allocatable.add(start, end - start)
        return records


def metaslab_alloc(
    metaslabs: Sequence[Metaslab], asize: int, active: frozenset[tuple[int, int]] = frozenset()
) -> DVA:
    """Allocate `asize` bytes from a metaslab that holds a segment big enough (first fit
    inside it): one this txg already changes, or named in `active` (vdev, id), before
    any other (so fewer space maps change: upstream keeps allocating from an active
    metaslab too), then the one with the most allocatable space.

    Raises:
        FSError: ENOSPC when no metaslab has a free segment of `asize` bytes.
    """

    def rank(m: Metaslab) -> tuple[bool, int, int, int]:
        busy = bool(len(m.allocating) or len(m.freeing)) or (m.vdev, m.id) in active
        return (not busy, -m.allocatable.space, m.vdev, m.id)

    for ms in sorted(metaslabs, key=rank):
        if ms.allocatable.space < asize:
            continue
        offset = ms.alloc(asize)
        if offset is not None:
            return DVA(ms.vdev, offset, asize, False)
    raise FSError(errno.ENOSPC, f"no free segment of {asize} bytes")


def metaslab_free(metaslabs: Sequence[Metaslab], dva: DVA, ms_shift: int) -> None:
    """Free one DVA's space; `metaslabs` are those of the DVA's vdev, by id."""
    metaslabs[dva.offset >> ms_shift].free(dva.offset, dva.asize)


async def mos_vdev_trees(mos: ObjectSet) -> list[dict[str, NvValue]]:
    """The top-level vdev nvlists of the pool config the MOS holds (its ``config`` object,
    a packed nvlist whose length is its bonus word), in id order."""
    obj = (await (await Zap.open(mos, 1)).lookup(b"config")).int()
    dn = await mos.dnode(obj)
    (size,) = struct.unpack_from(dn.byteorder + "Q", dn.dn_bonus)
    config = unpack_nvlist(await mos.read(dn, 0, size))
    tree = config.get("vdev_tree")
    children = tree.get("children", []) if isinstance(tree, dict) else []
    if not isinstance(children, list):
        raise FSError(errno.EIO, "MOS config has no vdev children")
    return sorted(children, key=lambda c: int(c.get("id", 0)))  # type: ignore[union-attr]


async def _words(mos: ObjectSet, dn: DnodePhys, length: int) -> list[tuple[bytes, str]]:
    """The first `length` bytes of an object of 64-bit words, block by block, each with
    its own byte order (the host that wrote it)."""
    out = []
    bsz = dn.datablksz
    for blkid in range(-(-length // bsz)):
        size = min(bsz, length - blkid * bsz)
        block = await read_block(mos.cache, dn, blkid)
        out.append((block[0][:size], block[1]) if block else (bytes(size), "<"))
    return out


def _number(tree: dict[str, NvValue], key: str) -> int:
    value = tree.get(key)
    if not isinstance(value, int):
        raise FSError(errno.EIO, f"vdev tree lacks {key}")
    return value


async def _uint64s(mos: ObjectSet, obj: int, count: int) -> list[int]:
    """The first `count` 64-bit words of object `obj` (a uint64 array)."""
    dn = await mos.dnode(obj)
    return [
        word
        for raw, order in await _words(mos, dn, 8 * count)
        for word in struct.unpack(f"{order}{len(raw) // 8}Q", raw)
    ]


async def _lookup(mos: ObjectSet, zap_obj: int, name: bytes) -> int | None:
    """The integer `name` holds in ZAP `zap_obj`, or None when it is absent."""
    try:
        return (await (await Zap.open(mos, zap_obj)).lookup(name)).int()
    except FSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


async def _replay_space_map(
    mos: ObjectSet, obj: int, start: int, shift: int, into: RangeTree
) -> None:
    """Replay space map `obj` (a map starting at byte `start`, in units of 2^`shift`) into
    `into`, checking that it comes to its header's smp_alloc."""
    dn = await mos.dnode(obj)
    phys = parse_space_map_phys(dn.dn_bonus, dn.byteorder)
    before = into.space
    for raw, order in await _words(mos, dn, phys.smp_length):
        replay(parse_entries(raw, order), start, shift, into)
    if into.space - before != phys.smp_alloc:
        raise FSError(errno.EIO, f"space map {obj} replays to {into.space - before} bytes, "
                      f"its header says {phys.smp_alloc}")  # fmt: skip


async def _vdev_metaslabs(mos: ObjectSet, tree: dict[str, NvValue]) -> list[Metaslab]:
    """One top-level vdev's metaslabs as their own space maps leave them."""
    vdev, ashift = _number(tree, "id"), _number(tree, "ashift")
    ms_shift, asize = _number(tree, "metaslab_shift"), _number(tree, "asize")
    count = asize >> ms_shift
    if not 0 < count <= MAX_METASLABS:
        raise FSError(errno.EIO, f"vdev {vdev}: {count} metaslabs")
    objects = await _uint64s(mos, _number(tree, "metaslab_array"), count)
    unflushed = [0] * count
    top_zap = tree.get(VDEV_TOP_ZAP)
    if isinstance(top_zap, int):
        txgs_obj = await _lookup(mos, top_zap, VDEV_TOP_ZAP_MS_UNFLUSHED_PHYS_TXGS)
        if txgs_obj is not None:
            unflushed = await _uint64s(mos, txgs_obj, count)
    out = []
    for i, obj in enumerate(objects):
        allocated = RangeTree()
        if obj:
            await _replay_space_map(mos, obj, i << ms_shift, ashift, allocated)
        out.append(Metaslab(vdev, i, i << ms_shift, 1 << ms_shift, ashift, obj, allocated,
                            unflushed[i]))  # fmt: skip
    return out


async def _apply_log_space_maps(mos: ObjectSet, pool: dict[int, list[Metaslab]]) -> None:
    """Replay the pool's log space maps (log_spacemap), oldest first, into the metaslabs
    whose own space maps do not hold those txgs yet (the txg >= its unflushed txg)."""
    logs_zap = await _lookup(mos, 1, DMU_POOL_LOG_SPACEMAP_ZAP)
    if logs_zap is None:
        return
    zap = await Zap.open(mos, logs_zap)
    logs = sorted((int(e.name, 16), e.int()) for e in await zap.entries())  # names: hex txgs
    for txg, obj in logs:
        dn = await mos.dnode(obj)
        length = parse_space_map_phys(dn.dn_bonus, dn.byteorder).smp_length
        for raw, order in await _words(mos, dn, length):
            for e in parse_entries(raw, order):
                if not isinstance(e, SmEntry) or e.vdev not in pool:
                    continue  # debug records; removed (indirect) vdevs
                metaslabs = pool[e.vdev]
                index = (e.offset << SPA_MINBLOCKSHIFT) // metaslabs[0].size
                if index >= len(metaslabs):
                    raise FSError(errno.EIO, f"log space map {obj}: {e} is past vdev {e.vdev}")
                ms = metaslabs[index]
                if txg >= ms.unflushed_txg:  # else already in the metaslab's own map
                    replay([e], 0, SPA_MINBLOCKSHIFT, ms.allocated)


async def load_pool_metaslabs(mos: ObjectSet) -> dict[int, list[Metaslab]]:
    """The metaslabs of every top-level vdev that has them (holes and removed vdevs
    have none), by vdev id, each with its space map replayed and, on a pool with
    log_spacemap, the log space maps' changes since it was last flushed.

    Raises:
        FSError: EIO when a space map is unreadable or inconsistent (an entry that
            allocates allocated space or frees free space, a total that disagrees with
            its header's smp_alloc).
    """
    pool: dict[int, list[Metaslab]] = {}
    for tree in await mos_vdev_trees(mos):
        if "metaslab_array" in tree:
            pool[_number(tree, "id")] = await _vdev_metaslabs(mos, tree)
    await _apply_log_space_maps(mos, pool)
    for metaslabs in pool.values():
        for ms in metaslabs:
            ms.allocatable = ms.allocated.complement(ms.start, ms.start + ms.size)
    return pool
