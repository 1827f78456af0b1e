"""Decompression by enum zio_compress: lzjb and zle streams by hand, the framing of gzip,
lz4 and zstd blocks, and corrupt input of each."""

from __future__ import annotations

import struct
import zlib

import lz4.block
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs_fs.zfs import compress as c
from uvfs_fs.zfs._native import LzjbError, ZleError, lzjb_decompress
from uvfs_fs.zfs._native import zle_decompress as zle_c
from uvfs_fs.zfs.compress import CompressError, decompress, zle_decompress

TEXT = b"".join(b"record %d, compressible\n" % i for i in range(4000))


def test_lzjb_literals_and_matches() -> None:
    assert lzjb_decompress(b"\x00abcdefgh", 8) == b"abcdefgh"
    # three literals, then a match of 6 at distance 3 that overlaps its own output
    assert lzjb_decompress(b"\x08abc\x0c\x03", 9) == b"abcabcabc"
    # output stops at lsize even inside a match
    assert lzjb_decompress(b"\x08abc\x0c\x03", 5) == b"abcab"
    # a long match at distance 1: run-length
    assert lzjb_decompress(b"\x02z\xfc\x01", 40) == b"z" * 40


def _lzjb_loop(src: bytes, lsize: int) -> bytes | None:
    """LZJB decoded byte by byte, as upstream's loop; None where the C decoder must refuse."""
    out = bytearray()
    s = copymap = 0
    copymask = 1 << 7
    while len(out) < lsize:
        copymask <<= 1
        if copymask == 1 << 8:
            if s >= len(src):
                return None
            copymask, copymap = 1, src[s]
            s += 1
        if copymap & copymask:
            if s + 2 > len(src):
                return None
            mlen, offset = (src[s] >> 2) + 3, ((src[s] << 8) | src[s + 1]) & 0x3FF
            s += 2
            if offset == 0 or offset > len(out):
                return None
            for _ in range(min(mlen, lsize - len(out))):
                out.append(out[-offset])
        else:
            if s >= len(src):
                return None
            out.append(src[s])
            s += 1
    return bytes(out)


_LZJB_ITEM = st.one_of(  # a literal byte, or a match (length, offset)
    st.integers(0, 255).map(lambda b: bytes([b])),
    st.tuples(st.integers(0, 63), st.one_of(st.integers(1, 8), st.integers(1, 1023))).map(
        lambda m: bytes([(m[0] << 2) | (m[1] >> 8), m[1] & 0xFF])
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_LZJB_ITEM, max_size=120), st.integers(-2000, 8), st.integers(0, 3))
def test_c_lzjb_matches_the_byte_loop(items: list[bytes], slack: int, cut: int) -> None:
    """The C decoder's whole-group and chunked-match copies give the byte loop's output
    (overlapping matches included) and refuse exactly the streams the loop cannot decode."""
    stream = bytearray()
    for group in range(0, len(items), 8):
        chunk = items[group : group + 8]
        stream.append(sum(1 << i for i, item in enumerate(chunk) if len(item) == 2))
        stream += b"".join(chunk)
    src = bytes(stream[: len(stream) - cut])
    whole = sum(1 if len(item) == 1 else (item[0] >> 2) + 3 for item in items)
    lsize = max(whole + slack, 0)  # mostly inside the stream, sometimes past its end
    want = _lzjb_loop(src, lsize)
    if want is None:
        with pytest.raises(LzjbError):
            lzjb_decompress(src, lsize)
    else:
        assert lzjb_decompress(src, lsize) == want


@pytest.mark.parametrize(
    ("stream", "lsize"),
    [
        (b"\x00abc", 8),  # literals run out
        (b"\x08abc\x0c", 9),  # match cut short
        (b"\x01\x0c\x05", 6),  # match before the start of the output
        (b"\x02a\x0c\x00", 6),  # zero offset
        (b"", 1),
    ],
)
def test_lzjb_corrupt(stream: bytes, lsize: int) -> None:
    with pytest.raises(LzjbError):
        lzjb_decompress(stream, lsize)
    with pytest.raises(CompressError, match="lzjb"):
        decompress(c.ZIO_COMPRESS_LZJB, stream, lsize)


def test_zle() -> None:
    stream = bytes([2]) + b"xyz" + bytes([64 + 9])
    assert zle_decompress(stream, 13) == b"xyz" + bytes(10)
    assert decompress(c.ZIO_COMPRESS_ZLE, stream + bytes(3), 13) == b"xyz" + bytes(10)
    for bad, lsize in [(stream, 12), (stream, 14), (bytes([5]) + b"ab", 6)]:
        with pytest.raises(CompressError):
            zle_decompress(bad, lsize)
        with pytest.raises(CompressError, match="zle: "):
            decompress(c.ZIO_COMPRESS_ZLE, bad, lsize)


def _zle_stream(runs: list[tuple[bool, bytes]]) -> bytes:
    out = bytearray()
    for zero, chunk in runs:
        n = len(chunk)
        out += bytes([n + 63]) if zero else bytes([n - 1]) + chunk
    return bytes(out)


_RUN = st.one_of(
    st.binary(min_size=1, max_size=64).map(lambda b: (False, b)),
    st.integers(1, 192).map(lambda n: (True, bytes(n))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_RUN, max_size=40), st.integers(-3, 3))
def test_c_zle_matches_the_reference(runs: list[tuple[bool, bytes]], slack: int) -> None:
    """_native.c decodes ZLE well-formed streams as the Python loop does, and refuses the same
    streams when the logical size is off (too short or too long)."""
    stream = _zle_stream(runs)
    lsize = max(sum(len(chunk) for _, chunk in runs) + slack, 0)
    try:
        want = zle_decompress(stream, lsize)
    except CompressError:
        with pytest.raises(ZleError):
            zle_c(stream, lsize)
        return
    assert zle_c(stream, lsize) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 4096))
def test_c_zle_agrees_on_random_bytes(src: bytes, lsize: int) -> None:
    try:
        want = zle_decompress(src, lsize)
    except CompressError:
        with pytest.raises(ZleError):
            zle_c(src, lsize)
        return
    assert zle_c(src, lsize) == want


def test_gzip_levels_and_padding() -> None:
    for level in range(1, 10):
        block = zlib.compress(TEXT, level) + bytes(300)  # sector padding
        assert decompress(c.ZIO_COMPRESS_GZIP_1 + level - 1, block, len(TEXT)) == TEXT
    with pytest.raises(CompressError, match="gzip-1"):
        decompress(c.ZIO_COMPRESS_GZIP_1, b"\x78\x9c" + bytes(10), len(TEXT))


def test_lz4_framing() -> None:
    raw = lz4.block.compress(TEXT, store_size=False)
    block = struct.pack(">I", len(raw)) + raw + bytes(100)
    assert decompress(c.ZIO_COMPRESS_LZ4, block, len(TEXT)) == TEXT
    with pytest.raises(CompressError, match="exceeds"):
        decompress(c.ZIO_COMPRESS_LZ4, struct.pack(">I", 1 << 20) + raw, len(TEXT))
    with pytest.raises(CompressError):
        decompress(c.ZIO_COMPRESS_LZ4, block, len(TEXT) - 1)


@pytest.mark.parametrize("magicless", [True, False])
def test_zstd_framing(magicless: bool) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS if magicless else zstandard.FORMAT_ZSTD1
    )
    frame = zstandard.ZstdCompressor(compression_params=params).compress(TEXT)
    block = struct.pack(">II", len(frame), 0x00_2A_F8_03) + frame + bytes(64)
    assert decompress(c.ZIO_COMPRESS_ZSTD, block, len(TEXT)) == TEXT


def test_zstd_bomb_is_bounded() -> None:
    frame = zstandard.ZstdCompressor().compress(bytes(64 << 20))  # claims 64 MiB
    block = struct.pack(">II", len(frame), 0) + frame
    with pytest.raises(CompressError, match="not 4096"):
        decompress(c.ZIO_COMPRESS_ZSTD, block, 4096)


def test_off_empty_unknown() -> None:
    assert decompress(c.ZIO_COMPRESS_OFF, b"abcdef", 4) == b"abcd"
    assert decompress(c.ZIO_COMPRESS_EMPTY, b"", 3) == bytes(3)
    with pytest.raises(CompressError, match="unknown compression 99"):
        decompress(99, b"", 1)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([2, 3, 4, 5, 13, 14, 15, 16, 40]), st.binary(max_size=300),
       st.integers(1, 4096))  # fmt: skip
def test_random_blocks_decompress_or_fail_cleanly(compress: int, src: bytes, lsize: int) -> None:
    try:
        out = decompress(compress, src, lsize)
    except CompressError:
        return
    assert len(out) == lsize
