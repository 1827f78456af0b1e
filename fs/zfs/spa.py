"""Opening a pool (module/zfs/spa.c, vdev_label.c): labels -> vdev tree -> active uberblock.

`open_pool` reads the four labels of every image, keeps those whose checksum holds, and
checks that all images belong to one pool. The newest label (highest txg) supplies the
pool's config; each image's own label supplies the top-level vdev it belongs to, and
leaves are matched to images by guid, so members may be passed in any order and any
missing ones are named. Then it refuses what it cannot read, with one line each: a
version other than 1..28 or 5000, a feature in ``features_for_read`` that this reader
lacks, a top-level vdev no image describes, or more missing members than a vdev's
redundancy covers. The active uberblock is the valid one with the highest txg across all
labels of all images (labels are rewritten on only some vdevs each txg), falling back to
older ones if the newest root block cannot be read.

Hot spares and cache (L2ARC) devices carry a label of their own kind: only a version, a
state (SPARE or L2CACHE) and their guid, no pool and no vdev tree. Given among the members,
they are recognised and set aside, as an importing pool does: an idle spare holds no data,
and a cache only copies of blocks the pool itself holds (a spare in use is part of the
tree, with an ordinary label, and read like a mirror side). A separate log device is a
top-level vdev of its own (``is_log``) and is used as one.

`Pool` is the handle the upper layers hold: `read_bp` reads any block pointer.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from uvfs import FSError, ImageFile, Refusal
from uvfs_fs.zfs.blkptr import BlockPtr
from uvfs_fs.zfs.label import (
    VDEV_LABEL_SIZE,
    VDEV_PHYS_OFFSET,
    VDEV_PHYS_SIZE,
    VDEV_UBERBLOCK_OFFSET,
    label_offsets,
    parse_label,
    parse_vdev_phys,
)
from uvfs_fs.zfs.nvlist import NvValue
from uvfs_fs.zfs.uberblock import Uberblock, parse_ring
from uvfs_fs.zfs.vdev import RaidzVdev, Vdev, VdevStats, VdevTreeError, build_vdev
from uvfs_fs.zfs.zio import zio_prefetch, zio_read, zio_read_many

SPA_VERSION_FEATURES = 5000
SPA_VERSION_MAX_NUMBERED = 28
MAX_TOP_LEVEL_VDEVS = 4096
MAX_ROOT_FALLBACKS = 8  # older uberblocks tried when the newest root block is unreadable

# Features this reader (with the upper layers) can read. Anything else in a pool's
# features_for_read is refused by name.
SUPPORTED_FEATURES_FOR_READ = frozenset(
    {
        "com.delphix:hole_birth",
        "com.delphix:embedded_data",
        "com.delphix:extensible_dataset",
        "com.delphix:bookmarks",
        "com.delphix:bookmark_v2",
        "com.delphix:device_removal",
        "com.delphix:obsolete_counts",
        "com.delphix:zpool_checkpoint",
        "com.delphix:spacemap_v2",
        "com.delphix:log_spacemap",
        "com.delphix:livelist",
        "com.datto:encryption",
        "com.datto:bookmark_v2",
        "org.illumos:lz4_compress",
        "org.illumos:sha512",
        "org.illumos:skein",
        "org.illumos:edonr",
        "org.open-zfs:large_blocks",
        "org.openzfs:blake3",
        "org.freebsd:zstd_compress",
        "org.zfsonlinux:large_dnode",
        "com.klarasystems:vdev_zaps_v2",
    }
)

_NUMERIC_FIELDS = ("pool_guid", "guid", "txg", "version", "vdev_children", "state")

POOL_STATES = ("ACTIVE", "EXPORTED", "DESTROYED", "SPARE", "L2CACHE", "UNINITIALIZED",
               "UNAVAIL", "POTENTIALLY_ACTIVE")  # fmt: skip
POOL_STATE_SPARE, POOL_STATE_L2CACHE = 3, 4
_AUXILIARY = {POOL_STATE_SPARE: "spare", POOL_STATE_L2CACHE: "cache"}


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """What reading the pool has met so far."""

    blocks_read: int
    leaf_reads: int
    leaf_errors: int
    checksum_errors: int
    reconstructions: int
    unverified: int


@dataclass
class _Member:
    image: ImageFile
    config: dict[str, NvValue]  # its newest valid label
    uberblocks: list[Uberblock]
    auxiliary: str | None = None  # "spare" or "cache": holds no pool data


class Pool:
    """One opened pool: its config, vdev tree and active uberblock.

    Attributes:
        name: the pool's name.
        guid: pool_guid.
        version: the SPA version (5000 for feature-flag pools).
        config: the newest label's nvlist, decoded.
        features_for_read: the read features the pool uses (empty before v5000).
        uberblock: the active uberblock (``ub_rootbp`` is the MOS, ``ub_txg`` its txg).
        vdevs: the top-level vdevs, by id.
        checksum_salt: the pool's salt for keyed checksums; the upper layer sets it from
            the MOS directory's ``org.illumos:checksum_salt`` (None until then).
        auxiliary: the hot spares and cache devices given, set aside: (kind, path).
    """

    def __init__(
        self,
        config: dict[str, NvValue],
        vdevs: list[Vdev],
        uberblock: Uberblock,
        stats: VdevStats,
    ) -> None:
        self.config = config
        self.name = str(config.get("name", ""))
        self.guid = int(config.get("pool_guid", 0))  # type: ignore[arg-type]
        self.version = int(config.get("version", 0))  # type: ignore[arg-type]
        features = config.get("features_for_read", {})
        self.features_for_read: set[str] = set(features) if isinstance(features, dict) else set()
        self.vdevs = vdevs
        self.uberblock = uberblock
        self.checksum_salt: bytes | None = None
        self.auxiliary: list[tuple[str, str]] = []
        self._stats = stats

    async def read_bp(self, bp: BlockPtr) -> bytes:
        """The logical bytes of block pointer `bp`: verified, decompressed.

        Embedded and gang blocks are handled; a hole reads as `lsize` zeros; a copy that
        fails its checksum is retried on the other DVAs, mirror sides and raidz parity.

        Raises:
            FSError: EIO when no version of the block passes its checksum.
        """
        return await zio_read(self.vdevs, bp, self._stats, self.checksum_salt)

    async def read_bps(self, bps: Sequence[BlockPtr]) -> list[bytes]:
        """`read_bp` of each of `bps`, neighbouring blocks read with one I/O."""
        return await zio_read_many(self.vdevs, bps, self._stats, self.checksum_salt)

    def prefetch_bps(
        self, bps: Sequence[BlockPtr], deliver: Callable[[BlockPtr, bytes | None], None]
    ) -> None:
        """Start reading `bps` ahead, without waiting (see `zio_prefetch`)."""
        zio_prefetch(self.vdevs, bps, self._stats, self.checksum_salt, deliver)

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's read counters."""
        s = self._stats
        return PoolStatistics(
            s.blocks_read, s.leaf_reads, s.leaf_errors, s.checksum_errors,
            s.reconstructions, s.unverified,
        )  # fmt: skip


def probe_label(head: bytes) -> bool:
    """Whether `head` (the first 512 KiB of a file) starts with a ZFS vdev label 0 or 1."""
    for offset in (0, VDEV_LABEL_SIZE):
        start = offset + VDEV_PHYS_OFFSET
        config = parse_vdev_phys(head[start : start + VDEV_PHYS_SIZE], start)
        if config is not None and ("pool_guid" in config or _auxiliary(config)):
            return True
    return False


def _auxiliary(config: dict[str, NvValue]) -> str | None:
    """ "spare" or "cache" when `config` is the label of an idle hot spare or an L2ARC
    device (vdev_label_init writes them without pool or tree), else None."""
    state = config.get("state")
    if (
        "pool_guid" in config
        or not isinstance(state, int)
        or not isinstance(config.get("guid"), int)
    ):
        return None
    return _AUXILIARY.get(state)


def _well_formed(config: dict[str, NvValue]) -> bool:
    # Checksummed labels are well formed unless crafted; the fields read as numbers below
    # must be numbers, or the label counts as invalid.
    tree = config.get("vdev_tree")
    return (
        isinstance(tree, dict)
        and all(isinstance(config.get(k, 0), int) for k in _NUMERIC_FIELDS)
        and all(isinstance(tree.get(k, 0), int) for k in ("id", "ashift"))
        and 0 <= tree.get("id", 0) < MAX_TOP_LEVEL_VDEVS  # type: ignore[operator]
    )


async def _read_member(image: ImageFile) -> _Member | None:
    configs: list[dict[str, NvValue]] = []
    uberblocks: list[Uberblock] = []
    for offset in label_offsets(image.size):
        if offset < 0 or offset + VDEV_LABEL_SIZE > image.size:
            continue
        label = await image.read(offset, VDEV_LABEL_SIZE)
        config = parse_label(label, offset)
        if config is not None and _auxiliary(config):
            return _Member(image, config, [], _auxiliary(config))
        if config is None or not _well_formed(config):
            continue
        configs.append(config)
        ashift = int(config["vdev_tree"].get("ashift", 9))  # type: ignore[union-attr]
        ring = label[VDEV_UBERBLOCK_OFFSET:]
        uberblocks += parse_ring(ring, offset + VDEV_UBERBLOCK_OFFSET, ashift)
    if not configs:
        return None
    config = max(configs, key=lambda c: int(c.get("txg", 0)))  # type: ignore[arg-type]
    return _Member(image, config, uberblocks)


def _check_version(version: int) -> None:
    if not (1 <= version <= SPA_VERSION_MAX_NUMBERED or version == SPA_VERSION_FEATURES):
        raise Refusal(f"unsupported ZFS pool version {version}")


def _top_level_vdevs(members: list[_Member], config: dict, stats: VdevStats) -> list[Vdev]:
    images = {int(m.config.get("guid", 0)): m.image for m in members}  # type: ignore[arg-type]
    trees: dict[int, dict] = {}
    for m in sorted(members, key=lambda m: int(m.config.get("txg", 0))):  # type: ignore[arg-type]
        tree = m.config["vdev_tree"]
        trees[int(tree.get("id", 0))] = tree  # type: ignore[union-attr]
    count = int(config.get("vdev_children", max(trees) + 1))  # type: ignore[arg-type]
    if not 0 < count <= MAX_TOP_LEVEL_VDEVS:
        raise Refusal(f"pool {config.get('name')!r}: {count} top-level vdevs")
    vdevs: list[Vdev] = []
    for i in range(count):
        if i not in trees:
            raise Refusal(f"pool {config.get('name')!r}: top-level vdev {i} is missing "
                          "(no image of it was given)")  # fmt: skip
        try:
            vdev = build_vdev(trees[i], images, stats)
        except VdevTreeError as e:
            raise Refusal(f"pool {config.get('name')!r}: {e}") from None
        if not vdev.readable() and not vdev.is_log:
            names = ", ".join(leaf.path or f"guid {leaf.guid}" for leaf in vdev.missing())
            raise Refusal(f"pool {config.get('name')!r}: missing member(s) {names}, "
                          f"more than {_vdev_kind(vdev)} vdev {i} can lose")  # fmt: skip
        vdevs.append(vdev)
    return vdevs


def _vdev_kind(vdev: Vdev) -> str:
    return f"raidz{vdev.nparity}" if isinstance(vdev, RaidzVdev) else vdev.type


async def open_pool(sources: Sequence[ImageFile]) -> Pool:
    """Open the pool whose member images are `sources` (any order), read-only.

    Raises:
        Refusal: one line naming what is wrong: an image without a valid label, images
            of different pools, an unsupported version or read feature, missing members
            beyond redundancy, or no readable uberblock.
    """
    if not sources:
        raise Refusal("no images given")
    members, auxiliary = [], []
    for image in sources:
        m = await _read_member(image)
        if m is None:
            raise Refusal(f"{image.path}: no valid ZFS label")
        (auxiliary if m.auxiliary else members).append(m)
    if not members:
        raise Refusal("only hot spares and cache devices given, no pool member")
    guids = {int(m.config.get("pool_guid", 0)) for m in members}  # type: ignore[arg-type]
    if len(guids) != 1:
        raise Refusal(
            "the images belong to different pools: "
            + ", ".join(f"{m.image.path} ({m.config.get('name')})" for m in members)
        )
    config = max((m.config for m in members), key=lambda c: int(c.get("txg", 0)))  # type: ignore[arg-type]
    _check_version(int(config.get("version", 0)))  # type: ignore[arg-type]
    features = config.get("features_for_read", {})
    unknown = (
        sorted(set(features) - SUPPORTED_FEATURES_FOR_READ) if isinstance(features, dict) else []
    )
    if unknown:
        raise Refusal(
            f"pool {config.get('name')!r} uses unsupported read feature(s): " + ", ".join(unknown)
        )
    stats = VdevStats()
    vdevs = _top_level_vdevs(members, config, stats)
    candidates = sorted(
        (ub for m in members for ub in m.uberblocks), key=Uberblock.sort_key, reverse=True
    )
    if not candidates:
        raise Refusal(f"pool {config.get('name')!r}: no valid uberblock")
    for ub in candidates[:MAX_ROOT_FALLBACKS]:
        _check_version(ub.ub_version)
        pool = Pool(config, vdevs, ub, stats)
        pool.auxiliary = [(str(m.auxiliary), m.image.path) for m in auxiliary]
        try:
            await pool.read_bp(ub.ub_rootbp)
        except FSError as e:
            if e.errno != errno.EIO:
                raise
            continue
        return pool
    raise Refusal(f"pool {config.get('name')!r}: no uberblock's root block is readable")


def _describe_vdev(vdev: Vdev, depth: int) -> list[str]:
    what = vdev.path or _vdev_kind(vdev)
    if vdev.is_log:
        what += "  (log)"
    state = ""
    if vdev.missing():
        state = "  (missing)" if not vdev.children else "  (degraded)"
    if vdev.children and not vdev.readable():
        state = "  (unavailable)"
    lines = [f"{'  ' * depth}{what}  guid {vdev.guid}{state}"]
    for child in vdev.children:
        lines += _describe_vdev(child, depth + 1)
    return lines


def describe_pool(pool: Pool) -> list[str]:
    """Lines for ``uvfs info``: name, guid, version, state, txg, vdev tree, features."""
    state = int(pool.config.get("state", -1))  # type: ignore[arg-type]
    lines = [
        f"pool: {pool.name}",
        f"guid: {pool.guid}",
        f"version: {pool.version}",
        f"state: {POOL_STATES[state] if 0 <= state < len(POOL_STATES) else state}",
        f"txg: {pool.uberblock.ub_txg}",
        f"byte order: {'little' if pool.uberblock.byteorder == '<' else 'big'} endian",
        "vdevs:",
    ]
    for vdev in pool.vdevs:
        lines += _describe_vdev(vdev, 1)
    for kind, path in pool.auxiliary:
        lines.append(f"  {path}  ({kind}, not needed for reading)")
    lines.append("features for read: " + (", ".join(sorted(pool.features_for_read)) or "none"))
    return lines
