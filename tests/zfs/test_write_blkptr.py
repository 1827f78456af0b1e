"""Block pointers and checksums for write: encode_blkptr inverts parse_blkptr (random
records, every pointer of a zfs-fuse pool), embedded pointers read back through zio, and
embedded checksums rebuild zfs-fuse's labels and uberblocks byte for byte."""

from __future__ import annotations

import struct

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from write_pool import write_pool
from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs import ImageFile
from uvfs_fs.zfs import checksum as ck
from uvfs_fs.zfs.blkptr import (
    BPE_PAYLOAD_SIZE,
    DVA,
    BlockPtr,
    embedded_blkptr,
    encode_blkptr,
    parse_blkptr,
)
from uvfs_fs.zfs.compress import ZIO_COMPRESS_LZ4, compress
from uvfs_fs.zfs.label import VDEV_PHYS_OFFSET, VDEV_PHYS_SIZE, VDEV_UBERBLOCK_OFFSET
from uvfs_fs.zfs.spa import open_pool
from uvfs_fs.zfs.vdev import VdevStats
from uvfs_fs.zfs.zio import zio_read

_SECTORS = st.integers(1, 1 << 16).map(lambda n: n << 9)
_DVA = st.builds(
    DVA,
    st.integers(0, (1 << 24) - 1),
    st.integers(0, (1 << 63) - 1).map(lambda n: n << 9),
    st.integers(1, (1 << 24) - 1).map(lambda n: n << 9),
    st.booleans(),
)
_U64 = st.integers(0, (1 << 64) - 1)


@st.composite
def _blkptrs(draw: st.DrawFn) -> BlockPtr:
    dvas = tuple(draw(st.lists(_DVA, min_size=1, max_size=3)))
    return BlockPtr(
        dvas=dvas, lsize=draw(_SECTORS), psize=draw(_SECTORS), compress=draw(st.integers(0, 127)),
        checksum=draw(st.integers(0, 255)), type=draw(st.integers(0, 255)),
        level=draw(st.integers(0, 31)), embedded=False, byteorder=draw(st.sampled_from("<>")),
        birth_txg=draw(_U64), fill=draw(_U64), cksum=tuple(draw(st.lists(_U64, min_size=4,
        max_size=4))), is_hole=False, phys_birth=draw(_U64), encrypted=draw(st.booleans()),
        dedup=draw(st.booleans()),
    )  # type: ignore[arg-type]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_blkptrs(), st.sampled_from("<>"))
def test_pointers_round_trip(bp: BlockPtr, order: str) -> None:
    """Any pointer whose fields fit parses back to itself from its encoding, in either
    byte order of the block holding it (DVAs that are empty aside)."""
    assert parse_blkptr(encode_blkptr(bp, order), order) == bp


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=BPE_PAYLOAD_SIZE), st.integers(1, 1 << 25),
       st.sampled_from("<>"), st.sampled_from("<>"), _U64)  # fmt: skip
def test_embedded_pointers_round_trip(
    payload: bytes, lsize: int, data_order: str, order: str, birth: int
) -> None:
    bp = embedded_blkptr(payload, lsize, ZIO_COMPRESS_LZ4, 19, 0, data_order, birth)
    assert parse_blkptr(encode_blkptr(bp, order), order) == bp


async def test_an_embedded_block_reads_back_through_zio() -> None:
    """A small compressible block, compressed and embedded, is what zio_read returns."""
    data = b"tiny file, " * 40
    stream = compress(ZIO_COMPRESS_LZ4, data)
    assert stream is not None and len(stream) <= BPE_PAYLOAD_SIZE
    bp = embedded_blkptr(stream, len(data), ZIO_COMPRESS_LZ4, 19, 0, "<", 12)
    raw = encode_blkptr(bp, ">")
    assert await zio_read([], parse_blkptr(raw, ">"), VdevStats()) == data
    assert lz4.block.decompress(stream[4:], uncompressed_size=len(data)) == data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"psize": 1000}, "psize 1000"),
        ({"lsize": 1 << 26}, "lsize"),
        ({"dvas": (DVA(0, 512, 512, False),) * 4}, "1..3 DVAs"),
        ({"dvas": (DVA(1 << 24, 512, 512, False),)}, "fit"),
        ({"level": 32}, "out of range"),
    ],
)
def test_fields_out_of_range_are_refused(change: dict, message: str) -> None:
    bp = BlockPtr((DVA(0, 512, 512, False),), 512, 512, 2, 7, 19, 0, False, "<", 5, 1,
                  (1, 2, 3, 4), False)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        encode_blkptr(bp._replace(**change), "<")
    with pytest.raises(ValueError, match="payload"):
        encode_blkptr(embedded_blkptr(bytes(113), 4096, 15, 19, 0, "<", 1), "<")


@pytest.fixture(scope="module")
def pool_record(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    return write_pool(zfs_pool, zfs_fuse)


async def test_every_pointer_of_a_pool_encodes_to_its_bytes(pool_record: PoolRecord) -> None:
    """Each block pointer stored in the pool's indirect blocks (holes included), re-encoded
    from its parsed record, is the 128 bytes zfs-fuse wrote; each block's checksum,
    computed for writing, is its pointer's."""
    pool = await open_pool([ImageFile(str(v)) for v in pool_record.vdevs])
    pointers = checked = 0
    async for v in walk_pool(pool):
        if v.level > 0:
            for i in range(0, len(v.data), 128):
                raw = v.data[i : i + 128]
                assert encode_blkptr(parse_blkptr(raw, v.bp.byteorder), v.bp.byteorder) == raw
                pointers += 1
        if v.bp.embedded:
            continue
        dva = v.bp.dvas[0]
        physical = await pool.vdevs[dva.vdev].read(dva.offset, v.bp.psize, None)
        assert ck.compute(v.bp.checksum, physical, v.bp.byteorder) == v.bp.cksum
        checked += 1
    assert pointers > 1000 and checked > 100


def test_labels_and_uberblocks_rebuild_their_embedded_checksums(pool_record: PoolRecord) -> None:
    """Every vdev_phys and valid uberblock slot of label 0, its checksum words zeroed, gets
    back exactly its bytes from embed_checksum seeded with its offset."""
    with open(pool_record.vdevs[0], "rb") as f:
        label = f.read(256 << 10)
    slots = [(VDEV_PHYS_OFFSET, VDEV_PHYS_SIZE)]
    slots += [(VDEV_UBERBLOCK_OFFSET + i * 1024, 1024) for i in range(128)]
    rebuilt = 0
    for offset, size in slots:
        block = label[offset : offset + size]
        if not ck.verify_embedded(block, ck.ZIO_CHECKSUM_LABEL, (offset, 0, 0, 0)):
            continue
        order = ck.eck_byteorder(block)
        assert order is not None
        blank = block[:-32] + bytes(32)
        assert ck.embed_checksum(blank, ck.ZIO_CHECKSUM_LABEL, (offset, 0, 0, 0), order) == block
        rebuilt += 1
    assert rebuilt > 3


@pytest.mark.parametrize("order", ["<", ">"])
def test_embed_checksum_is_verified(order: str) -> None:
    block = bytes(range(256)) * 4
    for func in (ck.ZIO_CHECKSUM_LABEL, ck.ZIO_CHECKSUM_GANG_HEADER, ck.ZIO_CHECKSUM_ZILOG2):
        sealed = ck.embed_checksum(block, func, (7, 8, 9, 10), order)
        assert ck.verify_embedded(sealed, func, (7, 8, 9, 10))
        assert not ck.verify_embedded(sealed, func, (7, 8, 9, 11))
        assert struct.unpack_from(order + "Q", sealed, len(block) - 40)[0] == ck.ZEC_MAGIC
    with pytest.raises(ValueError, match="skein"):
        ck.embed_checksum(block, ck.ZIO_CHECKSUM_SKEIN, (0, 0, 0, 0), order)
