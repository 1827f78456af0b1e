"""PoolWriter: an exported pool opened for writing, one transaction group at a time.

The handle the write path holds (the later FUSE write side, tools, tests): `open` imports
the pool from its member images, writable; `sync` commits a txg through txg.py's phases,
writing each phase's bytes and flushing every member image (fdatasync) before the next.
Nothing is written before `sync`, and the old uberblock stays the active one until the new
one is on disk, so an error (or a kill) at any point leaves the pool importable at the
txg it had.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from uvfs import ImageFile, Refusal
from uvfs_fs.zfs.spa import POOL_STATES, Pool, open_pool
from uvfs_fs.zfs.txg import (
    LeafWrite,
    Phase,
    config_sync_phases,
    leaves,
    uberblock_update,
    vdev_guid_sum,
)

POOL_STATE_ACTIVE = 0


class PoolWriter:
    """One pool open for writing. Attributes: `pool` (the reader's handle, its
    `uberblock` the last synced one) and `images` (the member images, writable)."""

    def __init__(self, pool: Pool, images: Sequence[ImageFile]) -> None:
        self.pool = pool
        self.images = list(images)

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
            if state != 1:
                name = POOL_STATES[state] if 0 <= state < len(POOL_STATES) else state
                raise Refusal(f"pool {pool.name!r} is {name}, not exported")
            absent = [leaf for top in pool.vdevs for leaf in leaves(top) if leaf.image is None]
            if absent:
                names = ", ".join(leaf.path or str(leaf.guid) for leaf in absent)
                raise Refusal(f"pool {pool.name!r}: member(s) missing, cannot write: {names}")
        except BaseException:
            for image in images:
                image.close()
            raise
        return cls(pool, images)

    async def sync(self) -> int:
        """Commit the next txg: the new uberblock, after everything else is durable.

        Returns:
            The txg now active.
        """
        old = self.pool.uberblock
        guid_sum = vdev_guid_sum(self.pool.guid, self.pool.vdevs)
        ub = uberblock_update(old, old.ub_txg + 1, old.ub_rootbp, guid_sum,
                              max(int(time.time()), old.ub_timestamp))  # fmt: skip
        for phase in config_sync_phases([], self.pool.vdevs, ub):
            await self._write_phase(phase)
        self.pool.uberblock = ub
        return ub.ub_txg

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
