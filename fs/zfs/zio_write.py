"""The write pipeline's pure steps (module/zfs/zio.c: zio_write_compress, checksum_generate).

`zio_write_prepare` turns a block's logical bytes into what will be stored, as
zio_write_compress decides it:

1. with compression on, an all-zero block is a hole: nothing is stored; its pointer keeps
   lsize, type, level and the txg when the pool has hole_birth, else it is all zeros;
2. a compressed stream that fits BPE_PAYLOAD_SIZE becomes an embedded pointer when the
   pool has embedded_data (the block lives in its parent's pointer, no I/O);
3. otherwise the stream, zero-padded to the vdev's sector, is stored if that is smaller
   than the block (see compress.py for the eighth-saved rule), else the block as is.

A stored block's pointer then lacks only its DVAs: the caller allocates `len(physical)`
bytes (more on raidz: parity) and calls `zio_write_finish`. The checksum covers the
physical bytes, in the pointer's byte order, as the reader verifies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from uvfs_fs.zfs.blkptr import (
    BPE_PAYLOAD_SIZE,
    DVA,
    BlockPtr,
    embedded_blkptr,
    parse_blkptr,
)
from uvfs_fs.zfs.checksum import compute
from uvfs_fs.zfs.compress import (
    ZIO_COMPRESS_OFF,
    ZIO_ZSTD_LEVEL_DEFAULT,
    compress,
    pad_to_sector,
)

ZERO_BP = parse_blkptr(bytes(128), "<")  # BP_ZERO: what a hole is without hole_birth


class WriteProps(NamedTuple):
    """How one block is written (zio_prop_t, with the pool's features that matter)."""

    compress: int  # enum zio_compress; ZIO_COMPRESS_OFF stores the block as is
    checksum: int  # enum zio_checksum
    type: int  # dmu_object_type_t
    level: int  # 0 for data, n for an indirect block
    byteorder: str = "<"  # of the block's data
    zstd_level: int = ZIO_ZSTD_LEVEL_DEFAULT
    embedded_data: bool = False  # the pool has com.delphix:embedded_data enabled
    hole_birth: bool = False  # the pool has com.delphix:hole_birth active
    sector: int = 512  # the smallest allocation: 1 << the vdev's ashift


class PreparedBlock(NamedTuple):
    """A block ready to store: `physical` to write (b"" for holes and embedded blocks,
    whose `bp` is final) and its pointer, DVAs still to come."""

    bp: BlockPtr
    physical: bytes


def zio_write_prepare(data: bytes, props: WriteProps, txg: int) -> PreparedBlock:
    """What to store for the logical block `data` written in `txg`.

    Raises:
        ValueError: the checksum cannot be computed here (off, skein, edonr ...).
        CompressError: an algorithm that is not written.
    """
    lsize = len(data)
    stored, physical = ZIO_COMPRESS_OFF, data
    if props.compress != ZIO_COMPRESS_OFF:
        stream = compress(props.compress, data, props.zstd_level)
        if stream == b"":
            if not props.hole_birth:
                return PreparedBlock(ZERO_BP, b"")
            hole = ZERO_BP._replace(lsize=lsize, type=props.type, level=props.level,
                                     birth_txg=txg)  # fmt: skip
            return PreparedBlock(hole, b"")
        if stream is not None and props.embedded_data and len(stream) <= BPE_PAYLOAD_SIZE:
            bp = embedded_blkptr(stream, lsize, props.compress, props.type, props.level,
                                 props.byteorder, txg)  # fmt: skip
            return PreparedBlock(bp, b"")
        padded = pad_to_sector(stream, lsize, props.sector) if stream is not None else None
        if padded is not None:
            stored, physical = props.compress, padded
    cksum = compute(props.checksum, physical, props.byteorder)
    if cksum is None:
        raise ValueError(f"checksum {props.checksum} cannot be computed for writing")
    bp = BlockPtr(
        dvas=(),
        lsize=lsize,
        psize=len(physical),
        compress=stored,
        checksum=props.checksum,
        type=props.type,
        level=props.level,
        embedded=False,
        byteorder=props.byteorder,
        birth_txg=txg,
        fill=1,
        cksum=cksum,
        is_hole=False,
    )
    return PreparedBlock(bp, physical)


def zio_write_finish(prepared: PreparedBlock, dvas: Sequence[DVA], fill: int = 1) -> BlockPtr:
    """The final pointer of a stored block once its copies are allocated (`fill`: the
    non-hole blocks below an indirect block, 1 for data)."""
    if not 1 <= len(dvas) <= 3 or prepared.physical == b"":
        raise ValueError("a stored block takes 1..3 DVAs; holes and embedded blocks none")
    return prepared.bp._replace(dvas=tuple(dvas), fill=fill)
