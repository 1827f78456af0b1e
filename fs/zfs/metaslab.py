"""Metaslabs (module/zfs/metaslab.c): a top-level vdev's space, its allocator and frees.

A top-level vdev's allocatable space is cut into metaslabs of 2^metaslab_shift bytes
(the vdev tree's ``metaslab_shift``; ``asize >> metaslab_shift`` of them). The MOS object
``metaslab_array`` lists each one's space map object (0: none yet, all free); replaying a
space map gives the metaslab's allocated space (`load_metaslabs`).

The allocator is simpler than upstream's weighted, segment-size-aware one: `metaslab_alloc`
takes the metaslab with the most space it may hand out and the first free segment there
that fits (all sizes are whole sectors of the vdev, so offsets stay sector-aligned).
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
from uvfs_fs.zfs.blkptr import DVA
from uvfs_fs.zfs.dmu import ObjectSet
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

    def sync(self, txg: int, syncpass: int = 1) -> list[SmRecord]:
        """The space map records of this txg's allocations and frees (metaslab_sync), in
        map units; then this txg's frees start waiting and the oldest come back."""
        records: list[SmRecord] = []
        for action, tree in ((SM_ALLOC, self.allocating), (SM_FREE, self.freeing)):
            if len(tree):
                records.append(SmDebug(action, syncpass, txg))
                records += [SmEntry(action, (s - self.start) >> self.shift, (e - s) >> self.shift)
                            for s, e in tree]  # fmt: skip
        self.deferred.append(self.freeing)
        self.allocating, self.freeing = RangeTree(), RangeTree()
        if len(self.deferred) > TXG_DEFER_SIZE:
            for start, end in self.deferred.pop(0):
                self.allocatable.add(start, end - start)
        return records


def metaslab_alloc(metaslabs: Sequence[Metaslab], asize: int) -> DVA:
    """Allocate `asize` bytes from the metaslab with the most allocatable space that holds
    a segment big enough (first fit inside it).

    Raises:
        FSError: ENOSPC when no metaslab has a free segment of `asize` bytes.
    """
    for ms in sorted(metaslabs, key=lambda m: (-m.allocatable.space, m.vdev, m.id)):
        if ms.allocatable.space < asize:
            break
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


def _number(tree: dict[str, NvValue], key: str) -> int:
    value = tree.get(key)
    if not isinstance(value, int):
        raise FSError(errno.EIO, f"vdev tree lacks {key}")
    return value


async def load_metaslabs(mos: ObjectSet, tree: dict[str, NvValue]) -> list[Metaslab]:
    """The metaslabs of the top-level vdev `tree` (a vdev_tree nvlist), each with its
    space map replayed.

    Raises:
        FSError: EIO when the array or a space map is unreadable or inconsistent (a log
            that allocates allocated space, or whose replay disagrees with smp_alloc).
    """
    vdev, ashift = _number(tree, "id"), _number(tree, "ashift")
    ms_shift, asize = _number(tree, "metaslab_shift"), _number(tree, "asize")
    count = asize >> ms_shift
    if not 0 < count <= MAX_METASLABS:
        raise FSError(errno.EIO, f"vdev {vdev}: {count} metaslabs")
    array_dn = await mos.dnode(_number(tree, "metaslab_array"))
    raw = await mos.read(array_dn, 0, 8 * count)
    objects = struct.unpack(f"{array_dn.byteorder}{count}Q", raw)
    out = []
    for i, obj in enumerate(objects):
        start = i << ms_shift
        allocated = RangeTree()
        if obj:
            dn = await mos.dnode(obj)
            phys = parse_space_map_phys(dn.dn_bonus, dn.byteorder)
            log = await mos.read(dn, 0, phys.smp_length)
            replay(parse_entries(log, dn.byteorder), start, ashift, allocated)
            if allocated.space != phys.smp_alloc:
                raise FSError(errno.EIO, f"vdev {vdev} metaslab {i}: space map replays to "
                              f"{allocated.space} bytes, header says {phys.smp_alloc}")  # fmt: skip
        out.append(Metaslab(vdev, i, start, 1 << ms_shift, ashift, obj, allocated))
    return out
