"""Block decompression (module/zfs/zio_compress.c and the per-algorithm files).

`decompress` turns a block's physical bytes into its `lsize` logical bytes by enum
zio_compress. Framing differs per algorithm:

* lzjb: a raw stream (_native.c, a C extension: the format is a byte loop);
* zle (zero-length encoding, zle.c, level 64): a length byte ``n`` below 64 means ``n + 1``
  literal bytes follow, otherwise ``n - 63`` zero bytes (decoded by _native.c;
  `zle_decompress` is the Python reference);
* gzip-1..9: a zlib stream (with header), trailing sector padding ignored;
* lz4 (lz4_zfs.c): a 4-byte big-endian length, then one raw LZ4 block of that length;
* zstd (zfs_zstd.c): a 4-byte big-endian length and a 4-byte version/level word, then a
  zstd frame of that length, written without the frame magic (ZSTD_f_zstd1_magicless).

Any failure, including output of the wrong length, is `CompressError`. Every decoder is
C; lzjb, zlib and zstandard release the GIL and run below 1 GB/s (`THREADED`), so callers
run their big blocks in a worker thread; the others cost less than the thread would.
"""

from __future__ import annotations

import struct
import zlib

import lz4.block
import zstandard

from uvfs_fs.zfs._native import LzjbError, ZleError, lzjb_decompress
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
