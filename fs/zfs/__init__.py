"""The ZFS driver: reads a whole pool (all datasets, snapshots, clones) read-only.

Layers, bottom up as in OpenZFS: label/uberblock/vdev/raidz/zio/spa find and verify
blocks; dnode/dmu read objects; zap/dsl/sa/znode decode names, datasets and attributes;
zpl presents the file tree (see zpl.py for what is shown and how inodes are numbered).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from uvfs import FSError, ImageFile, MountOptions, Refusal

from .dmu import BlockCache, ObjectSet
from .dsl import list_datasets
from .spa import describe_pool, open_pool, probe_label
from .zap import Zap
from .zpl import ZfsFileSystem

__all__ = ["DRIVER", "ZfsDriver", "ZfsFileSystem"]


class ZfsDriver:
    """The ZFS driver type: probe, describe and open pools."""

    name = "zfs"

    def probe(self, head: bytes) -> bool:
        """Whether `head` starts with a ZFS vdev label."""
        return probe_label(head)

    async def open(self, sources: Sequence[ImageFile], options: MountOptions) -> ZfsFileSystem:
        """Import the pool read-only; Refusal when it cannot be read.

        A writable request opens read-only too: the filesystem has no write side, so the
        broker mounts it read-only and tells the user, as mount(8) does.
        """
        pool = await open_pool(sources)
        try:
            return await ZfsFileSystem.from_pool(pool)
        except FSError as e:
            raise Refusal(f"zfs: pool {pool.name!r}: cannot read its datasets: {e}") from None

    async def describe(self, sources: Sequence[ImageFile]) -> str:
        """Pool, vdevs, version, features, then every dataset and snapshot."""
        pool = await open_pool(sources)
        lines = describe_pool(pool)
        mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
        try:
            active = await _active_features(mos)
            if active:
                lines.append("active features: " + ", ".join(active))
            lines.append("datasets:")
            for ds in await list_datasets(mos, pool.name):
                notes = [f"clone of {ds.origin}"] if ds.origin else []
                if ds.encrypted and not ds.is_snapshot:
                    notes.append("encrypted (not readable here)")
                mp = ds.props.get(b"mountpoint")
                if isinstance(mp, bytes):
                    notes.append(f"mountpoint {mp.decode(errors='replace')}")
                lines.append(f"  {ds.name}" + (f"  ({', '.join(notes)})" if notes else ""))
        except FSError as e:
            lines.append(f"datasets: cannot be read ({e})")
        return "\n".join(lines)


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
