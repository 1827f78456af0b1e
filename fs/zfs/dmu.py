"""The DMU: object sets (objset_phys_t), their dnodes, and objects read through block trees.

An object set is a flat array of objects. Its `objset_phys_t` (include/sys/dmu_objset.h)
holds the meta dnode, whose data is the array of dnodes, 512 bytes per slot:

    0    os_meta_dnode      dnode_phys_t (512)
    512  os_zil_header      zil_header_t (192)
    704  os_type u64        DMU_OST_META (the MOS) or DMU_OST_ZFS (a filesystem) ...
    712  os_flags u64
    720  os_portable_mac[32], 752 os_local_mac[32]
    1024 os_userused_dnode, 1536 os_groupused_dnode, 2048 os_projectused_dnode (later sizes)

An object's data is a tree of `dn_nlevels` levels hanging from its `dn_blkptr`: level 0
holds data blocks of `datablksz` bytes, each indirect block holds 2^(dn_indblkshift - 7)
block pointers. Level-0 block `blkid` is reached by taking, at each level L from the top,
the child `(blkid >> (epbs * (L - 1))) & (2^epbs - 1)`. A hole pointer anywhere on the way
(or a block past `dn_maxblkid`) reads as zeros: sparse files cost nothing. Each block's
byte order is the one its pointer gives, which is how big-endian pools read here.

Blocks come through `BlockCache`, one per mount: verified, decompressed blocks keyed by
their block pointer, so the indirect blocks above a file being read sequentially, dnode
blocks and ZAP leaves are read from disk once. It also keeps the most recently used dnode
blocks and parsed dnodes of every object set, so the tree walk and parse for a file's dnode
happen once however many requests name the file. A block being read is read once however
many tasks ask for it meanwhile.

Every one of those caches is a `ChargedLRU` of the mount's `MemoryBudget` (``-o
cache_size``), evicted in one LRU order with the broker's cache of file data. File data
blocks are kept apart and only briefly (`DATA_CACHE_BYTES`): the broker already keeps the
bytes a reader asked for, so keeping the blocks as well would hold the data twice; they
stay only long enough for the rest of a block read in pieces and for blocks read ahead
to meet their reader. Measured on a 2 GiB file with the default budget: keeping every data
block (within the budget) held 433-549 MiB of peak RSS against 336-350 MiB, and read
neither sequentially nor in random 4 KiB pieces any faster; no block was read twice.

Reading is batched where it pays: `read_object` finds every pointer of its range first and
reads the blocks together (`BlockCache.read_many`, neighbours on disk in one I/O), and
`ObjectSet.prefetch_dnodes` reads the dnode blocks a directory listing will need several
at a time.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio
from construct import Bytes, Int64ub, Int64ul, Struct

from uvfs import ChargedLRU, FSError, MemoryBudget

from .blkptr import BLKPTR_SIZE, BlockPtr, parse_blkptr
from .dnode import (
    DMU_OT_NONE,
    DMU_OT_PLAIN_FILE_CONTENTS,
    DN_MAX_OBJECT,
    DNODE_MIN_SIZE,
    DNODE_SHIFT,
    DnodePhys,
    parse_dnode,
)

DMU_OST_META = 1
DMU_OST_ZFS = 2
OBJSET_PHYS_SIZE_V1 = 1024
DATA_CACHE_BYTES = 8 << 20  # file data blocks kept: a read and its read-ahead are <= 2 MiB
DNODE_CHARGE = 1536  # budget bytes charged per parsed dnode (measured: ~1.4 KiB)
DNODE_BLOCK_PREFETCH = 512  # dnode blocks one listing prefetches, at most
PREFETCH_PARALLEL = 8  # blocks read at once by the prefetches (small, latency-bound)
PREFETCH_FIRST_BLOCKS = 256  # subdirectories whose first block one listing prefetches


def _objset_tail(u64: type) -> Struct:
    return Struct(
        "os_zil_header" / Bytes(192),  # 512
        "os_type" / u64,  # 704
        "os_flags" / u64,  # 712
    ).compile()


_TAIL = {"<": _objset_tail(Int64ul), ">": _objset_tail(Int64ub)}


@dataclass(frozen=True, slots=True)
class ObjsetPhys:
    """The parts of an objset_phys_t a reader needs."""

    os_meta_dnode: DnodePhys
    os_type: int
    os_flags: int


def parse_objset(raw: bytes, byteorder: str) -> ObjsetPhys:
    """Decode an objset_phys_t (any of its sizes: the first 1024 bytes say all we use)."""
    if len(raw) < OBJSET_PHYS_SIZE_V1:
        raise FSError(errno.EIO, f"objset: {len(raw)} bytes, want at least {OBJSET_PHYS_SIZE_V1}")
    tail = _TAIL[byteorder].parse(raw[DNODE_MIN_SIZE:])
    return ObjsetPhys(parse_dnode(raw[:DNODE_MIN_SIZE], byteorder), tail.os_type, tail.os_flags)


class BlockSource(Protocol):
    """What the DMU needs from the pool: a block's logical bytes, verified."""

    async def read_bp(self, bp: BlockPtr) -> bytes: ...

    async def read_bps(self, bps: Sequence[BlockPtr]) -> list[bytes]: ...

    def prefetch_bps(
        self, bps: Sequence[BlockPtr], deliver: Callable[[BlockPtr, bytes | None], None]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of a `BlockCache`'s counters."""

    hits: int
    misses: int
    blocks: int  # held now


class BlockCache:
    """Decompressed blocks in front of the pool, shared by one mount, within its budget.

    Args:
        pool: where blocks come from.
        memory: the mount's budget (`MountOptions.memory`); default a budget of its own.
    """

    def __init__(self, pool: BlockSource, memory: MemoryBudget | None = None) -> None:
        self.pool = pool
        self.memory = memory = memory or MemoryBudget()
        # Keyed by where and when a block was written: cheaper to hash than the BlockPtr.
        self._metadata: ChargedLRU[tuple[int, ...], bytes] = memory.lru("zfs metadata")
        self._data: ChargedLRU[tuple[int, ...], bytes] = memory.lru(
            "zfs data", capacity=DATA_CACHE_BYTES
        )
        self._hits = 0
        self._misses = 0
        self._pending: dict[tuple[int, ...], trio.Event] = {}  # blocks being read now
        # Mount-wide, keyed by (object set number, object or block id), so that browsing
        # many snapshots does not multiply them.
        self.dnodes: ChargedLRU[tuple[int, int], DnodePhys] = memory.lru("zfs dnodes")
        self.dnode_blocks: ChargedLRU[tuple[int, int], tuple[bytes, str]] = memory.lru(
            "zfs dnode blocks"
        )
        self._objsets = itertools.count()

    def objset_number(self) -> int:
        """A number for a new object set's entries in the dnode caches (never reused)."""
        return next(self._objsets)

    @staticmethod
    def _key(bp: BlockPtr) -> tuple[int, ...] | None:
        """Where and when the block was written (cheaper to hash than the BlockPtr); None
        for an embedded pointer, whose data is in the pointer and never cached."""
        if bp.embedded:
            return None
        dva = bp.dvas[0] if bp.dvas else None
        return (dva.vdev, dva.offset, bp.birth_txg, bp.lsize) if dva else (-1, *bp.cksum)

    def _blocks(self, bp: BlockPtr) -> ChargedLRU[tuple[int, ...], bytes]:
        """Where `bp`'s block is kept: file data apart from everything else."""
        if bp.level == 0 and bp.type == DMU_OT_PLAIN_FILE_CONTENTS:
            return self._data
        return self._metadata

    async def read(self, bp: BlockPtr) -> bytes:
        """The logical bytes of `bp` (a non-hole pointer)."""
        key = self._key(bp)
        if key is None:
            return await self.pool.read_bp(bp)
        blocks = self._blocks(bp)
        data = blocks.get(key)
        if data is not None:
            self._hits += 1
            return data
        pending = self._pending.get(key)
        if pending is not None:  # another task is reading it: one disk read serves both
            await pending.wait()
            data = blocks.get(key)
            if data is not None:
                self._hits += 1
                return data
        self._misses += 1
        event = self._pending[key] = trio.Event()
        try:
            data = await self.pool.read_bp(bp)
        finally:  # a failed or cancelled read lets the waiters try for themselves
            del self._pending[key]
            event.set()
        blocks.put(key, data, len(data))
        return data

    async def read_many(self, bps: Sequence[BlockPtr]) -> list[bytes]:
        """`read` of each of `bps` (non-hole pointers); those not cached nor being read are
        read together (`BlockSource.read_bps`), so that neighbours share one I/O."""
        out: list[bytes] = [b""] * len(bps)
        wanted: dict[tuple[int, ...], list[int]] = {}  # key -> indexes of its pointers
        alone = []  # embedded pointers (no I/O) and blocks that another task is reading
        for i, bp in enumerate(bps):
            key = self._key(bp)
            data = None if key is None else self._blocks(bp).get(key)
            if data is not None:
                self._hits += 1
                out[i] = data
            elif key is None or key in self._pending:
                alone.append(i)
            else:
                wanted.setdefault(key, []).append(i)
        if wanted:
            self._misses += len(wanted)
            events = {key: trio.Event() for key in wanted}
            self._pending.update(events)
            try:
                datas = await self.pool.read_bps([bps[i[0]] for i in wanted.values()])
            finally:
                for key, event in events.items():
                    del self._pending[key]
                    event.set()
            for (key, indexes), data in zip(wanted.items(), datas, strict=True):
                for i in indexes:
                    out[i] = data
                self._blocks(bps[indexes[0]]).put(key, data, len(data))
        for i in alone:
            out[i] = await self.read(bps[i])
        return out

    def prefetch(self, bps: Sequence[BlockPtr]) -> None:
        """Start reading those of `bps` neither cached nor being read, without waiting: a
        reader that comes for one meanwhile waits for it (as for any block being read)."""
        todo = {}
        for bp in bps:
            key = self._key(bp)
            if key is not None and key not in self._pending and key not in self._blocks(bp):
                todo[key] = bp
                self._pending[key] = trio.Event()

        def deliver(bp: BlockPtr, data: bytes | None) -> None:
            key = self._key(bp)
            assert key is not None
            if data is not None:
                self._blocks(bp).put(key, data, len(data))
            self._pending.pop(key).set()

        if todo:
            self._misses += len(todo)
            self.pool.prefetch_bps(list(todo.values()), deliver)

    def statistics(self) -> CacheStatistics:
        """Hit and miss counts and what the cache holds now."""
        return CacheStatistics(self._hits, self._misses, len(self._metadata) + len(self._data))


async def block_pointer(cache: BlockCache, dn: DnodePhys, blkid: int) -> BlockPtr | None:
    """The pointer to level-0 block `blkid` of the object `dn`; None for a hole."""
    if dn.dn_type == DMU_OT_NONE or blkid > dn.dn_maxblkid:
        return None
    epbs = dn.dn_indblkshift - 7
    nlevels = dn.dn_nlevels
    top = blkid >> (epbs * (nlevels - 1)) if nlevels > 1 else blkid
    if top >= dn.dn_nblkptr:
        return None
    bp = dn.dn_blkptr[top]
    for level in range(nlevels - 1, 0, -1):  # bounded by dn_nlevels (at most DN_MAX_LEVELS)
        if bp.is_hole:
            return None
        if bp.level != level:
            raise FSError(errno.EIO, f"indirect block at level {bp.level}, expected {level}")
        data = await cache.read(bp)
        slot = ((blkid >> (epbs * (level - 1))) & ((1 << epbs) - 1)) * BLKPTR_SIZE
        if slot + BLKPTR_SIZE > len(data):
            raise FSError(errno.EIO, "indirect block shorter than its dnode says")
        bp = parse_blkptr(memoryview(data)[slot : slot + BLKPTR_SIZE], bp.byteorder)
    return None if bp.is_hole else bp


def _fit(data: bytes, size: int) -> bytes:
    """A block's data as `size` bytes: a short block padded with zeros."""
    if len(data) < size:
        return data + bytes(size - len(data))
    return data[:size] if len(data) > size else data


async def read_block(cache: BlockCache, dn: DnodePhys, blkid: int) -> tuple[bytes, str] | None:
    """Level-0 block `blkid` of the object `dn` and its byte order; None for a hole.

    The data is `dn.datablksz` bytes (a short block is padded with zeros).
    """
    bp = await block_pointer(cache, dn, blkid)
    if bp is None:
        return None
    return _fit(await cache.read(bp), dn.datablksz), bp.byteorder


async def read_object(
    cache: BlockCache, dn: DnodePhys, offset: int, size: int, *, ahead: int = 0
) -> bytes:
    """`size` bytes of object `dn` at `offset`, holes as zeros (no end-of-object check).

    The pointers of the range are found first (their indirect blocks are cached), then its
    blocks are read with `BlockCache.read_many`, so neighbours on disk share one I/O and
    slow decompression runs on both cores. With `ahead`, the blocks of the next `ahead`
    bytes start being read too (`BlockCache.prefetch`), for the next request to find.
    """
    bsz = dn.datablksz
    spans = []  # (skip, take, pointer): one per data block, bounded by size / datablksz
    pos, end = offset, offset + size
    while pos < end:
        blkid, skip = divmod(pos, bsz)
        take = min(bsz - skip, end - pos)
        spans.append((skip, take, await block_pointer(cache, dn, blkid)))
        pos += take
    if ahead:
        first, last = end // bsz, min((end + ahead - 1) // bsz, dn.dn_maxblkid)
        following = [await block_pointer(cache, dn, b) for b in range(first, last + 1)]
        cache.prefetch([bp for bp in following if bp is not None])
    datas = iter(await cache.read_many([bp for _, _, bp in spans if bp is not None]))
    parts = [
        bytes(take) if bp is None else _fit(next(datas), bsz)[skip : skip + take]
        for skip, take, bp in spans
    ]
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _prefetch(fetch: Callable[[int], Awaitable[object]], items: Sequence[int]) -> None:
    """`fetch` each item, PREFETCH_PARALLEL at a time; failures are ignored (a prefetch only
    warms the caches: the reader meets the same error and reports it)."""
    limiter = trio.CapacityLimiter(PREFETCH_PARALLEL)

    async def one(item: int) -> None:
        async with limiter:
            with contextlib.suppress(FSError):
                await fetch(item)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)


class ObjectSet:
    """One object set (the MOS, a filesystem, a snapshot) opened for reading.

    Args:
        cache: the mount's block cache.
        phys: the object set's root record.
    """

    def __init__(self, cache: BlockCache, phys: ObjsetPhys) -> None:
        self.cache = cache
        self.phys = phys
        self.meta = phys.os_meta_dnode
        self.number = cache.objset_number()

    @classmethod
    async def open(cls, cache: BlockCache, bp: BlockPtr) -> ObjectSet:
        """The object set whose objset_phys_t `bp` points to."""
        if bp.is_hole:
            raise FSError(errno.EIO, "object set pointer is a hole")
        return cls(cache, parse_objset(await cache.read(bp), bp.byteorder))

    async def dnode(self, obj: int) -> DnodePhys:
        """The dnode of object `obj`; ENOENT when the slot is free or out of range."""
        if not 0 < obj < DN_MAX_OBJECT:
            raise FSError(errno.ENOENT, f"object {obj} out of range")
        dn = self.cache.dnodes.get((self.number, obj))
        if dn is not None:
            return dn
        bsz = self._dnode_block_size()
        blkid, at = divmod(obj << DNODE_SHIFT, bsz)
        block = await self._dnode_block(blkid)
        if block is None:
            raise FSError(errno.ENOENT, f"object {obj} is not allocated")
        data, byteorder = block
        dn = parse_dnode(memoryview(data)[at:], byteorder)
        if dn.dn_type == DMU_OT_NONE:
            raise FSError(errno.ENOENT, f"object {obj} is free")
        self.cache.dnodes.put((self.number, obj), dn, DNODE_CHARGE)
        return dn

    def _dnode_block_size(self) -> int:
        bsz = self.meta.datablksz
        if bsz < DNODE_MIN_SIZE:
            raise FSError(errno.EIO, "meta dnode blocks smaller than a dnode")
        return bsz

    async def _dnode_block(self, blkid: int) -> tuple[bytes, str] | None:
        # The block cache skips the meta dnode's tree walk (often 6 levels) for neighbours.
        key = (self.number, blkid)
        block = self.cache.dnode_blocks.get(key)
        if block is None:
            block = await read_block(self.cache, self.meta, blkid)
            if block is not None:
                self.cache.dnode_blocks.put(key, block, len(block[0]))
        return block

    async def prefetch_dnodes(self, objs: Iterable[int]) -> None:
        """Bring the dnode blocks of `objs` into the cache, up to PREFETCH_PARALLEL reads at
        once, as zfs_readdir prefetches its entries' dnodes: a cold listing then waits for
        the disk once per batch, not once per block. Errors are left for `dnode` to raise.
        """
        bsz = self._dnode_block_size()
        cached = self.cache.dnodes
        wanted = {
            (obj << DNODE_SHIFT) // bsz
            for obj in objs
            if 0 < obj < DN_MAX_OBJECT and (self.number, obj) not in cached
        }
        missing = [b for b in sorted(wanted) if (self.number, b) not in self.cache.dnode_blocks]
        # No more than a quarter of the budget, so that it never evicts what it fetched.
        most = min(DNODE_BLOCK_PREFETCH, self.cache.memory.budget // (4 * bsz))
        if len(missing) > 1:
            await _prefetch(self._dnode_block, missing[:most])

    async def prefetch_first_blocks(self, objs: Sequence[int]) -> None:
        """Bring block 0 of each of `objs` into the block cache, PREFETCH_PARALLEL at once:
        a listing's subdirectories, whose ZAPs a walk (find, du) opens next. Errors are
        left for the reader to raise."""

        async def fetch(obj: int) -> None:
            await read_block(self.cache, await self.dnode(obj), 0)

        if len(objs) > 1:
            await _prefetch(fetch, objs[:PREFETCH_FIRST_BLOCKS])

    async def read(self, dn: DnodePhys, offset: int, size: int, *, ahead: int = 0) -> bytes:
        """`read_object` in this object set."""
        return await read_object(self.cache, dn, offset, size, ahead=ahead)
