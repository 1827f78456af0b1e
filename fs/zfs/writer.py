"""PoolWriter: an exported pool opened for writing, one transaction group at a time.

The handle the write path holds (the later FUSE write side, tools, tests): `open` imports
the pool from its member images, writable, with its metaslabs; changes (`set_dsl_prop`)
only gather in memory; `sync` commits them as one txg: the MOS copied on write to
convergence (spa_sync.py), then txg.py's phases, writing each phase's bytes and flushing
every member image (fdatasync) before the next. The old uberblock stays the active one
until the new one is on disk, and no block it reaches is ever overwritten, so an error (or
a kill) at any point leaves the pool importable at the txg it had. After an error during
the write phases the writer refuses further syncs: its metaslabs no longer say what is on
disk.

Pools of versions 1-28 only, for now: feature-flag pools need their features' structures
kept up to date (space map histograms, log space maps ...).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence

from uvfs import FSError, ImageFile, Refusal
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet, read_block
from uvfs_fs.zfs.dsl import list_datasets
from uvfs_fs.zfs.metaslab import Metaslab, load_pool_metaslabs
from uvfs_fs.zfs.objset_sync import DirtyObjset
from uvfs_fs.zfs.spa import POOL_STATES, SPA_VERSION_MAX_NUMBERED, Pool, open_pool
from uvfs_fs.zfs.spa_sync import spa_sync_mos
from uvfs_fs.zfs.txg import (
    LeafWrite,
    Phase,
    block_writes,
    config_sync_phases,
    leaves,
    uberblock_update,
    vdev_guid_sum,
)
from uvfs_fs.zfs.zap import ZBT_MICRO, mzap_set, zap_block_type

POOL_STATE_ACTIVE, POOL_STATE_EXPORTED = 0, 1


class PoolWriter:
    """One pool open for writing.

    Attributes:
        pool: the reader's handle; its `uberblock` is the last synced one.
        images: the member images, writable.
        metaslabs: every top-level vdev's metaslabs as the last synced txg left them.
    """

    def __init__(
        self, pool: Pool, images: Sequence[ImageFile], metaslabs: dict[int, list[Metaslab]]
    ) -> None:
        self.pool = pool
        self.images = list(images)
        self.metaslabs = metaslabs
        self._mos = DirtyObjset()  # the open txg's changes to the MOS
        self._broken = False

    @classmethod
    async def open(cls, paths: Sequence[str]) -> PoolWriter:
        """Open the pool whose member images are `paths`, for writing.

        Raises:
            Refusal: one line: what open_pool refuses, a pool still active (imported
                elsewhere, or not exported cleanly), a member missing.
        """
        images = [ImageFile(p, writable=True) for p in paths]
        try:
            pool = await open_pool(images)
            state = int(pool.config.get("state", -1))  # type: ignore[arg-type]
            if state == POOL_STATE_ACTIVE:
                raise Refusal(f"pool {pool.name!r} is active (imported elsewhere, or not "
                              "exported): export it first")  # fmt: skip
            if pool.version > SPA_VERSION_MAX_NUMBERED:
                raise Refusal(f"pool {pool.name!r}: version {pool.version} (feature flags) "
                              "is not written yet")  # fmt: skip
            if state != POOL_STATE_EXPORTED:
                name = POOL_STATES[state] if 0 <= state < len(POOL_STATES) else state
                raise Refusal(f"pool {pool.name!r} is {name}, not exported")
            absent = [leaf for top in pool.vdevs for leaf in leaves(top) if leaf.image is None]
            if absent:
                names = ", ".join(leaf.path or str(leaf.guid) for leaf in absent)
                raise Refusal(f"pool {pool.name!r}: member(s) missing, cannot write: {names}")
            mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
            metaslabs = await load_pool_metaslabs(mos)
        except BaseException:
            for image in images:
                image.close()
            raise
        return cls(pool, images, metaslabs)

    async def _mos_objset(self) -> ObjectSet:
        """The MOS of the last synced txg, read afresh (nothing cached from older txgs)."""
        return await ObjectSet.open(BlockCache(self.pool), self.pool.uberblock.ub_rootbp)

    async def set_dsl_prop(self, dataset: str, name: str, value: int) -> None:
        """Set integer property `name` of filesystem `dataset` (its DSL directory's
        properties ZAP) in the open txg, as ``zfs set`` does for a local value.

        Raises:
            FSError: ENOENT for no such filesystem; EOPNOTSUPP when its properties are a
                fat ZAP or a full micro ZAP (not written yet).
        """
        mos = await self._mos_objset()
        found = [d for d in await list_datasets(mos, self.pool.name) if d.name == dataset]
        if not found or found[0].is_snapshot:
            raise FSError(errno.ENOENT, f"no filesystem {dataset!r}")
        obj = found[0].dir.dd_props_zapobj
        dn = await mos.dnode(obj)
        data, order = self._mos.blocks.get(obj, {}).get(0), dn.byteorder
        if data is None:
            block = await read_block(mos.cache, dn, 0)
            if block is None:
                raise FSError(errno.EIO, f"{dataset}: properties ZAP {obj} has no block 0")
            data, order = block
        if zap_block_type(data, order) != ZBT_MICRO:
            raise FSError(errno.EOPNOTSUPP, f"{dataset}: a fat properties ZAP is not written yet")
        try:
            data = mzap_set(data, order, name.encode(), value)
        except ValueError as e:
            raise FSError(errno.EOPNOTSUPP, f"{dataset}: {e}") from None
        self._mos.blocks.setdefault(obj, {})[0] = data

    async def sync(self) -> int:
        """Commit the open txg: its blocks, then the new uberblock once they are durable.

        Returns:
            The txg now active.

        Raises:
            FSError: the txg could not be written (ENOSPC, a structure not written yet,
                an I/O error); the pool stays at the txg it had.
        """
        if self._broken:
            raise FSError(errno.EIO, f"pool {self.pool.name!r}: an earlier sync failed")
        old = self.pool.uberblock
        txg = old.ub_txg + 1
        rootbp, blocks, metaslabs = old.ub_rootbp, [], self.metaslabs
        if self._mos.blocks or self._mos.dnodes:
            ashifts = {v.id: v.ashift for v in self.pool.vdevs
                       if v.id in self.metaslabs and not v.is_log}  # fmt: skip
            done = await spa_sync_mos(BlockCache(self.pool), old.ub_rootbp, self._mos,
                                      self.metaslabs, ashifts, txg)  # fmt: skip
            rootbp, metaslabs = done.rootbp, done.metaslabs
            try:
                blocks = block_writes(self.pool.vdevs, done.writes)
            except ValueError as e:
                raise FSError(errno.EOPNOTSUPP, f"pool {self.pool.name!r}: {e}") from None
        guid_sum = vdev_guid_sum(self.pool.guid, self.pool.vdevs)
        ub = uberblock_update(old, txg, rootbp, guid_sum, max(int(time.time()), old.ub_timestamp))
        self._broken = True  # until every phase is through
        for phase in config_sync_phases(blocks, self.pool.vdevs, ub):
            await self._write_phase(phase)
        for mss in metaslabs.values():
            for ms in mss:
                ms.sync(txg)
        self.pool.uberblock, self.metaslabs, self._mos = ub, metaslabs, DirtyObjset()
        self._broken = False
        return txg

    async def _write_phase(self, phase: Phase) -> None:
        """Write `phase`, then flush every member (a phase's order inside is free)."""
        for w in phase:
            await _image(w).write(w.offset, w.data)
        for image in self.images:
            await image.sync()

    def close(self) -> None:
        """Close the member images (what was not synced is dropped)."""
        for image in self.images:
            image.close()


def _image(w: LeafWrite) -> ImageFile:
    assert w.leaf.image is not None  # open refuses pools with members missing
    return w.leaf.image
