"""Syncing a dataset (module/zfs/dsl_dataset.c dsl_dataset_sync, dsl_dataset_block_born and
dsl_dataset_block_kill): its object set copied on write, then its records in the MOS.

The object set is written by objset_sync.py; its new root becomes the dataset's ds_bp.
Every block born is charged to the dataset (referenced, unique) and its DSL directory
(used, as the head's own; the parents see it as a child's). A block let go is freed when
born after the dataset's latest snapshot (ds_prev_snap_txg): then the dataset and its
directory lose it. An older block still belongs to the snapshot: it goes on the dataset's
deadlist, the dataset no longer references it, the directory keeps it but counts it as
the snapshots' (DD_USED_HEAD to DD_USED_SNAP), and when the snapshot before the head was
the only other holder (born after that snapshot's own predecessor), the block becomes
unique to it. A file whose dn_used changes moves its owners' user and group usage.

Deadlists here are the bplists of pool versions before 26 (bplist.py); the later
dsl_deadlist of sub-lists is not written yet.
"""

from __future__ import annotations

import errno

from uvfs import FSError
from uvfs_fs.zfs.blkptr import BLKPTR_SIZE
from uvfs_fs.zfs.bplist import bplist_append, bplist_entries
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dsl import (
    DD_USED_CHILD,
    DD_USED_HEAD,
    DD_USED_SNAP,
    dsl_dataset_diduse_space,
    dsl_dir_diduse_space,
    dsl_dir_transfer_space,
    parse_dsl_dataset,
    parse_dsl_dir,
)
from uvfs_fs.zfs.objset_sync import (
    DirtyObjset,
    Owner,
    SyncContext,
    Usage,
    WritePolicy,
    append_to_object,
    sync_objset,
)
from uvfs_fs.zfs.znode import znode_owner_ids

SPA_VERSION_DEADLISTS = 26
MAX_DIR_DEPTH = 64


def _triple(u: Usage) -> tuple[int, int, int]:
    return (u.used, u.compressed, u.uncompressed)


async def sync_dataset(
    cache: BlockCache,
    mos: ObjectSet,
    mos_dirty: DirtyObjset,
    ds_obj: int,
    changes: DirtyObjset,
    ctx: SyncContext,
    policy: WritePolicy,
    version: int,
) -> None:
    """Write dataset `ds_obj`'s `changes` with `ctx`, and its new ds_bp, space accounting
    and deadlist into `mos_dirty`.

    Raises:
        FSError: EOPNOTSUPP when blocks must go on a deadlist of pool version 26 or later.
    """
    dn = await mos_dirty.dnode(mos, ds_obj)
    order = dn.byteorder
    ds = parse_dsl_dataset(dn.dn_bonus, order)
    ctx.owner = owner = Owner(prev_snap_txg=ds.ds_prev_snap_txg)
    root = await sync_objset(cache, ds.ds_bp, changes, ctx, policy, znode_owner_ids)
    net = owner.born - owner.freed
    dead = Usage()
    for bp in owner.dead:
        dead.add(bp)
    bonus = dsl_dataset_diduse_space(dn.dn_bonus, order, _triple(net - dead), net.used, root)
    mos_dirty.dnodes[ds_obj] = dn._replace(dn_bonus=bonus)
    dir_obj, kind = ds.ds_dir_obj, DD_USED_HEAD
    for _ in range(MAX_DIR_DEPTH):
        if not dir_obj:
            break
        ddn = await mos_dirty.dnode(mos, dir_obj)
        bonus = dsl_dir_diduse_space(ddn.dn_bonus, ddn.byteorder, kind, *_triple(net))
        if kind == DD_USED_HEAD and dead.used:
            bonus = dsl_dir_transfer_space(bonus, ddn.byteorder, dead.used, DD_USED_HEAD,
                                           DD_USED_SNAP)  # fmt: skip
        mos_dirty.dnodes[dir_obj] = ddn._replace(dn_bonus=bonus)
        dir_obj, kind = parse_dsl_dir(bonus, ddn.byteorder).dd_parent_obj, DD_USED_CHILD
    if owner.dead:
        if version >= SPA_VERSION_DEADLISTS:
            raise FSError(errno.EOPNOTSUPP, "deadlists of pool version 26 and later are "
                          "not written yet")  # fmt: skip
        await _kill_to_snapshot(cache, mos, mos_dirty, ds_obj, owner, dead)


async def _kill_to_snapshot(
    cache: BlockCache, mos: ObjectSet, mos_dirty: DirtyObjset, ds_obj: int, owner: Owner,
    dead: Usage,
) -> None:  # fmt: skip
    """Put `owner.dead` on the dataset's deadlist; what only the previous snapshot holds
    now becomes unique to it."""
    ds = parse_dsl_dataset((await mos_dirty.dnode(mos, ds_obj)).dn_bonus, mos.meta.byteorder)
    prev_dn = await mos_dirty.dnode(mos, ds.ds_prev_snap_obj)
    prev = parse_dsl_dataset(prev_dn.dn_bonus, prev_dn.byteorder)
    if prev.ds_next_snap_obj == ds_obj:
        mine = Usage()
        for bp in owner.dead:
            if bp.birth_txg > prev.ds_prev_snap_txg:
                mine.add(bp)
        bonus = dsl_dataset_diduse_space(prev_dn.dn_bonus, prev_dn.byteorder, (0, 0, 0), mine.used)
        mos_dirty.dnodes[ds.ds_prev_snap_obj] = prev_dn._replace(dn_bonus=bonus)
    obj = ds.ds_deadlist_obj
    dl = await mos_dirty.dnode(mos, obj)
    at = bplist_entries(dl.dn_bonus, dl.byteorder) * BLKPTR_SIZE
    bonus, array = bplist_append(dl.dn_bonus, dl.byteorder, owner.dead, _triple(dead))
    dl = await append_to_object(cache, mos, mos_dirty, obj, at, array)
    mos_dirty.dnodes[obj] = dl._replace(dn_bonus=bonus)
