"""Block checksums (module/zcommon/zfs_fletcher.c, module/zfs/zio_checksum.c, sha256.c).

Every checksum is four 64-bit words (zio_cksum_t). How the words come out of a function
depends on it and on the data's byte order (the block pointer's BP_BYTEORDER):

* fletcher2 sums the data as 64-bit words in pairs, fletcher4 as 32-bit words; the words
  are read in the data's byte order (the ``_byteswap`` variants upstream) and the sums wrap
  at 2^64. Both are prefix sums of prefix sums, which numpy's wrapping ``cumsum`` computes
  exactly (`fletcher2`, `fletcher4`: the reference); `compute` uses _native.c, one pass
  in C that is ten times faster, cheap enough to run inline (`INLINE`).
* sha256 words are the digest read big-endian, whatever the data's order.
* sha512 (SHA-512/256), skein, edonr and blake3 words are the digest read in the data's
  order. Skein, edonr and blake3 are keyed with the pool's 32-byte checksum salt (the MOS
  directory's ``org.illumos:checksum_salt``); only blake3 has a Python library (`blake3`),
  so skein and edonr blocks cannot be verified here (`compute` returns None).

Labels, uberblocks and gang headers carry their checksum *inside* the block (zio_eck_t,
the last 40 bytes: zec_magic, zec_cksum): the checksum is computed over the block with
zec_cksum replaced by a verifier (the block's own address), which `verify_embedded` does;
`embed_checksum` writes it (zio_checksum_compute for such blocks). A new block's pointer
takes `compute` of its physical bytes, in the byte order it is written in.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from uvfs_fs.zfs import _native

try:
    import blake3 as _blake3
except ImportError:  # pragma: no cover - blake3 is optional: blocks stay unverified
    _blake3 = None

# enum zio_checksum
ZIO_CHECKSUM_INHERIT = 0
ZIO_CHECKSUM_ON = 1
ZIO_CHECKSUM_OFF = 2
ZIO_CHECKSUM_LABEL = 3
ZIO_CHECKSUM_GANG_HEADER = 4
ZIO_CHECKSUM_ZILOG = 5
ZIO_CHECKSUM_FLETCHER_2 = 6
ZIO_CHECKSUM_FLETCHER_4 = 7
ZIO_CHECKSUM_SHA256 = 8
ZIO_CHECKSUM_ZILOG2 = 9
ZIO_CHECKSUM_NOPARITY = 10
ZIO_CHECKSUM_SHA512 = 11
ZIO_CHECKSUM_SKEIN = 12
ZIO_CHECKSUM_EDONR = 13
ZIO_CHECKSUM_BLAKE3 = 14

CHECKSUM_NAMES = (
    "inherit", "on", "off", "label", "gang_header", "zilog", "fletcher2", "fletcher4",
    "sha256", "zilog2", "noparity", "sha512", "skein", "edonr", "blake3",
)  # fmt: skip


def checksum_name(func: int) -> str:
    """The name of checksum function `func` (as zfs get checksum shows it)."""
    return CHECKSUM_NAMES[func] if 0 <= func < len(CHECKSUM_NAMES) else f"checksum {func}"


# Functions computed at more than 1 GB/s (_native.c): a worker thread costs more than
# they do, except for the largest blocks.
INLINE = frozenset({ZIO_CHECKSUM_FLETCHER_2, ZIO_CHECKSUM_FLETCHER_4, ZIO_CHECKSUM_ZILOG,
                    ZIO_CHECKSUM_ZILOG2})  # fmt: skip

ZEC_MAGIC = 0x210DA7AB10C7A11  # zio_eck_t.zec_magic
ZIO_ECK_SIZE = 40
_MASK64 = (1 << 64) - 1

Cksum = tuple[int, int, int, int]


def fletcher2(data: bytes, byteorder: str) -> Cksum:
    """fletcher_2 over 64-bit words in `byteorder` (length a multiple of 16)."""
    raw = memoryview(data)[: len(data) // 16 * 16]
    words = np.frombuffer(raw, dtype=np.dtype(np.uint64).newbyteorder(byteorder))
    words = words.astype(np.uint64)
    a0 = np.cumsum(words[0::2], dtype=np.uint64)
    a1 = np.cumsum(words[1::2], dtype=np.uint64)
    if len(a0) == 0:
        return (0, 0, 0, 0)
    b0 = np.sum(a0, dtype=np.uint64)
    b1 = np.sum(a1, dtype=np.uint64)
    return (int(a0[-1]), int(a1[-1]), int(b0), int(b1))


def fletcher4(data: bytes, byteorder: str) -> Cksum:
    """fletcher_4 over 32-bit words in `byteorder` (length a multiple of 4)."""
    raw = memoryview(data)[: len(data) // 4 * 4]
    words = np.frombuffer(raw, dtype=np.dtype(np.uint32).newbyteorder(byteorder))
    if len(words) == 0:
        return (0, 0, 0, 0)
    a = np.cumsum(words, dtype=np.uint64)
    b = np.cumsum(a, dtype=np.uint64)
    c = np.cumsum(b, dtype=np.uint64)
    return (int(a[-1]), int(b[-1]), int(c[-1]), int(np.sum(c, dtype=np.uint64)))


def compute(func: int, data: bytes, byteorder: str, salt: bytes | None = None) -> Cksum | None:
    """The checksum words of `data` under function `func` (enum zio_checksum).

    Args:
        func: the checksum function; ZIO_CHECKSUM_LABEL and _GANG_HEADER are sha256,
            ZILOG is fletcher2 and ZILOG2 fletcher4 (their embedded users).
        data: the physical block.
        byteorder: the data's byte order, "<" or ">".
        salt: the pool's checksum salt, for the keyed functions.

    Returns:
        The four words, or None when this function cannot be computed here (off,
        noparity, skein, edonr, blake3 without salt or library, unknown numbers).
    """
    if func in (ZIO_CHECKSUM_FLETCHER_2, ZIO_CHECKSUM_ZILOG):
        return _native.fletcher2(data, byteorder == ">")
    if func in (ZIO_CHECKSUM_FLETCHER_4, ZIO_CHECKSUM_ZILOG2):
        return _native.fletcher4(data, byteorder == ">")
    if func in (ZIO_CHECKSUM_SHA256, ZIO_CHECKSUM_LABEL, ZIO_CHECKSUM_GANG_HEADER):
        return struct.unpack(">4Q", hashlib.sha256(data).digest())
    if func == ZIO_CHECKSUM_SHA512:
        return struct.unpack(byteorder + "4Q", hashlib.new("sha512_256", data).digest())
    if func == ZIO_CHECKSUM_BLAKE3 and _blake3 is not None and salt and len(salt) == 32:
        digest = _blake3.blake3(data, key=salt).digest()
        return struct.unpack(byteorder + "4Q", digest)
    return None


def eck_byteorder(block: bytes) -> str | None:
    """The byte order of a block with an embedded checksum, from zec_magic; None if absent."""
    (magic,) = struct.unpack_from("<Q", block, len(block) - ZIO_ECK_SIZE)
    if magic == ZEC_MAGIC:
        return "<"
    if magic == int.from_bytes(ZEC_MAGIC.to_bytes(8, "little"), "big"):
        return ">"
    return None


def verify_embedded(block: bytes, func: int, verifier: Cksum) -> bool:
    """Whether `block`'s trailing zio_eck_t holds its checksum with `verifier` as the seed."""
    order = eck_byteorder(block)
    if order is None:
        return False
    fmt = order + "4Q"
    stored = struct.unpack_from(fmt, block, len(block) - 32)
    seeded = block[:-32] + struct.pack(fmt, *(v & _MASK64 for v in verifier))
    return compute(func, seeded, order) == stored


def embed_checksum(block: bytes, func: int, verifier: Cksum, byteorder: str) -> bytes:
    """`block` with its trailing zio_eck_t filled in: zec_magic, then the checksum of the
    block computed with `verifier` in zec_cksum (`verify_embedded`'s inverse).

    Raises:
        ValueError: `func` cannot be computed here.
    """
    fmt = byteorder + "4Q"
    head = block[:-ZIO_ECK_SIZE] + struct.pack(byteorder + "Q", ZEC_MAGIC)
    got = compute(func, head + struct.pack(fmt, *(v & _MASK64 for v in verifier)), byteorder)
    if got is None:
        raise ValueError(f"{checksum_name(func)} cannot be computed here")
    return head + struct.pack(fmt, *got)
