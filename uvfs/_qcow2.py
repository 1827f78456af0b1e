"""QEMU's qcow2 format (docs/interop/qcow2.txt in QEMU), versions 2 and 3, sans-I/O.

A qcow2 file maps a guest disk of `size` bytes in clusters of 2**cluster_bits bytes through
two levels of tables: the L1 table (at l1_table_offset, l1_size entries) holds the offsets
of L2 tables, each one cluster of 8-byte entries, and an L2 entry says where one guest
cluster lives:

* unallocated (offset 0): read from the backing file, or zeros without one;
* zero (v3, bit 0): zeros, whatever the backing file holds;
* data (bits 9-55): the cluster's bytes at that host offset;
* compressed (bit 62): raw deflate (zlib) or a zstd frame, at a byte offset, taking a
  count of 512-byte sectors; it inflates to exactly one cluster.

Refcounts and snapshots only matter to writers and are not read. This module parses the
header and decodes entries; `_qcow2_image` does the reading.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_HEADER_READ = 112  # every field this module reads (v3 with compression_type)
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21
MAX_BACKING_NAME = 1023  # QEMU's own limit

# QCowHeader, big-endian: the v2 fields, then v3's features, refcount order and length.
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_HEADER_V3 = struct.Struct(">QQQII")

_OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00  # bits 9-55: a host offset in L1 and L2 entries
_L2_COMPRESSED = 1 << 62
_L2_ZERO = 1

# Incompatible feature bits (a reader that does not know one must refuse the image).
_INCOMPAT_DIRTY = 1 << 0  # refcounts may be stale: harmless to a reader
_INCOMPAT_CORRUPT = 1 << 1  # QEMU still opens these read-only, and so do we
_INCOMPAT_DATA_FILE = 1 << 2
_INCOMPAT_COMPRESSION = 1 << 3  # compression_type says which
_INCOMPAT_EXTL2 = 1 << 4
_INCOMPAT_NAMES = {_INCOMPAT_DATA_FILE: "external data file", _INCOMPAT_EXTL2: "extended L2"}
_INCOMPAT_READABLE = _INCOMPAT_DIRTY | _INCOMPAT_CORRUPT | _INCOMPAT_COMPRESSION

COMPRESSION_ZLIB, COMPRESSION_ZSTD = 0, 1
_CRYPT_NAMES = {1: "AES", 2: "LUKS"}


class Qcow2Error(ValueError):
    """The image is not one this reader can read; the message says why."""


@dataclass(frozen=True, slots=True)
class Qcow2Header:
    """The header fields a reader needs."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int  # the guest disk, in bytes
    l1_size: int
    l1_table_offset: int
    compression_type: int

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // 8

    def l1_index(self, offset: int) -> int:
        return offset // (self.cluster_size * self.l2_entries)

    def l2_index(self, offset: int) -> int:
        return (offset >> self.cluster_bits) % self.l2_entries


def is_qcow2(head: bytes) -> bool:
    return head[:4] == QCOW2_MAGIC


def parse_header(raw: bytes) -> Qcow2Header:
    """The header at the start of `raw` (`QCOW2_HEADER_READ` bytes, or the whole file if
    shorter); `Qcow2Error` for what cannot be read: encryption, unknown features."""
    if len(raw) < _HEADER_V2.size or not is_qcow2(raw):
        raise Qcow2Error("not a qcow2 image")
    (_, version, backing_offset, backing_size, cluster_bits, size, crypt, l1_size, l1_offset,
     *_) = _HEADER_V2.unpack_from(raw)  # fmt: skip
    if version not in (2, 3):
        raise Qcow2Error(f"qcow2 version {version} (known: 2, 3)")
    if crypt:
        raise Qcow2Error(f"encrypted ({_CRYPT_NAMES.get(crypt, f'method {crypt}')}) qcow2 image")
    incompatible, compression = 0, COMPRESSION_ZLIB
    if version == 3:
        if len(raw) < _HEADER_V2.size + _HEADER_V3.size:
            raise Qcow2Error("truncated qcow2 v3 header")
        incompatible, _, _, _, header_length = _HEADER_V3.unpack_from(raw, _HEADER_V2.size)
        unknown = incompatible & ~_INCOMPAT_READABLE
        if unknown:
            names = [_INCOMPAT_NAMES.get(1 << b, f"bit {b}") for b in range(64) if unknown >> b & 1]
            raise Qcow2Error(f"qcow2 incompatible features not supported: {', '.join(names)}")
        if incompatible & _INCOMPAT_COMPRESSION and header_length > 104 and len(raw) > 104:
            compression = raw[104]
    if compression not in (COMPRESSION_ZLIB, COMPRESSION_ZSTD):
        raise Qcow2Error(f"qcow2 compression type {compression} (known: zlib, zstd)")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise Qcow2Error(f"qcow2 cluster_bits {cluster_bits}")
    if backing_size > MAX_BACKING_NAME:
        raise Qcow2Error(f"qcow2 backing file name of {backing_size} bytes")
    header = Qcow2Header(version, backing_offset, backing_size if backing_offset else 0,
                         cluster_bits, size, l1_size, l1_offset, compression)  # fmt: skip
    if size and header.l1_index(size - 1) >= l1_size:
        raise Qcow2Error(f"qcow2 L1 table of {l1_size} entries is too small for {size} bytes")
    return header


def l2_table_offset(l1_entry: int) -> int:
    """Where the L2 table of an L1 entry lives; 0 when it has none."""
    return l1_entry & _OFFSET_MASK


class Kind(enum.Enum):
    UNALLOCATED = "unallocated"
    ZERO = "zero"
    DATA = "data"
    COMPRESSED = "compressed"


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where one guest cluster's bytes are: its kind, host offset and stored length."""

    kind: Kind
    offset: int = 0
    length: int = 0  # compressed: the bytes to read and inflate


def decode_l2(entry: int, header: Qcow2Header) -> Mapping:
    """The mapping an L2 entry gives; `Qcow2Error` for a misaligned data cluster."""
    if entry & _L2_COMPRESSED:
        shift = 62 - (header.cluster_bits - 8)
        offset = entry & ((1 << shift) - 1)
        sectors = ((entry >> shift) & ((1 << (header.cluster_bits - 8)) - 1)) + 1
        return Mapping(Kind.COMPRESSED, offset, sectors * 512 - (offset & 511))
    if header.version >= 3 and entry & _L2_ZERO:
        return Mapping(Kind.ZERO)
    offset = entry & _OFFSET_MASK
    if offset == 0:
        return Mapping(Kind.UNALLOCATED)
    if offset % header.cluster_size:
        raise Qcow2Error(f"data cluster at {offset} is not aligned to a cluster")
    return Mapping(Kind.DATA, offset)
