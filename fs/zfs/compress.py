"""Block compression and decompression (module/zfs/zio_compress.c and per-algorithm files).

`decompress` turns a block's physical bytes into its `lsize` logical bytes by enum
zio_compress; `compress` is its inverse, the writer's zio_compress_data. Framing differs
per algorithm:

* lzjb: a raw stream (_native.c, a C extension: the format is a byte loop);
* zle (zero-length encoding, zle.c, level 64): a length byte ``n`` below 64 means ``n + 1``
  literal bytes follow, otherwise ``n - 63`` zero bytes (decoded by _native.c;
  `zle_decompress` is the Python reference);
* gzip-1..9: a zlib stream (with header), trailing sector padding ignored;
* lz4 (lz4_zfs.c): a 4-byte big-endian length, then one raw LZ4 block of that length;
* zstd (zfs_zstd.c): a 4-byte big-endian length and a 4-byte version/level word, then a
  zstd frame of that length, written without the frame magic (ZSTD_f_zstd1_magicless).

On write, a block is stored compressed only if that saves at least an eighth of it
(zio_compress_data: the stream must fit in ``lsize - lsize/8`` bytes, and each encoder gives
up as soon as it cannot), and then only if rounding the stream up to the vdev's sector
(`pad_to_sector`) still leaves it smaller than `lsize`. lzjb and zle are _native.c ports
of upstream's loops and give upstream's exact bytes; gzip is zlib's compress2 (the same
stream as upstream's for a given zlib); lz4 and zstd decode everywhere but their bytes
are those of the `lz4` and `zstandard` libraries (zstd magicless, without content size or
checksum, as zfs_zstd.c writes it).

Any failure, including output of the wrong length, is `CompressError`. Every decoder is
C; lzjb, zlib and zstandard release the GIL and run below 1 GB/s (`THREADED`), so callers
run their big blocks in a worker thread; the others cost less than the thread would.
"""

from __future__ import annotations

import struct
import zlib

import lz4.block
import zstandard

from uvfs_fs.zfs._native import LzjbError, ZleError, lzjb_compress, lzjb_decompress, zle_compress
from uvfs_fs.zfs._native import zle_decompress as zle_decompress_c

# enum zio_compress
ZIO_COMPRESS_INHERIT = 0
ZIO_COMPRESS_ON = 1
ZIO_COMPRESS_OFF = 2
ZIO_COMPRESS_LZJB = 3
ZIO_COMPRESS_EMPTY = 4
ZIO_COMPRESS_GZIP_1 = 5
ZIO_COMPRESS_GZIP_9 = 13
ZIO_COMPRESS_ZLE = 14
ZIO_COMPRESS_LZ4 = 15
ZIO_COMPRESS_ZSTD = 16

COMPRESS_NAMES = (
    "inherit", "on", "off", "lzjb", "empty", "gzip-1", "gzip-2", "gzip-3", "gzip-4",
    "gzip-5", "gzip-6", "gzip-7", "gzip-8", "gzip-9", "zle", "lz4", "zstd",
)  # fmt: skip

ZLE_LEVEL = 64
ZIO_ZSTD_LEVEL_DEFAULT = 3  # zstd's level when the property says only "zstd"
ZIO_ZSTD_LEVELS = range(1, 20)  # zstd-1 .. zstd-19 (the negative "fast" levels are not written)
# zfs_zstdhdr_t's version word: the library's version, as ZSTD_VERSION_NUMBER.
_ZSTD_VERSION = zstandard.ZSTD_VERSION[0] * 10000 + zstandard.ZSTD_VERSION[1] * 100 + \
    zstandard.ZSTD_VERSION[2]  # fmt: skip
# Algorithms decoded in C with the GIL released, slowly enough to be worth a worker thread
# for big blocks (lz4 and zle decode at several GB/s: a thread would cost more).
THREADED = frozenset({ZIO_COMPRESS_LZJB, *range(ZIO_COMPRESS_GZIP_1, ZIO_COMPRESS_GZIP_9 + 1),
                      ZIO_COMPRESS_ZSTD})  # fmt: skip
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CompressError(ValueError):
    """A compressed block does not decompress to its logical size."""


def zle_decompress(src: bytes, lsize: int) -> bytes:
    """Decode a zero-length-encoded block to exactly `lsize` bytes (the reference for _native.c)."""
    out = bytearray()
    s = 0
    n = len(src)
    while s < n and len(out) < lsize:
        length = src[s] + 1
        s += 1
        if length <= ZLE_LEVEL:
            if s + length > n or len(out) + length > lsize:
                raise CompressError("zle literal run overruns the block")
            out += src[s : s + length]
            s += length
        else:
            length -= ZLE_LEVEL
            if len(out) + length > lsize:
                raise CompressError("zle zero run overruns the block")
            out += bytes(length)
    if len(out) != lsize:
        raise CompressError(f"zle block decodes to {len(out)} bytes, not {lsize}")
    return bytes(out)


def _gzip(src: bytes, lsize: int) -> bytes:
    d = zlib.decompressobj()
    return d.decompress(src, lsize)


def _lz4(src: bytes, lsize: int) -> bytes:
    (bufsiz,) = struct.unpack_from(">I", src)
    if 4 + bufsiz > len(src):
        raise CompressError(f"lz4 length {bufsiz} exceeds the block")
    return lz4.block.decompress(src[4 : 4 + bufsiz], uncompressed_size=lsize)


def _zstd(src: bytes, lsize: int) -> bytes:
    (c_len,) = struct.unpack_from(">I", src)
    if 8 + c_len > len(src):
        raise CompressError(f"zstd length {c_len} exceeds the block")
    frame = src[8 : 8 + c_len]
    fmt = zstandard.FORMAT_ZSTD1 if frame[:4] == _ZSTD_MAGIC else zstandard.FORMAT_ZSTD1_MAGICLESS
    # A stream reader bounds the output, whatever content size a hostile frame claims.
    with zstandard.ZstdDecompressor(format=fmt).stream_reader(frame) as reader:
        return reader.read(lsize + 1)


def _gzip_compress(src: bytes, d_len: int, level: int) -> bytes | None:
    out = zlib.compress(src, level)
    return out if len(out) <= d_len else None


def _lz4_compress(src: bytes, d_len: int) -> bytes | None:
    raw = lz4.block.compress(src, store_size=False)
    return struct.pack(">I", len(raw)) + raw if 4 + len(raw) <= d_len else None


def _zstd_compress(src: bytes, d_len: int, level: int) -> bytes | None:
    if level not in ZIO_ZSTD_LEVELS:
        raise CompressError(f"zstd level {level} is not written")
    params = zstandard.ZstdCompressionParameters.from_level(
        level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=0, write_checksum=0
    )
    frame = zstandard.ZstdCompressor(compression_params=params).compress(src)
    if 8 + len(frame) > d_len:
        return None
    # raw_version_level, stored big-endian: the level in the top byte, the version below.
    return struct.pack(">II", len(frame), (level << 24) | _ZSTD_VERSION) + frame


def compress(compress: int, src: bytes, level: int = ZIO_ZSTD_LEVEL_DEFAULT) -> bytes | None:
    """zio_compress_data: `src` compressed by algorithm `compress`, or None when not worth it.

    Args:
        compress: the algorithm (lzjb, gzip-1..9, zle, lz4, zstd).
        src: the logical block.
        level: zstd's level (1..19); the others take theirs from `compress`.

    Returns:
        The compressed stream, unpadded; b"" when `src` is all zeros (the block is a hole
        and stores nothing); None when the stream would not save an eighth of `src`.

    Raises:
        CompressError: an algorithm that is not written (off, empty, unknown).
    """
    if src.count(0) == len(src):
        return b""
    d_len = len(src) - (len(src) >> 3)
    if compress == ZIO_COMPRESS_LZJB:
        return lzjb_compress(src, d_len)
    if ZIO_COMPRESS_GZIP_1 <= compress <= ZIO_COMPRESS_GZIP_9:
        return _gzip_compress(src, d_len, compress - ZIO_COMPRESS_GZIP_1 + 1)
    if compress == ZIO_COMPRESS_ZLE:
        return zle_compress(src, d_len)
    if compress == ZIO_COMPRESS_LZ4:
        return _lz4_compress(src, d_len)
    if compress == ZIO_COMPRESS_ZSTD:
        return _zstd_compress(src, d_len, level)
    raise CompressError(f"{_name(compress)} is not a compression to write with")


def pad_to_sector(stream: bytes, lsize: int, sector: int) -> bytes | None:
    """A compressed `stream` zero-padded to whole `sector`s (the vdev's smallest
    allocation), or None when that is no smaller than the `lsize` bytes it replaces."""
    rounded = -(-len(stream) // sector) * sector
    return stream.ljust(rounded, b"\0") if rounded < lsize else None


def decompress(compress: int, src: bytes, lsize: int) -> bytes:
    """The `lsize` logical bytes of a block stored as `src` with algorithm `compress`.

    Raises:
        CompressError: unknown algorithm or corrupt data.
    """
    try:
        if compress in (ZIO_COMPRESS_OFF, ZIO_COMPRESS_INHERIT, ZIO_COMPRESS_ON):
            out = src[:lsize]
        elif compress == ZIO_COMPRESS_EMPTY:
            out = bytes(lsize)
        elif compress == ZIO_COMPRESS_LZJB:
            out = lzjb_decompress(src, lsize)
        elif ZIO_COMPRESS_GZIP_1 <= compress <= ZIO_COMPRESS_GZIP_9:
            out = _gzip(src, lsize)
        elif compress == ZIO_COMPRESS_ZLE:
            out = zle_decompress_c(src, lsize)
        elif compress == ZIO_COMPRESS_LZ4:
            out = _lz4(src, lsize)
        elif compress == ZIO_COMPRESS_ZSTD:
            out = _zstd(src, lsize)
        else:
            raise CompressError(f"unknown compression {compress}")
    except (LzjbError, ZleError, zlib.error, lz4.block.LZ4BlockError, zstandard.ZstdError,
            struct.error) as e:  # fmt: skip
        raise CompressError(f"{_name(compress)}: {e}") from None
    if len(out) != lsize:
        raise CompressError(f"{_name(compress)} block gives {len(out)} bytes, not {lsize}")
    return out


def _name(compress: int) -> str:
    return COMPRESS_NAMES[compress] if compress < len(COMPRESS_NAMES) else str(compress)
