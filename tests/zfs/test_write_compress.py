"""Compression on write: every algorithm round-trips through the reader's decoders, keeps
the eighth-saved and sector rules, and lzjb, zle and gzip give zfs-fuse's very bytes for
every block of a pool, decide as it did which blocks stay uncompressed."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from write_pool import write_pool
from zfsfuse import PoolRecord, ZfsFuse, walk_pool

from uvfs import ImageFile
from uvfs_fs.zfs import compress as c
from uvfs_fs.zfs.dmu import BlockCache, ObjectSet
from uvfs_fs.zfs.dnode import DMU_OT_PLAIN_FILE_CONTENTS
from uvfs_fs.zfs.dsl import list_datasets
from uvfs_fs.zfs.spa import open_pool

WRITTEN = [c.ZIO_COMPRESS_LZJB, *range(c.ZIO_COMPRESS_GZIP_1, c.ZIO_COMPRESS_GZIP_9 + 1),
           c.ZIO_COMPRESS_ZLE, c.ZIO_COMPRESS_LZ4, c.ZIO_COMPRESS_ZSTD]  # fmt: skip

# Blocks of every texture: runs, text, zero stretches, noise, and mixes of them.
_BLOCK = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, 255), st.integers(1, 3000)).map(lambda t: bytes([t[0]]) * t[1]),
        st.integers(1, 40).map(lambda n: b"the quick brown fox %d " % n * n),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(WRITTEN), _BLOCK, st.sampled_from([1, 3, 19]))
def test_compressed_blocks_decompress_to_themselves(
    compress: int, block: bytes, level: int
) -> None:
    """Whatever is stored compressed fits in seven eighths of the block, and the reader's
    decoder, given the sector-padded stream, gives the block back."""
    stream = c.compress(compress, block, level)
    if stream is None or stream == b"":
        assert stream is None or block.count(0) == len(block)
        return
    assert len(stream) <= len(block) - (len(block) >> 3)
    padded = c.pad_to_sector(stream, len(block), 512)
    if padded is not None:
        assert len(padded) % 512 == 0 and len(padded) < len(block)
        assert c.decompress(compress, padded, len(block)) == block
    assert c.decompress(compress, stream, len(block)) == block


@pytest.mark.parametrize("compress", WRITTEN)
def test_zeros_are_holes_and_noise_stays_uncompressed(compress: int) -> None:
    assert c.compress(compress, bytes(131072)) == b""
    assert c.compress(compress, os.urandom(4096)) is None


def test_eighth_and_sector_rules() -> None:
    """A stream must save an eighth of the block; sector rounding that reaches the logical
    size stores it plain."""
    # zle keeps lone zeros inside literal runs: 512 bytes cost 520, more than 448
    assert c.compress(c.ZIO_COMPRESS_ZLE, b"abcdefg\0" * 64) is None
    # one literal, then zero runs of at most 192 (length byte: zeros + 63)
    assert c.compress(c.ZIO_COMPRESS_ZLE, b"a" + bytes(511)) == b"\x00a\xff\xff\xbe"
    assert c.pad_to_sector(b"x" * 100, 4096, 512) == b"x" * 100 + bytes(412)
    assert c.pad_to_sector(b"x" * 100, 4096, 4096) is None  # ashift 12: no saving left
    assert c.pad_to_sector(b"x" * 3000, 4096, 1024) == b"x" * 3000 + bytes(72)


def test_zstd_header_names_level_and_version() -> None:
    stream = c.compress(c.ZIO_COMPRESS_ZSTD, b"zstd data " * 500, 7)
    assert stream is not None
    assert stream[4] == 7 and int.from_bytes(stream[5:8], "big") >= 10000
    assert int.from_bytes(stream[:4], "big") == len(stream) - 8
    with pytest.raises(c.CompressError, match="level 0"):
        c.compress(c.ZIO_COMPRESS_ZSTD, b"x" * 100, 0)
    with pytest.raises(c.CompressError, match="off"):
        c.compress(c.ZIO_COMPRESS_OFF, b"x" * 100)


@pytest.fixture(scope="module")
def pool_record(zfs_pool, zfs_fuse: ZfsFuse) -> PoolRecord:  # type: ignore[no-untyped-def]
    return write_pool(zfs_pool, zfs_fuse)


async def test_compressed_blocks_are_zfs_fuses_bytes(pool_record: PoolRecord) -> None:
    """Every compressed block of the pool (metadata in lzjb; file data in lzjb, gzip-1,
    gzip-9, zle) recompresses, padded to its sector, to exactly the bytes on disk; every
    file block zfs-fuse left uncompressed in a compressed dataset is one our rules would
    not compress either."""
    pool = await open_pool([ImageFile(str(v)) for v in pool_record.vdevs])
    mos = await ObjectSet.open(BlockCache(pool), pool.uberblock.ub_rootbp)
    by_objset = {ds.ds_obj: ds for ds in await list_datasets(mos, pool.name)}
    seen: dict[str, int] = {}
    async for v in walk_pool(pool):
        bp = v.bp
        if bp.compress == c.ZIO_COMPRESS_OFF:
            ds = by_objset.get(v.objset)
            prop = ds.props.get(b"compression") if ds else None
            if isinstance(prop, int) and bp.type == DMU_OT_PLAIN_FILE_CONTENTS and v.level == 0:
                stream = c.compress(prop, v.data)
                assert stream is None or c.pad_to_sector(stream, bp.lsize, 512) is None
                seen["kept plain"] = seen.get("kept plain", 0) + 1
            continue
        dva = bp.dvas[0]
        physical = await pool.vdevs[dva.vdev].read(dva.offset, bp.psize, None)
        stream = c.compress(bp.compress, v.data)
        assert stream is not None and c.pad_to_sector(stream, bp.lsize, 512) == physical
        name = c.COMPRESS_NAMES[bp.compress]
        seen[name] = seen.get(name, 0) + 1
    assert set(seen) >= {"lzjb", "gzip-1", "gzip-9", "zle", "kept plain"}, seen
    assert seen["lzjb"] > 50
