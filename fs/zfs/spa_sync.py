"""Syncing the MOS to convergence (module/zfs/spa.c spa_sync_iterate_to_convergence,
metaslab.c metaslab_sync, dsl_pool.c dsl_pool_sync): a txg's new MOS root.

The MOS holds the space maps, so writing it allocates space that its own space maps must
record, which dirties them, which allocates again. spa_sync repeats sync passes until a
pass dirties nothing new; late passes upstream overwrite in place blocks born in this
txg, which this writer never does. Instead, every pass here starts again from the state
at the start of the txg: the metaslabs as they were, the caller's changes, plus what the
previous pass found the space maps and the MOS's space accounting must say. Allocation
is deterministic first-fit, so once a pass asks for the same sizes as the one before, it
gets the same places and writes the same records: that pass is the txg (a fixed point;
in practice the third pass). Blocks written by an abandoned pass were never on a device
(`SyncContext` only collects them).

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
from dataclasses import dataclass

from uvfs import FSError
from uvfs_fs.zfs.blkptr import DVA, BlockPtr
from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_FLETCHER_4
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
MOS_POLICY = WritePolicy(compress=0, checksum=ZIO_CHECKSUM_FLETCHER_4, copies=1, is_mos=True)


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
        before: called at the start of every pass, to sync the datasets' object sets
            with the pass's context and add their changes to the MOS's.

    Raises:
        FSError: ENOSPC, a structure this writer does not grow, or no convergence within
            MAX_SYNC_PASSES passes.
    """
    mos = await ObjectSet.open(cache, rootbp)
    dirs = await _mos_dirs(mos)
    previous: tuple[dict[tuple[int, int], list[SmRecord]], Usage] | None = None
    previous_state = metaslabs
    for syncpass in range(1, MAX_SYNC_PASSES + 1):
        dirty = changes.copy()
        state = copy.deepcopy(metaslabs)
        if previous is not None:
            records, usage = previous
            for (vdev, ms_id), recs in sorted(records.items()):
                await _append_space_map(cache, mos, dirty, previous_state[vdev][ms_id], recs)
            await _charge(mos, dirty, dirs, usage)
        ctx = SyncContext(txg, state, ashifts)
        if before is not None:
            await before(ctx, dirty)
        ctx.owner = mos_owner = Owner()
        new_root = await sync_objset(cache, rootbp, dirty, ctx, MOS_POLICY)
        found = {
            (ms.vdev, ms.id): ms.records(txg)
            for mss in state.values()
            for ms in mss
            if len(ms.allocating) or len(ms.freeing)
        }
        usage = mos_owner.born - mos_owner.freed
        if previous is not None and (found, usage) == previous:
            return MosSync(new_root, ctx.writes, state, syncpass)
        previous, previous_state = (found, usage), state
    raise FSError(errno.EAGAIN, f"txg {txg}: the MOS did not converge in {MAX_SYNC_PASSES} passes")
