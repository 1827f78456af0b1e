"""PoolWriter: an exported pool opened for writing, one transaction group at a time.

The handle the write path holds (the later FUSE write side, tools, tests): `open` imports
the pool from its member images, writable, with its metaslabs; changes (`set_dsl_prop`,
`write_file_range`, `truncate`, `setattr`, `create`, `mkdir`, `unlink`, `rmdir`,
`rename`: the namespace ones and setattr's in zpl_write.py) only gather in memory; `sync`
commits them as one txg: each changed dataset's object set copied on write
(dataset_sync.py) and the MOS with it,
to convergence (spa_sync.py), then txg.py's phases, writing each phase's bytes and
flushing every member image (fdatasync) before the next. The old uberblock stays the active one
until the new one is on disk, and no block it reaches is ever overwritten, so an error (or
a kill) at any point leaves the pool importable at the txg it had. After an error during
the write phases the writer refuses further syncs: its metaslabs no longer say what is on
disk.

Pools of versions 1-28 only, for now: feature-flag pools need their features' structures
kept up to date (space map histograms, log space maps ...).
"""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Sequence

from uvfs import FSError, ImageFile, Refusal
from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_FLETCHER_4, ZIO_CHECKSUM_ON
from uvfs_fs.zfs.compress import ZIO_COMPRESS_LZJB, ZIO_COMPRESS_OFF, ZIO_COMPRESS_ON
from uvfs_fs.zfs.dataset_sync import SPA_VERSION_DEADLISTS, sync_dataset
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet, read_block
from uvfs_fs.zfs.dnode import DMU_OT_PLAIN_FILE_CONTENTS, DMU_OT_ZNODE, DnodePhys
from uvfs_fs.zfs.dsl import Dataset, list_datasets
from uvfs_fs.zfs.metaslab import Metaslab, load_pool_metaslabs
from uvfs_fs.zfs.objset_sync import DirtyObjset, SyncContext, WritePolicy
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
from uvfs_fs.zfs.znode import parse_znode_phys, znode_phys_set_size, znode_phys_set_times
from uvfs_fs.zfs.zpl_write import Entry, Node, ZplTxg

POOL_STATE_ACTIVE, POOL_STATE_EXPORTED = 0, 1
SPA_MINBLOCKSIZE = 512
DEFAULT_RECORDSIZE = 128 * 1024


class PoolWriter:
    """One pool open for writing.

    Attributes:
        pool: the reader's handle; its `uberblock` is the last synced one.
        images: the member images it opened itself (from file names), which `close`
            closes.
        metaslabs: every top-level vdev's metaslabs as the last synced txg left them.
    """

    def __init__(
        self, pool: Pool, images: Sequence[ImageFile], metaslabs: dict[int, list[Metaslab]]
    ) -> None:
        self.pool = pool
        self.images = list(images)
        self.metaslabs = metaslabs
        self._mos = DirtyObjset()  # the open txg's changes to the MOS
        self._datasets: dict[int, tuple[DirtyObjset, WritePolicy]] = {}  # by dataset object
        self._broken = False
        self.last_passes = 0  # the MOS sync passes the last sync took (0: nothing to write)

    @classmethod
    async def open(cls, paths: Sequence[str | ImageFile]) -> PoolWriter:
        """Open the pool whose member images are `paths` (file names, or images opened
        writable, which stay the caller's to close), for writing.

        Raises:
            Refusal: one line: what open_pool refuses, a pool still active (imported
                elsewhere, or not exported cleanly), a member missing, an image open
                read-only.
        """
        images = [p if isinstance(p, ImageFile) else ImageFile(p, writable=True) for p in paths]
        owned = [image for image, p in zip(images, paths, strict=True) if image is not p]
        try:
            for image in images:
                if not image.writable:
                    raise Refusal(f"{image.path}: the image is open read-only")
            pool = await open_pool(images)
            state = int(pool.config.get("state", -1))  # type: ignore[arg-type]
            if state == POOL_STATE_ACTIVE:
                raise Refusal(f"pool {pool.name!r} is active (imported elsewhere, or not "
                              "exported): export it first")  # fmt: skip
            if pool.version > SPA_VERSION_MAX_NUMBERED:
                raise Refusal(f"pool {pool.name!r}: version {pool.version} (feature flags) "
                              "is not written yet")  # fmt: skip
            if pool.version >= SPA_VERSION_DEADLISTS:
                raise Refusal(f"pool {pool.name!r}: version {pool.version} keeps deadlists and "
                              "deferred frees in bpobjs, which are not written yet")  # fmt: skip
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
            for image in owned:
                image.close()
            raise
        return cls(pool, owned, metaslabs)

    async def _mos_objset(self) -> ObjectSet:
        """The MOS of the last synced txg, read afresh (nothing cached from older txgs)."""
        return await ObjectSet.open(BlockCache(self.pool), self.pool.uberblock.ub_rootbp)

    async def _filesystem(self, mos: ObjectSet, name: str) -> tuple[Dataset, dict[str, Dataset]]:
        """Filesystem `name` and every dataset by name; ENOENT when there is none such."""
        by_name = {d.name: d for d in await list_datasets(mos, self.pool.name)}
        found = by_name.get(name)
        if found is None or found.is_snapshot:
            raise FSError(errno.ENOENT, f"no filesystem {name!r}")
        return found, by_name

    async def set_dsl_prop(self, dataset: str, name: str, value: int) -> None:
        """Set integer property `name` of filesystem `dataset` (its DSL directory's
        properties ZAP) in the open txg, as ``zfs set`` does for a local value.

        Raises:
            FSError: ENOENT for no such filesystem; EOPNOTSUPP when its properties are a
                fat ZAP or a full micro ZAP (not written yet).
        """
        mos = await self._mos_objset()
        obj = (await self._filesystem(mos, dataset))[0].dir.dd_props_zapobj
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

    async def _zpl(self, dataset: str) -> tuple[ZplTxg, int]:
        """Filesystem `dataset`'s namespace as the open txg has it (its changes are
        registered for the sync), and its recordsize."""
        mos = await self._mos_objset()
        ds, by_name = await self._filesystem(mos, dataset)
        objset = await ObjectSet.open(mos.cache, ds.phys.ds_bp)
        changes, _ = self._datasets.get(ds.ds_obj) or (DirtyObjset(), None)
        self._datasets[ds.ds_obj] = (changes, _write_policy(ds, by_name))
        recordsize = _inherited(ds, by_name, b"recordsize", DEFAULT_RECORDSIZE)
        return ZplTxg(objset, changes, self.pool.uberblock.ub_txg + 1), recordsize

    async def _file(self, dataset: str, path: Node) -> _OpenFile:
        """The regular file `path` of filesystem `dataset` as the open txg has it."""
        zpl, recordsize = await self._zpl(dataset)
        obj = await zpl.resolve(path)
        dn = await zpl.dnode(obj)
        if dn.dn_type != DMU_OT_PLAIN_FILE_CONTENTS:
            raise FSError(errno.EISDIR, f"{dataset}/{path}: not a regular file")
        if dn.dn_bonustype != DMU_OT_ZNODE:
            raise FSError(errno.EOPNOTSUPP, f"{dataset}/{path}: SA attributes are not written yet")
        return _OpenFile(zpl.objset, zpl.dirty, obj, dn, recordsize)

    async def create(
        self, dataset: str, path: Entry, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> int:
        """Create the empty regular file `path` (relative to the root of filesystem
        `dataset`, or (directory object, name); owned by `uid` and `gid`) with permission bits
        `mode`, in the open txg; its object number. Every method names a node by its
        path or object number (zpl_write.Node), an entry by its path or (directory
        object, name) (zpl_write.Entry).

        Raises:
            FSError: EEXIST, ENOENT, ENOTDIR; EOPNOTSUPP where a fat ZAP or SA would be
                written (see zpl_write.py).
        """
        return await (await self._zpl(dataset))[0].create(
            path, stat.S_IFREG | (mode & 0o7777), uid, gid
        )

    async def mkdir(
        self, dataset: str, path: Entry, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> int:
        """Create the empty directory `path` of filesystem `dataset`, as `create`."""
        return await (await self._zpl(dataset))[0].create(
            path, stat.S_IFDIR | (mode & 0o7777), uid, gid
        )

    async def unlink(self, dataset: str, path: Entry) -> None:
        """Remove the non-directory `path` of filesystem `dataset` in the open txg; its
        blocks are freed with its last link (kept on the deadlist for a snapshot).

        Raises:
            FSError: ENOENT, EISDIR; EOPNOTSUPP as for `create`.
        """
        await (await self._zpl(dataset))[0].unlink(path)

    async def rmdir(self, dataset: str, path: Entry) -> None:
        """Remove the empty directory `path` of filesystem `dataset` in the open txg.

        Raises:
            FSError: ENOENT, ENOTDIR, ENOTEMPTY; EOPNOTSUPP as for `create`.
        """
        await (await self._zpl(dataset))[0].unlink(path, directory=True)

    async def rename(self, dataset: str, src: Entry, dst: Entry) -> None:
        """Move `src` to `dst` within filesystem `dataset` in the open txg, as rename(2).

        Raises:
            FSError: ENOENT, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL; EOPNOTSUPP as for
                `create`.
        """
        await (await self._zpl(dataset))[0].rename(src, dst)

    async def write_file_range(self, dataset: str, path: Node, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of the regular file `path` (relative to the root of
        filesystem `dataset`) in the open txg, as write(2) does: past the end the file
        grows (a gap between reads as zeros); its mtime and ctime become now.

        Raises:
            FSError: ENOENT, EISDIR, EINVAL for a negative offset; EOPNOTSUPP for files
                with SA attributes (not written yet).
        """
        if offset < 0:
            raise FSError(errno.EINVAL, f"{dataset}/{path}: negative offset {offset}")
        f = await self._file(dataset, path)
        end = offset + len(data)
        await f.grow_block(end)
        bsz, pos = f.dn.datablksz, offset
        while pos < end:
            blkid, at = divmod(pos, bsz)
            count = min(bsz - at, end - pos)
            old = await f.block(blkid)
            f.blocks[blkid] = (
                old[:at] + data[pos - offset : pos - offset + count] + old[at + count :]
            )
            pos += count
        maxblkid = max(f.dn.dn_maxblkid, (end - 1) // bsz) if data else f.dn.dn_maxblkid
        f.update(max(f.size, end), maxblkid)

    async def truncate(self, dataset: str, path: Node, size: int) -> None:
        """Set the size of the regular file `path` of filesystem `dataset` in the open txg,
        as truncate(2) does (zfs_freesp): shorter, the blocks past the end are freed (the
        last one kept keeps zeros past it); longer, the file is sparse; its mtime and ctime
        become now.

        Raises:
            FSError: ENOENT, EISDIR, EINVAL for a negative size; EOPNOTSUPP as for
                `write_file_range`.
        """
        if size < 0:
            raise FSError(errno.EINVAL, f"{dataset}/{path}: negative size {size}")
        f = await self._file(dataset, path)
        if size >= f.size:
            await f.grow_block(size)
            f.update(size, f.dn.dn_maxblkid)
            return
        bsz = f.dn.datablksz
        keep, at = divmod(size, bsz)  # blocks [0, keep) stay whole; block `keep` keeps `at`
        if at:
            old = await f.block(keep)
            if any(old[at:]):
                f.blocks[keep] = old[:at] + bytes(bsz - at)
            keep += 1
        for blkid in range(keep, f.dn.dn_maxblkid + 1):
            f.blocks[blkid] = None
        f.update(size, max(keep - 1, 0))

    async def setattr(
        self,
        dataset: str,
        path: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime: tuple[int, int] | None = None,
        mtime: tuple[int, int] | None = None,
        size: int | None = None,
    ) -> None:
        """Change the attributes given of `path` in filesystem `dataset` in the open txg,
        as chmod, chown, utimensat and truncate do (zfs_setattr): permission bits (the
        trivial ACL follows), owner, group, times as (seconds, nanoseconds), the size of
        a regular file (`truncate`, first: an mtime given too wins); the ctime becomes now.

        Raises:
            FSError: ENOENT, ENOTDIR; EISDIR for the size of a directory; EOPNOTSUPP for
                SA files and for a new mode on a file with a non-trivial ACL.
        """
        if size is not None:
            await self.truncate(dataset, path, size)
        if (mode, uid, gid, atime, mtime) != (None,) * 5:
            zpl = (await self._zpl(dataset))[0]
            await zpl.setattr(path, mode=mode, uid=uid, gid=gid, atime=atime, mtime=mtime)

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
        # A dataset only looked at (an operation refused) has nothing to write.
        self._datasets = {k: v for k, v in self._datasets.items() if v[0].blocks or v[0].dnodes}
        rootbp, blocks, metaslabs = old.ub_rootbp, [], self.metaslabs
        self.last_passes = 0
        if self._mos.blocks or self._mos.dnodes or self._datasets:
            ashifts = {v.id: v.ashift for v in self.pool.vdevs
                       if v.id in self.metaslabs and not v.is_log}  # fmt: skip
            cache = BlockCache(self.pool)
            mos = await ObjectSet.open(cache, old.ub_rootbp)

            async def datasets(ctx: SyncContext, mos_dirty: DirtyObjset) -> None:
                for ds_obj, (changes, policy) in sorted(self._datasets.items()):
                    await sync_dataset(cache, mos, mos_dirty, ds_obj, changes, ctx, policy,
                                       self.pool.version)  # fmt: skip

            done = await spa_sync_mos(cache, old.ub_rootbp, self._mos, self.metaslabs, ashifts,
                                      txg, datasets)  # fmt: skip
            rootbp, metaslabs = done.rootbp, done.metaslabs
            self.last_passes = done.passes
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
        self._datasets = {}
        self._broken = False
        return txg

    async def _write_phase(self, phase: Phase) -> None:
        """Write `phase`, then flush every member (a phase's order inside is free)."""
        for w in phase:
            await _image(w).write(w.offset, w.data)
        for image in self.images:
            await image.sync()

    def close(self) -> None:
        """Close the member images it opened (what was not synced is dropped)."""
        for image in self.images:
            image.close()


def _image(w: LeafWrite) -> ImageFile:
    assert w.leaf.image is not None  # open refuses pools with members missing
    return w.leaf.image


def _inherited(ds: Dataset, by_name: dict[str, Dataset], name: bytes, default: int) -> int:
    """Integer property `name` as set on `ds` or inherited from its parents, else
    `default`."""
    d: Dataset | None = ds
    while d is not None:
        value = d.props.get(name)
        if isinstance(value, int):
            return value
        d = by_name.get(d.parent) if d.parent else None
    return default


class _OpenFile:
    """A regular file's changes in the open txg (the writer's in-core znode)."""

    def __init__(
        self, objset: ObjectSet, changes: DirtyObjset, obj: int, dn: DnodePhys, recordsize: int
    ) -> None:
        self.objset = objset
        self.changes = changes
        self.obj = obj
        self.dn = dn
        self.size = parse_znode_phys(dn.dn_bonus, dn.byteorder).size
        self.recordsize = recordsize
        self.blocks = changes.blocks.setdefault(obj, {})

    async def block(self, blkid: int) -> bytes:
        """Level-0 block `blkid` as the open txg has it (zeros for a hole)."""
        bsz = self.dn.datablksz
        if blkid in self.blocks:
            return self.blocks[blkid] or bytes(bsz)
        found = await read_block(self.objset.cache, self.dn, blkid)
        return found[0] if found is not None else bytes(bsz)

    async def grow_block(self, end: int) -> None:
        """A file of one block grows that block to hold `end` bytes, up to the
        recordsize (past it, to the next power of two), before it takes a second block
        (zfs_grow_blocksize, dnode_set_blksz: whole 512-byte sectors)."""
        bsz = self.dn.datablksz
        pow2 = bsz & (bsz - 1) == 0
        if end <= bsz or (pow2 and bsz >= self.recordsize):
            return
        if self.dn.dn_maxblkid != 0 or self.size > bsz:
            return  # more than one block: the block size is fixed
        if bsz > self.recordsize:
            new = min(end, 1 << bsz.bit_length())
        else:
            new = min(end, self.recordsize)
        new = -(-new // SPA_MINBLOCKSIZE) * SPA_MINBLOCKSIZE
        old = await self.block(0)
        self.dn = self.dn._replace(dn_datablkszsec=new // SPA_MINBLOCKSIZE)
        self.blocks[0] = old.ljust(new, b"\0")

    def update(self, size: int, maxblkid: int) -> None:
        """Record the file's new size, dn_maxblkid and block size, mtime and ctime now."""
        now = time.time_ns()
        stamp = (now // 10**9, now % 10**9)
        bonus = znode_phys_set_size(self.dn.dn_bonus, self.dn.byteorder, size)
        bonus = znode_phys_set_times(bonus, self.dn.byteorder, stamp, stamp)
        self.dn = self.dn._replace(dn_bonus=bonus, dn_maxblkid=maxblkid)
        self.size = size
        self.changes.dnodes[self.obj] = self.dn


def _write_policy(ds: Dataset, by_name: dict[str, Dataset]) -> WritePolicy:
    """How `ds`'s blocks are written: compression, checksum and copies as set on it or
    inherited from its parents, else the defaults ("on" is lzjb and fletcher4 for the
    pool versions written here)."""
    compress = _inherited(ds, by_name, b"compression", ZIO_COMPRESS_OFF)
    checksum = _inherited(ds, by_name, b"checksum", ZIO_CHECKSUM_ON)
    return WritePolicy(
        compress=ZIO_COMPRESS_LZJB if compress == ZIO_COMPRESS_ON else compress,
        checksum=ZIO_CHECKSUM_FLETCHER_4 if checksum == ZIO_CHECKSUM_ON else checksum,
        copies=_inherited(ds, by_name, b"copies", 1),
    )
