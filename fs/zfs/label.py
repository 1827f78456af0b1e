"""vdev_label_t (include/sys/vdev_impl.h, module/zfs/vdev_label.c): the four labels of a vdev.

Every leaf vdev carries four 256 KiB labels, two at the front (L0 at 0, L1 at 256 KiB) and
two at the back (L2, L3 in the last 512 KiB of the size rounded down to 256 KiB), all alike,
so that a partial overwrite at either end leaves one readable. A label is:

    0       vl_pad1         8 KiB   (VTOC / disk label space)
    8 KiB   vl_be           8 KiB   boot environment
    16 KiB  vl_vdev_phys    112 KiB packed XDR nvlist (this vdev's config), zio_eck_t tail
    128 KiB vl_uberblock    128 KiB uberblock ring (uberblock.py)

The nvlist's embedded checksum is sha256 seeded with its byte offset on the device. The
first 4 MiB (two labels and the boot block) are not allocatable: DVA offsets count from
VDEV_LABEL_START_SIZE.
"""

from __future__ import annotations

from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_LABEL, ZIO_ECK_SIZE, verify_embedded
from uvfs_fs.zfs.nvlist import NvlistError, NvValue, unpack_nvlist

VDEV_LABEL_SIZE = 256 * 1024
VDEV_PHYS_OFFSET = 16 * 1024
VDEV_PHYS_SIZE = 112 * 1024
VDEV_UBERBLOCK_OFFSET = 128 * 1024
VDEV_LABEL_START_SIZE = 4 * 1024 * 1024  # 2 labels + 3.5 MiB boot block


def label_offsets(psize: int) -> list[int]:
    """Device offsets of labels L0..L3 on a device of `psize` bytes (vdev_label_offset)."""
    size = psize - psize % VDEV_LABEL_SIZE
    return [0, VDEV_LABEL_SIZE, size - 2 * VDEV_LABEL_SIZE, size - VDEV_LABEL_SIZE]


def parse_vdev_phys(raw: bytes, offset: int) -> dict[str, NvValue] | None:
    """The config nvlist of one vl_vdev_phys at device offset `offset`, None if invalid."""
    if len(raw) != VDEV_PHYS_SIZE:
        return None
    if not verify_embedded(raw, ZIO_CHECKSUM_LABEL, (offset, 0, 0, 0)):
        return None
    try:
        return unpack_nvlist(raw[:-ZIO_ECK_SIZE])
    except NvlistError:
        return None


def parse_label(label: bytes, label_offset: int) -> dict[str, NvValue] | None:
    """The config nvlist of a whole 256 KiB label at device offset `label_offset`."""
    raw = label[VDEV_PHYS_OFFSET : VDEV_PHYS_OFFSET + VDEV_PHYS_SIZE]
    return parse_vdev_phys(raw, label_offset + VDEV_PHYS_OFFSET)
