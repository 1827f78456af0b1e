"""The ZFS driver: reads a whole pool (all datasets, snapshots, clones), and writes
pools of versions 1-28 with ZPL version 4 or older (writable.py).

Layers, bottom up as in OpenZFS: label/uberblock/vdev/raidz/zio/spa find and verify
blocks; dnode/dmu read objects; zap/dsl/sa/znode decode names, datasets and attributes;
zpl presents the file tree (see zpl.py for what is shown and how inodes are numbered).

Writing: writable.WritableZfs serves the driver API's changes through writer.PoolWriter,
which gathers a txg's changes and syncs them, top down as spa_sync does: dataset_sync ->
objset_sync (copy-on-write block trees) -> spa_sync (the MOS and its space maps, to
convergence) -> txg (blocks, flush, uberblocks).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence

from uvfs import FSError, ImageFile, MountOptions, Refusal

from .dmu import DMU_OST_ZFS, ObjectSet
from .spa import describe_pool, open_pool, probe_label
from .writable import ReadOnlyPool, WritableZfs
from .zap import Zap
from .zpl import ZFS_CANMOUNT_OFF, DatasetView, ZfsFileSystem

__all__ = ["DRIVER", "WritableZfs", "ZfsDriver", "ZfsFileSystem"]

log = logging.getLogger("uvfs.zfs")


class ZfsDriver:
    """The ZFS driver type: probe, describe and open pools."""

    name = "zfs"

    def probe(self, head: bytes) -> bool:
        """Whether `head` starts with a ZFS vdev label."""
        return probe_label(head)

    def identify(self, head: bytes) -> str:
        """One vdev of a pool, as blkid calls it: not a filesystem by itself."""
        return "zfs member"

    async def open(
        self, sources: Sequence[ImageFile], options: MountOptions
    ) -> ZfsFileSystem | WritableZfs:
        """Import the pool, read-write when asked and the writer can keep it (see
        writable.py), else read-only; Refusal when it cannot be read.

        A pool the writer cannot keep opens read-only, with a warning naming why, so the
        broker mounts it read-only and tells the user, as mount(8) does.
        """
        if options.writable:
            try:
                return await WritableZfs.load(sources, options.memory)
            except ReadOnlyPool as e:
                log.warning("%s", e)
        pool = await open_pool(sources)
        try:
            return await ZfsFileSystem.from_pool(pool, options.memory)
        except FSError as e:
            raise Refusal(f"zfs: pool {pool.name!r}: cannot read its datasets: {e}") from None

    async def describe(self, sources: Sequence[ImageFile]) -> str:
        """Pool, vdevs, version, features, then every dataset and where a mount shows it."""
        pool = await open_pool(sources)
        lines = describe_pool(pool)
        try:
            fs = await ZfsFileSystem.from_pool(pool)
            active = await _active_features(fs.mos)
            if active:
                lines.append("active features: " + ", ".join(active))
            lines.append("datasets:")
            lines += [f"  {m.ds.name}" + _notes(fs, m) for m in fs.datasets]
        except FSError as e:
            lines.append(f"datasets: cannot be read ({e})")
        return "\n".join(lines)


def _notes(fs: ZfsFileSystem, m: DatasetView) -> str:
    """What `describe` says of one dataset, after its name."""
    notes = [f"clone of {m.ds.origin}"] if m.ds.origin else []
    if m.os_type and m.os_type != DMU_OST_ZFS:
        notes.append("volume, not shown")
    elif m.ds.props.get(b"canmount") == ZFS_CANMOUNT_OFF and not m.ds.is_snapshot:
        notes.append("canmount=off, not shown")
    elif m.ds.encrypted:
        notes.append("encrypted, not readable here")
    elif m.error:
        notes.append(f"unreadable: {m.reason}")
    head = fs.by_name.get(m.ds.parent or "") if m.ds.is_snapshot else m
    if head is not None and (head.index == 0 or head.path) and head.os_type == DMU_OST_ZFS:
        path = [p.decode(errors="replace") for p in head.path]
        if m.ds.is_snapshot:
            path += [".zfs", "snapshot", m.ds.name.split("@", 1)[1]]
        notes.append("at /" + "/".join(path))
    return f"  ({', '.join(notes)})" if notes else ""


async def _active_features(mos: ObjectSet) -> list[str]:
    """Features whose reference count is non-zero (features_for_read and _for_write)."""
    objdir = await Zap.open(mos, 1)
    out = []
    for key in (b"features_for_read", b"features_for_write"):
        try:
            zap = await Zap.open(mos, (await objdir.lookup(key)).int())
        except FSError as e:
            if e.errno == errno.ENOENT:
                continue
            raise
        out += [e.name.decode(errors="replace") for e in await zap.entries() if e.int()]
    return sorted(out)


DRIVER = ZfsDriver()
