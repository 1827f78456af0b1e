"""The syncing context's last step (module/zfs/spa.c spa_sync, vdev_label.c vdev_config_sync):
what one txg writes to the devices, in which order.

A txg is committed by its uberblock and by nothing else. spa_sync first writes every new
block of the txg (copy-on-write: never over a block a synced uberblock can reach), then
vdev_config_sync makes the new tree the pool's, in phases separated by cache flushes so
that no device can reorder a later phase before an earlier one:

1. flush: every block of the txg is durable before anything points at it;
2. the even labels (L0, L2) of the vdevs whose config changed, then flush;
3. the new uberblock, in ring slot ``txg % count`` of all four labels of every leaf, then
   flush;
4. the odd labels (L1, L3) of those vdevs, then flush.

A crash before phase 3 completes leaves the previous uberblock the newest valid one (its
slot is never the one written), so the pool imports at the previous txg, whose blocks are
all still where they were. This stage never changes a vdev's config, so phases 2 and 4 are
empty. Upstream writes the uberblock to a few top-level vdevs per txg when the config is
clean; writing it to all leaves costs little on the pools uvfs writes and makes every
label agree.

Everything here is sans-I/O: it says which bytes go where (`LeafWrite`), phase by phase;
the writer (writer.py) performs them and flushes in between.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from uvfs_fs.zfs.blkptr import DVA, BlockPtr
from uvfs_fs.zfs.label import VDEV_LABEL_START_SIZE, VDEV_UBERBLOCK_OFFSET, label_offsets
from uvfs_fs.zfs.uberblock import Uberblock, encode_slot, ring_slot, uberblock_shift
from uvfs_fs.zfs.vdev import LeafVdev, MirrorVdev, Vdev

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class LeafWrite:
    """Bytes to write at a byte offset of one leaf's device (labels included)."""

    leaf: LeafVdev
    offset: int
    data: bytes


Phase = list[LeafWrite]  # written in any order, then every leaf is flushed


def leaves(vdev: Vdev) -> Iterator[LeafVdev]:
    """The leaf vdevs under `vdev` (itself when it is one)."""
    if isinstance(vdev, LeafVdev):
        yield vdev
    for child in vdev.children:
        yield from leaves(child)


def _guids(vdev: Vdev) -> Iterator[int]:
    yield vdev.guid
    for child in vdev.children:
        yield from _guids(child)


def vdev_guid_sum(pool_guid: int, vdevs: Sequence[Vdev]) -> int:
    """ub_guid_sum: the guids of every vdev of the tree, the root (whose guid is the
    pool's), interior vdevs (mirrors, raidz) and holes included, modulo 2^64. Import
    compares it with the tree it assembled to find missing devices."""
    return (pool_guid + sum(g for top in vdevs for g in _guids(top))) & _MASK64


def block_writes(vdevs: Sequence[Vdev], blocks: Sequence[tuple[DVA, bytes]]) -> Phase:
    """Where each block's bytes go: every leaf of a plain or mirror top-level vdev, past
    the front labels (raidz columns and parity are later work).

    Raises:
        ValueError: a DVA names a vdev that is not a disk or a mirror of disks.
    """
    out: Phase = []
    for dva, data in blocks:
        top = vdevs[dva.vdev]
        if not isinstance(top, LeafVdev | MirrorVdev):
            raise ValueError(f"writing to a {top.type} vdev is not supported yet")
        out += [LeafWrite(leaf, VDEV_LABEL_START_SIZE + dva.offset, data) for leaf in leaves(top)]
    return out


def uberblock_update(
    ub: Uberblock, txg: int, rootbp: BlockPtr, guid_sum: int, timestamp: int
) -> Uberblock:
    """The uberblock of `txg` following `ub` (uberblock_update): new txg, MOS root, guid
    sum and time; version, software version and MMP fields as the pool had them."""
    if txg <= ub.ub_txg:
        raise ValueError(f"txg {txg} does not follow the active txg {ub.ub_txg}")
    return replace(
        ub, ub_txg=txg, ub_rootbp=rootbp, ub_guid_sum=guid_sum, ub_timestamp=timestamp,
        ub_checkpoint_txg=0, offset=0,
    )  # fmt: skip


def uberblock_writes(vdevs: Sequence[Vdev], ub: Uberblock) -> Phase:
    """`ub` into its ring slot of the four labels of every leaf (vdev_uberblock_sync);
    the slot size follows each top-level vdev's ashift."""
    out: Phase = []
    for top in vdevs:
        shift = uberblock_shift(top.ashift)
        slot = ring_slot(ub.ub_txg, shift) << shift
        for leaf in leaves(top):
            if leaf.image is None:
                raise ValueError(f"leaf vdev {leaf.guid} has no image to write to")
            for label in label_offsets(leaf.image.size):
                offset = label + VDEV_UBERBLOCK_OFFSET + slot
                out.append(LeafWrite(leaf, offset, encode_slot(ub, offset, shift)))
    return out


def config_sync_phases(blocks: Phase, vdevs: Sequence[Vdev], ub: Uberblock) -> list[Phase]:
    """The phases of committing a txg (vdev_config_sync, config unchanged): the txg's
    `blocks`, then the uberblock `ub`; each phase is followed by a flush of every leaf."""
    return [blocks, uberblock_writes(vdevs, ub)]
