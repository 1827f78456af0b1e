"""uberblock_t (include/sys/uberblock_impl.h): the root of a pool's tree, in a ring per label.

Each label holds a ring of uberblocks (128 KiB at label offset 128 KiB), one slot every
``1 << VDEV_UBERBLOCK_SHIFT`` bytes, the shift being the top-level vdev's ashift clamped to
10..13; every txg writes the next slot. A slot is valid when its magic reads 0x00bab10c
(in either byte order: that is how the pool's byte order is learnt) and its embedded label
checksum (zio_eck_t at the slot's end, verifier = the slot's byte offset on the device)
holds. The active uberblock is the valid one with the highest ub_txg across all labels of
all members, ties broken by ub_timestamp then the MMP sequence (vdev_uberblock_compare).

Txg N goes to slot ``N % (VDEV_UBERBLOCK_RING >> shift)`` of every label it is written to
(`ring_slot`), so writing txg N + 1 never touches the slot of the active txg N: a write torn
half-way leaves N the newest valid uberblock. `encode_slot` builds a slot's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import construct as cs

from uvfs_fs.zfs.blkptr import BlockPtr, encode_blkptr, parse_blkptr
from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_LABEL, embed_checksum, verify_embedded

UBERBLOCK_MAGIC = 0x00BAB10C
UBERBLOCK_SHIFT = 10
MAX_UBERBLOCK_SHIFT = 13
VDEV_UBERBLOCK_RING = 128 * 1024
MMP_MAGIC = 0xA11CEA11


def _layout(int64: cs.Construct) -> cs.Struct:
    return cs.Struct(
        "ub_magic" / int64,  # 0
        "ub_version" / int64,  # 8: SPA_VERSION
        "ub_txg" / int64,  # 16
        "ub_guid_sum" / int64,  # 24: sum of all leaf vdev guids
        "ub_timestamp" / int64,  # 32: seconds since 1970
        "ub_rootbp" / cs.Bytes(128),  # 40: the MOS objset_phys_t
        "ub_software_version" / int64,  # 168
        "ub_mmp_magic" / int64,  # 176
        "ub_mmp_delay" / int64,  # 184
        "ub_mmp_config" / int64,  # 192: valid bits 0..3, sequence 32..47
        "ub_checkpoint_txg" / int64,  # 200
    ).compile()


_LAYOUTS = {"<": _layout(cs.Int64ul), ">": _layout(cs.Int64ub)}
UBERBLOCK_SIZE = 208
_ORDER_NAME = {"<": "little", ">": "big"}


@dataclass(frozen=True, slots=True)
class Uberblock:
    """One valid uberblock, with where it was found."""

    ub_version: int
    ub_txg: int
    ub_guid_sum: int
    ub_timestamp: int
    ub_rootbp: BlockPtr
    ub_software_version: int
    ub_mmp_magic: int
    ub_mmp_delay: int
    ub_mmp_config: int
    ub_checkpoint_txg: int
    byteorder: str  # the pool's byte order, "<" or ">"
    offset: int = 0  # byte offset of the slot on its device

    @property
    def mmp_seq(self) -> int:
        """The MMP sequence number, or 0 when MMP did not record one."""
        if self.ub_mmp_magic == MMP_MAGIC and self.ub_mmp_config & 0x2:
            return (self.ub_mmp_config >> 32) & 0xFFFF
        return 0

    def sort_key(self) -> tuple[int, int, int]:
        """Larger is newer: txg, then timestamp, then MMP sequence."""
        return (self.ub_txg, self.ub_timestamp, self.mmp_seq)


def uberblock_shift(ashift: int) -> int:
    """VDEV_UBERBLOCK_SHIFT: the slot size exponent for a top-level vdev's ashift."""
    return min(max(ashift, UBERBLOCK_SHIFT), MAX_UBERBLOCK_SHIFT)


def parse_uberblock(slot: bytes, offset: int) -> Uberblock | None:
    """The uberblock in one ring slot at device offset `offset`, or None if not valid."""
    if len(slot) < 1 << UBERBLOCK_SHIFT:
        return None
    orders = [o for o in _LAYOUTS if int.from_bytes(slot[:8], _ORDER_NAME[o]) == UBERBLOCK_MAGIC]
    if not orders:
        return None
    order = orders[0]
    rec = _LAYOUTS[order].parse(slot[:UBERBLOCK_SIZE])
    if rec.ub_txg == 0 or not verify_embedded(slot, ZIO_CHECKSUM_LABEL, (offset, 0, 0, 0)):
        return None
    return Uberblock(
        ub_version=rec.ub_version,
        ub_txg=rec.ub_txg,
        ub_guid_sum=rec.ub_guid_sum,
        ub_timestamp=rec.ub_timestamp,
        ub_rootbp=parse_blkptr(rec.ub_rootbp, order),
        ub_software_version=rec.ub_software_version,
        ub_mmp_magic=rec.ub_mmp_magic,
        ub_mmp_delay=rec.ub_mmp_delay,
        ub_mmp_config=rec.ub_mmp_config,
        ub_checkpoint_txg=rec.ub_checkpoint_txg,
        byteorder=order,
        offset=offset,
    )


def parse_ring(ring: bytes, ring_offset: int, ashift: int) -> list[Uberblock]:
    """Every valid uberblock in one label's ring, which starts at device offset `ring_offset`."""
    step = 1 << uberblock_shift(ashift)
    found = []
    for pos in range(0, min(len(ring), VDEV_UBERBLOCK_RING) - step + 1, step):
        ub = parse_uberblock(ring[pos : pos + step], ring_offset + pos)
        if ub is not None:
            found.append(ub)
    return found


def ring_slot(txg: int, shift: int) -> int:
    """The ring slot txg `txg` is written to, for a slot size of 2^`shift` bytes."""
    return txg % (VDEV_UBERBLOCK_RING >> shift)


def encode_uberblock(ub: Uberblock) -> bytes:
    """The 208-byte uberblock_t of `ub`, in its byte order (`parse_uberblock`'s inverse)."""
    return _LAYOUTS[ub.byteorder].build(
        {
            "ub_magic": UBERBLOCK_MAGIC,
            "ub_version": ub.ub_version,
            "ub_txg": ub.ub_txg,
            "ub_guid_sum": ub.ub_guid_sum,
            "ub_timestamp": ub.ub_timestamp,
            "ub_rootbp": encode_blkptr(ub.ub_rootbp, ub.byteorder),
            "ub_software_version": ub.ub_software_version,
            "ub_mmp_magic": ub.ub_mmp_magic,
            "ub_mmp_delay": ub.ub_mmp_delay,
            "ub_mmp_config": ub.ub_mmp_config,
            "ub_checkpoint_txg": ub.ub_checkpoint_txg,
        }
    )


def encode_slot(ub: Uberblock, offset: int, shift: int) -> bytes:
    """The 2^`shift` bytes of a ring slot at device offset `offset` holding `ub`: the
    uberblock, zeros, and the label checksum seeded with `offset`."""
    body = encode_uberblock(ub).ljust(1 << shift, b"\0")
    return embed_checksum(body, ZIO_CHECKSUM_LABEL, (offset, 0, 0, 0), ub.byteorder)
