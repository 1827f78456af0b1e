"""The write pipeline's pure steps: a block prepared, allocated by a metaslab, stored in a
vdev image and pointed to by an encoded pointer reads back through zio_read; zero blocks
become holes and small ones embedded pointers, as zio_write_compress decides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uvfs import ImageFile
from uvfs_fs.zfs import checksum as ck
from uvfs_fs.zfs import compress as c
from uvfs_fs.zfs.blkptr import encode_blkptr, parse_blkptr
from uvfs_fs.zfs.label import VDEV_LABEL_START_SIZE
from uvfs_fs.zfs.metaslab import Metaslab, metaslab_alloc
from uvfs_fs.zfs.range_tree import RangeTree
from uvfs_fs.zfs.vdev import LeafVdev, VdevStats
from uvfs_fs.zfs.zio import zio_read
from uvfs_fs.zfs.zio_write import WriteProps, zio_write_finish, zio_write_prepare

TEXT = b"".join(b"record %d of a compressible file\n" % i for i in range(4000))[:131072]


@pytest.mark.parametrize(
    ("compress", "checksum", "order", "data"),
    [
        (c.ZIO_COMPRESS_LZJB, ck.ZIO_CHECKSUM_FLETCHER_4, "<", TEXT),
        (c.ZIO_COMPRESS_GZIP_1 + 5, ck.ZIO_CHECKSUM_SHA256, ">", TEXT),
        (c.ZIO_COMPRESS_ZSTD, ck.ZIO_CHECKSUM_FLETCHER_2, "<", TEXT[:4096]),
        (c.ZIO_COMPRESS_LZ4, ck.ZIO_CHECKSUM_FLETCHER_4, "<", os.urandom(8192)),
        (c.ZIO_COMPRESS_OFF, ck.ZIO_CHECKSUM_SHA256, "<", TEXT[:2048]),
    ],
)
async def test_stored_blocks_read_back(
    tmp_path: Path, compress: int, checksum: int, order: str, data: bytes
) -> None:
    """Allocate, write, point, read: the reader verifies the checksum, decompresses, and
    gets the block; a block that does not compress is stored plain, whole."""
    props = WriteProps(compress, checksum, 19, 0, order)
    prepared = zio_write_prepare(data, props, txg=42)
    ms = Metaslab(0, 0, 0, 1 << 20, 9, 0, RangeTree())
    ms.alloc(8192)  # something is already there
    dva = metaslab_alloc([ms], len(prepared.physical))
    assert dva.offset == 8192 and len(prepared.physical) % 512 == 0
    image = tmp_path / "vdev.img"
    with open(image, "wb") as f:
        f.truncate(VDEV_LABEL_START_SIZE + (1 << 20))
        f.seek(VDEV_LABEL_START_SIZE + dva.offset)
        f.write(prepared.physical)
    bp = parse_blkptr(encode_blkptr(zio_write_finish(prepared, [dva]), ">"), ">")
    incompressible = compress in (c.ZIO_COMPRESS_OFF, c.ZIO_COMPRESS_LZ4)
    assert (bp.compress == c.ZIO_COMPRESS_OFF) == incompressible
    assert (bp.psize == len(data)) == incompressible
    assert (bp.birth_txg, bp.byteorder, bp.checksum) == (42, order, checksum)
    stats = VdevStats()
    leaf = LeafVdev(type="file", guid=1, id=0, stats=stats, image=ImageFile(str(image)))
    assert await zio_read([leaf], bp, stats) == data
    assert stats.checksum_errors == 0 and stats.unverified == 0


async def test_zero_blocks_are_holes() -> None:
    props = WriteProps(c.ZIO_COMPRESS_LZ4, ck.ZIO_CHECKSUM_FLETCHER_4, 19, 0)
    plain = zio_write_prepare(bytes(131072), props, txg=9)
    assert plain.physical == b"" and plain.bp.is_hole and plain.bp.birth_txg == 0
    assert encode_blkptr(plain.bp, "<") == bytes(128)  # BP_ZERO
    born = zio_write_prepare(bytes(131072), props._replace(hole_birth=True), txg=9).bp
    assert born.is_hole and (born.lsize, born.type, born.birth_txg) == (131072, 19, 9)
    assert await zio_read([], parse_blkptr(encode_blkptr(born, "<"), "<"), VdevStats()) == bytes(
        131072
    )
    off = WriteProps(c.ZIO_COMPRESS_OFF, ck.ZIO_CHECKSUM_FLETCHER_4, 19, 0)
    assert zio_write_prepare(bytes(512), off, txg=9).physical == bytes(512)  # no compression


async def test_small_blocks_embed_when_the_pool_allows() -> None:
    data = (b"a small file\n" * 40)[:512]
    props = WriteProps(c.ZIO_COMPRESS_LZ4, ck.ZIO_CHECKSUM_FLETCHER_4, 19, 0, ">",
                       embedded_data=True)  # fmt: skip
    prepared = zio_write_prepare(data, props, txg=3)
    assert prepared.physical == b"" and prepared.bp.embedded
    bp = parse_blkptr(encode_blkptr(prepared.bp, "<"), "<")
    assert await zio_read([], bp, VdevStats()) == data
    stored = zio_write_prepare(data, props._replace(embedded_data=False), txg=3)
    # stored, the stream would take a whole sector: no saving, so it stays plain
    assert not stored.bp.embedded and stored.bp.compress == c.ZIO_COMPRESS_OFF
    assert stored.physical == data
    with pytest.raises(ValueError, match=r"1\.\.3 DVAs"):
        zio_write_finish(prepared, [])
