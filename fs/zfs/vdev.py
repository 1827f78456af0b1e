"""The vdev tree (module/zfs/vdev*.c): reading a byte range of a top-level vdev, with
redundancy.

A pool's data lives on top-level vdevs (a DVA names one by id); each is a leaf (disk,
file), a mirror (also "replacing" and "spare", which read like mirrors) or a raidz. Reads
take a `check` callback (the block's checksum, supplied by zio): a vdev returns the first
version of the bytes that passes it, trying every mirror side and every raidz
reconstruction within its redundancy, and None when none passes. A member that is absent
or whose read fails counts as lost, never as an exception: only zio turns None into EIO.

The tree is built from the ``vdev_tree`` nvlists of the labels (`build_vdev`); leaves are
matched to the opened images by guid.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from uvfs import FSError, ImageFile
from uvfs_fs.zfs.label import VDEV_LABEL_START_SIZE
from uvfs_fs.zfs.raidz import VDEV_RAIDZ_MAXPARITY, raidz_map, reconstruct

Check = Callable[[bytes], Awaitable[bool]]
MAX_CHILDREN = 255  # raidz allows at most 255 children; mirrors far fewer
MAX_RECONSTRUCTIONS = 1024  # raidz column sets tried per block (raidz3 over 15: 575)
ASHIFT_MIN, ASHIFT_MAX = 9, 16  # 512 B .. 64 KiB sectors (ASHIFT_MAX upstream)


@dataclass
class VdevStats:
    """Counters shared by a pool's vdevs (mutable; snapshot with `Pool.statistics`)."""

    leaf_reads: int = 0
    leaf_errors: int = 0  # reads of a missing member or past its end
    checksum_errors: int = 0  # candidates that failed `check`
    reconstructions: int = 0  # raidz reads that needed parity
    blocks_read: int = 0  # block pointers read by zio
    unverified: int = 0  # blocks whose checksum function cannot be computed here


@dataclass
class Vdev:
    """One vdev; subclasses read. `children` are its child vdevs, in id order."""

    type: str
    guid: int
    id: int
    stats: VdevStats
    children: list[Vdev] = field(default_factory=list)
    ashift: int = 9
    path: str = ""
    is_log: bool = False  # a separate intent-log device: holds no pool data

    def missing(self) -> list[Vdev]:
        """The leaves below this vdev that have no image."""
        return [leaf for c in self.children for leaf in c.missing()]

    def readable(self) -> bool:
        """Whether every block can still be read with the members present."""
        raise NotImplementedError

    async def read(self, offset: int, size: int, check: Check | None) -> bytes | None:
        """`size` bytes at allocatable `offset`, passing `check` (None: any), else None."""
        raise NotImplementedError


@dataclass
class LeafVdev(Vdev):
    """A disk or file: bytes at offset + 4 MiB of its image (None when the image is absent)."""

    image: ImageFile | None = None

    def missing(self) -> list[Vdev]:
        return [self] if self.image is None else []

    def readable(self) -> bool:
        return self.image is not None

    def _start(self, offset: int, size: int) -> int | None:
        """Where allocatable `offset` lies in the image; None when absent or past its end."""
        start = offset + VDEV_LABEL_START_SIZE
        # A hostile DVA may point anywhere, up to 2^72: past the image is a lost read.
        if self.image is None or start + size > self.image.size:
            return None
        return start

    async def read_raw(self, offset: int, size: int) -> bytes | None:
        """The bytes at allocatable `offset`, or None when absent or unreadable."""
        self.stats.leaf_reads += 1
        start = self._start(offset, size)
        if start is None or self.image is None:
            self.stats.leaf_errors += 1
            return None
        try:
            return await self.image.read(start, size)
        except (FSError, OSError):
            self.stats.leaf_errors += 1
            return None

    def read_raw_sync(self, offset: int, size: int) -> bytes | None:
        """`read_raw` in a worker thread (zio reads, verifies and decompresses there in one
        go); it counts nothing, so the caller updates `stats` back on the trio thread."""
        start = self._start(offset, size)
        if start is None or self.image is None:
            return None
        try:
            return self.image.read_sync(start, size)
        except (FSError, OSError):
            return None

    async def read(self, offset: int, size: int, check: Check | None) -> bytes | None:
        data = await self.read_raw(offset, size)
        if data is None or check is None or await check(data):
            return data
        self.stats.checksum_errors += 1
        return None


@dataclass
class MirrorVdev(Vdev):
    """A mirror (or replacing/spare vdev): any child holds the whole range."""

    def readable(self) -> bool:
        return any(c.readable() for c in self.children)

    async def read(self, offset: int, size: int, check: Check | None) -> bytes | None:
        # Sides with every image present first: an absent side only costs a lookup.
        for child in sorted(self.children, key=lambda c: bool(c.missing())):
            data = await child.read(offset, size, check)
            if data is not None:
                return data
        return None


@dataclass
class RaidzVdev(Vdev):
    """A raidz1/2/3: columns across the children, rebuilt from parity when needed."""

    nparity: int = 1

    def readable(self) -> bool:
        return sum(not c.readable() for c in self.children) <= self.nparity

    async def read(self, offset: int, size: int, check: Check | None) -> bytes | None:
        rm = raidz_map(offset, size, self.ashift, len(self.children), self.nparity)
        cols = [await self.children[c.devidx].read(c.offset, c.size, None) for c in rm.cols]
        np_ = self.nparity
        sizes = [c.size for c in rm.cols[np_:]]
        data = cols[np_:]
        if all(col is not None for col in data):
            whole = b"".join(data)[:size]  # type: ignore[arg-type]
            if check is None or await check(whole):
                return whole
            self.stats.checksum_errors += 1
        parity = cols[:np_]
        lost = {i for i, col in enumerate(cols) if col is None}
        suspects = [i for i in range(len(cols)) if i not in lost]
        # Lost columns are known bad; any further bad ones are found by trying every set
        # of suspects that the parity left over can cover, smallest sets first, up to a
        # bound (a damaged block on a wide raidz3 would otherwise cost millions of tries).
        # Sets without a data column leave the data as read: already checked.
        guesses = (
            lost | set(guess)
            for extra in range(np_ - len(lost) + 1)
            for guess in itertools.combinations(suspects, extra)
        )
        useful = (bad for bad in guesses if any(i >= np_ for i in bad))
        for bad in itertools.islice(useful, MAX_RECONSTRUCTIONS):
            try:
                rebuilt = reconstruct(
                    [None if np_ + i in bad else d for i, d in enumerate(data)],
                    [None if j in bad else p for j, p in enumerate(parity)],
                    sizes,
                )
            except ValueError:
                continue
            whole = b"".join(rebuilt)[:size]
            if check is None or await check(whole):
                self.stats.reconstructions += 1
                return whole
            self.stats.checksum_errors += 1
        return None


@dataclass
class HoleVdev(Vdev):
    """A removed log device's slot, or a top-level vdev no label describes: holds nothing."""

    def readable(self) -> bool:
        return True

    async def read(self, offset: int, size: int, check: Check | None) -> bytes | None:
        return None


class VdevTreeError(ValueError):
    """The vdev_tree nvlist does not describe a usable vdev."""


def _number(tree: dict, key: str, default: int) -> int:
    value = tree.get(key, default)
    if not isinstance(value, int):
        raise VdevTreeError(f"vdev {key} is {value!r}, not a number")
    return value


def build_vdev(tree: dict, images: dict[int, ImageFile], stats: VdevStats, ashift: int = 9) -> Vdev:
    """The vdev described by a ``vdev_tree`` nvlist, with leaves matched to `images` by guid.

    Args:
        tree: the nvlist (type, guid, id, children, ashift, nparity, path ...).
        images: the opened images, by the leaf guid found in their own labels.
        stats: counters the vdevs update.
        ashift: inherited from the parent (top-level vdevs carry their own).
    """
    if not isinstance(tree, dict):
        raise VdevTreeError(f"vdev tree entry is a {type(tree).__name__}, not an nvlist")
    vtype = tree.get("type")
    common = {
        "type": str(vtype),
        "guid": _number(tree, "guid", 0),
        "id": _number(tree, "id", 0),
        "stats": stats,
        "ashift": _number(tree, "ashift", ashift),
        "path": str(tree.get("path", "")),
        "is_log": bool(tree.get("is_log", 0)),
    }
    if not ASHIFT_MIN <= common["ashift"] <= ASHIFT_MAX:
        raise VdevTreeError(f"vdev {common['guid']}: ashift {common['ashift']} out of range")
    kids = tree.get("children", [])
    if not isinstance(kids, list) or len(kids) > MAX_CHILDREN:
        raise VdevTreeError(f"vdev {common['guid']}: bad children list")
    children = [build_vdev(k, images, stats, common["ashift"]) for k in kids]
    if vtype in ("disk", "file"):
        return LeafVdev(**common, image=images.get(common["guid"]))
    if vtype in ("mirror", "replacing", "spare"):
        if not children:
            raise VdevTreeError(f"{vtype} vdev {common['guid']} has no children")
        return MirrorVdev(**common, children=children)
    if vtype in ("raidz", "raidz1", "raidz2", "raidz3"):
        nparity = _number(tree, "nparity", 1)
        if not 1 <= nparity <= VDEV_RAIDZ_MAXPARITY or len(children) <= nparity:
            raise VdevTreeError(f"raidz vdev {common['guid']}: {nparity} parity, "
                                f"{len(children)} children")  # fmt: skip
        return RaidzVdev(**common, children=children, nparity=nparity)
    if vtype == "hole":
        return HoleVdev(**common)
    raise VdevTreeError(f"unsupported vdev type {vtype!r}")
