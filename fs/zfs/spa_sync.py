"""Syncing the MOS to convergence (module/zfs/spa.c spa_sync_iterate_to_convergence,
metaslab.c metaslab_sync, dsl_pool.c dsl_pool_sync): a txg's new MOS root.

The MOS holds the space maps, so writing it allocates space that its own space maps must
record, which dirties them, which allocates again. spa_sync repeats sync passes until a
pass dirties nothing new. Here every pass starts again from the state at the start of the
txg (the metaslabs as the datasets, synced once before the first pass, left them; the
caller's changes) plus what the previous pass found the space maps, the MOS's space
accounting and the deferred-free list must say; the pass that finds what the one before
found is the txg (a fixed point). Blocks written by an abandoned pass were never on a
device (`SyncContext` only collects them). Three rules of upstream's late passes make the
passes converge (without them, space map appends moved allocations between metaslabs
from pass to pass and some txgs cycled forever):

- Rewrite (zfs_sync_pass_rewrite): from pass 2 on, a block goes where the last pass put
  one of the same size and copies (born in this txg, reached by no synced uberblock);
  a place no block takes stays allocated and is deferred, so allocations only grow.
- Deferred frees (zfs_sync_pass_deferred_free): the MOS's frees go on the pool's
  deferred-free list ("sync_bplist", a bplist before pool version 26; a bpobj after,
  which this writer does not use yet: its frees stay immediate) and are freed in the
  next txg, before its first pass, so a pass never dirties the space maps of metaslabs
  that hold old blocks.
  New allocations go first to metaslabs whose space maps change anyway.
- No compression (zfs_sync_pass_dont_compress): from pass 3 on MOS blocks are stored
  uncompressed, so their sizes stop moving.

Measured: 4 to 6 passes a txg over 500 small txgs in a row (tests/zfs/test_write_converge.py).

What the space maps say: each metaslab's allocations and frees of the txg, appended to
its space map object as one debug record then entries, per kind (metaslab_sync), with the
header's smp_length and smp_alloc moved on. This writer allocates only from metaslabs
that already have a space map object (creating one is later work), records every pass's
result as pass 1, and writes one-word entries (pools without spacemap_v2).

What the accounting says: MOS blocks are charged to the "$MOS" DSL directory (and, as a
child's usage, to the root directory above it), as dsl_dataset_block_born/_kill do for
blocks of no dataset.
"""

from __future__ import annotations

import copy
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from uvfs import FSError
from uvfs_fs.zfs.blkptr import BLKPTR_SIZE, DVA, BlockPtr, parse_blkptrs
from uvfs_fs.zfs.bplist import bplist_append, bplist_entries
from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_FLETCHER_4
from uvfs_fs.zfs.compress import ZIO_COMPRESS_OFF
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import (
    DD_USED_CHILD,
    DD_USED_HEAD,
    dsl_dir_diduse_space,
    parse_dsl_dir,
)
from uvfs_fs.zfs.metaslab import Metaslab
from uvfs_fs.zfs.objset_sync import (
    DirtyObjset,
    Owner,
    SyncContext,
    Usage,
    WritePolicy,
    append_to_object,
    sync_objset,
)
from uvfs_fs.zfs.spacemap import (
    SmRecord,
    encode_entries,
    parse_space_map_phys,
    space_map_phys_append,
)
from uvfs_fs.zfs.zap import Zap

MAX_SYNC_PASSES = 20
DMU_POOL_SYNC_BPLIST = b"sync_bplist"
DMU_OT_BPLIST = 5
SYNC_PASS_REWRITE = 2  # from this pass on, blocks go where the last pass put its own
SYNC_PASS_DONT_COMPRESS = 3  # from this pass on, MOS blocks are not compressed
MOS_POLICY = WritePolicy(compress=0, checksum=ZIO_CHECKSUM_FLETCHER_4, copies=1, is_mos=True)
MOS_POLICY_LATE = replace(MOS_POLICY, meta_compress=ZIO_COMPRESS_OFF)


@dataclass
class MosSync:
    """A converged txg: the new MOS root, the blocks to write, the metaslabs afterwards."""

    rootbp: BlockPtr
    writes: list[tuple[DVA, bytes]]
    metaslabs: dict[int, list[Metaslab]]
    passes: int


async def _mos_dirs(mos: ObjectSet) -> list[int]:
    """The "$MOS" DSL directory and its ancestors, nearest first; [] in pools before it."""
    root = (await (await Zap.open(mos, 1)).lookup(b"root_dataset")).int()
    dn = await mos.dnode(root)
    children = parse_dsl_dir(dn.dn_bonus, dn.byteorder).dd_child_dir_zapobj
    try:
        obj = (await (await Zap.open(mos, children)).lookup(b"$MOS")).int()
    except FSError as e:
        if e.errno == errno.ENOENT:
            return []
        raise
    chain = []
    while obj and len(chain) < 64:
        chain.append(obj)
        dn = await mos.dnode(obj)
        obj = parse_dsl_dir(dn.dn_bonus, dn.byteorder).dd_parent_obj
    return chain


async def _append_space_map(
    cache: BlockCache, mos: ObjectSet, dirty: DirtyObjset, ms: Metaslab, records: list[SmRecord]
) -> None:
    """Add `records` to the end of `ms`'s space map object in `dirty`."""
    dn = await dirty.dnode(mos, ms.sm_object)
    phys = parse_space_map_phys(dn.dn_bonus, dn.byteorder)
    words = encode_entries(records, dn.byteorder, at=phys.smp_length, blksz=dn.datablksz)
    dn = await append_to_object(cache, mos, dirty, ms.sm_object, phys.smp_length, words)
    alloc = ms.allocating.space - ms.freeing.space
    bonus = space_map_phys_append(dn.dn_bonus, dn.byteorder, len(words), alloc)
    dirty.dnodes[ms.sm_object] = dn._replace(dn_bonus=bonus)


async def _charge(mos: ObjectSet, dirty: DirtyObjset, dirs: list[int], usage: Usage) -> None:
    """Charge `usage` to the "$MOS" directory (its own) and its ancestors (a child's)."""
    for i, obj in enumerate(dirs):
        dn = await dirty.dnode(mos, obj)
        kind = DD_USED_HEAD if i == 0 else DD_USED_CHILD
        bonus = dsl_dir_diduse_space(dn.dn_bonus, dn.byteorder, kind, usage.used,
                                     usage.compressed, usage.uncompressed)  # fmt: skip
        dirty.dnodes[obj] = dn._replace(dn_bonus=bonus)


async def spa_sync_mos(
    cache: BlockCache,
    rootbp: BlockPtr,
    changes: DirtyObjset,
    metaslabs: dict[int, list[Metaslab]],
    ashifts: dict[int, int],
    txg: int,
    before: Callable[[SyncContext, DirtyObjset], Awaitable[None]] | None = None,
) -> MosSync:
    """Sync `changes` to the MOS under `rootbp` as txg `txg`, to convergence.

    Args:
        cache: reads the synced tree.
        rootbp: the MOS root of the last synced txg.
        changes: the txg's changes to the MOS (not modified).
        metaslabs: the metaslabs at the start of the txg (not modified).
        ashifts: the top-level vdevs that may take blocks, with their ashifts.
        txg: the txg being synced.
        before: called once, before the first pass, to sync the datasets' object sets
            with the context given and add their changes to the MOS's.

    Raises:
        FSError: ENOSPC, a structure this writer does not grow, or no convergence within
            MAX_SYNC_PASSES passes.
    """
    mos = await ObjectSet.open(cache, rootbp)
    dirs = await _mos_dirs(mos)
    deferred_obj = await _sync_bplist(mos)
    # The datasets sync once, in pass 1 (dsl_pool_sync): only the MOS goes round again.
    base, base_dirty = copy.deepcopy(metaslabs), changes.copy()
    datasets = SyncContext(txg, base, ashifts)
    if deferred_obj is not None:
        await _free_deferred(mos, base_dirty, datasets, deferred_obj)
    if before is not None:
        await before(datasets, base_dirty)
    previous: tuple[dict[tuple[int, int], list[SmRecord]], Usage, list[BlockPtr]] | None = None
    previous_state, rewritable = base, {}
    for syncpass in range(1, MAX_SYNC_PASSES + 1):
        dirty = base_dirty.copy()
        state = copy.deepcopy(base)
        if previous is not None:
            records, usage, deferred = previous
            for (vdev, ms_id), recs in sorted(records.items()):
                await _append_space_map(cache, mos, dirty, previous_state[vdev][ms_id], recs)
            await _charge(mos, dirty, dirs, usage)
            if deferred_obj is not None and deferred:
                await _defer(cache, mos, dirty, deferred_obj, deferred)
        ctx = SyncContext(txg, state, ashifts)
        if syncpass >= SYNC_PASS_REWRITE:
            ctx.rewrite(rewritable)
        if previous is not None:
            ctx.active = frozenset(previous[0])  # their space maps change this pass anyway
        ctx.deferred = [] if deferred_obj is not None else None
        ctx.owner = mos_owner = Owner()
        policy = MOS_POLICY if syncpass < SYNC_PASS_DONT_COMPRESS else MOS_POLICY_LATE
        new_root = await sync_objset(cache, rootbp, dirty, ctx, policy)
        ctx.release()
        found = {
            (ms.vdev, ms.id): ms.records(txg)
            for mss in state.values()
            for ms in mss
            if len(ms.allocating) or len(ms.freeing)
        }
        usage = mos_owner.born - mos_owner.freed
        now = (found, usage, ctx.deferred or [])
        if previous is not None and now == previous:
            return MosSync(new_root, datasets.writes + ctx.writes, state, syncpass)
        previous, previous_state, rewritable = now, state, ctx.allocations
    raise FSError(errno.EAGAIN, f"txg {txg}: the MOS did not converge in {MAX_SYNC_PASSES} passes")


async def _sync_bplist(mos: ObjectSet) -> int | None:
    """The pool's deferred-free list (the MOS directory's "sync_bplist"), or None when
    there is none or it is a bpobj (pool version 26 on: sub-lists not written yet)."""
    try:
        obj = (await (await Zap.open(mos, 1)).lookup(DMU_POOL_SYNC_BPLIST)).int()
    except FSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return obj if (await mos.dnode(obj)).dn_type == DMU_OT_BPLIST else None


async def _free_deferred(mos: ObjectSet, dirty: DirtyObjset, ctx: SyncContext, obj: int) -> None:
    """Free what the last txg deferred (spa_sync_deferred_bplist) and empty the list (its
    header: the blocks stay, to be written over)."""
    dn = await mos.dnode(obj)
    count = bplist_entries(dn.dn_bonus, dn.byteorder)
    if not count:
        return
    owner, ctx.owner = ctx.owner, Owner()  # charged when they were deferred
    for bp in parse_blkptrs(await mos.read(dn, 0, count * BLKPTR_SIZE), dn.byteorder):
        ctx.free(bp)
    ctx.owner = owner
    dirty.dnodes[obj] = dn._replace(dn_bonus=bytes(len(dn.dn_bonus)))


async def _defer(
    cache: BlockCache, mos: ObjectSet, dirty: DirtyObjset, obj: int, bps: list[BlockPtr]
) -> None:
    """Append `bps` to the deferred-free list `obj` in `dirty`."""
    dn = await dirty.dnode(mos, obj)
    total = Usage()
    for bp in bps:
        total.add(bp)
    at = bplist_entries(dn.dn_bonus, dn.byteorder) * BLKPTR_SIZE
    bonus, array = bplist_append(dn.dn_bonus, dn.byteorder, bps,
                                 (total.used, total.compressed, total.uncompressed))  # fmt: skip
    dn = await append_to_object(cache, mos, dirty, obj, at, array)
    dirty.dnodes[obj] = dn._replace(dn_bonus=bonus)
