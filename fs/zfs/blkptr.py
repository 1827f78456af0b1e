"""blkptr_t: the 128-byte ZFS block pointer (include/sys/spa.h), parsed into plain records.

A block pointer names up to three copies (DVAs) of one block and says how to read it: its
logical and physical sizes, compression, checksum function and the checksum itself, its
object type, indirection level and the byte order of the data it points to. Layout (the
bit fields are defined once, in the `_Field` table below, for the parser and the encoder):

    0   blk_dva[3]      3 x 16 bytes: word0 = vdev:32..55 grid:24..31 asize:0..23
                        (512-byte units), word1 = gang:63 offset:0..62 (512-byte units)
    48  blk_prop        lsize:0..15 psize:16..31 (512-byte units, minus one)
                        compress:32..38 embedded:39 checksum:40..47 type:48..55
                        level:56..60 encrypted:61 dedup:62 byteorder:63 (1 = little endian)
    56  blk_pad[2]
    72  blk_phys_birth
    80  blk_birth       the transaction group that wrote the block
    88  blk_fill        non-hole blocks below an indirect block (dnodes for a dnode block)
    96  blk_cksum       4 x 64-bit checksum words

An embedded block pointer (BPE, module/zfs/blkptr.c) carries its (compressed) data instead:
blk_prop then holds lsize:0..24 and psize:25..31 (bytes, minus one) and the embedded type in
the checksum bits; the payload fills every word except blk_prop and blk_birth (112 bytes).
The pointer's words are in the byte order of the block holding it (the caller's
`byteorder`); the payload bytes are each word's bytes taken least significant first.

`encode_blkptr` is the writer's inverse of `parse_blkptr`: a record parsed from disk
encodes to the same 128 bytes (the DVA grid bits and blk_pad, never set, are written as
zeros), and a record built for a new block parses back to itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

BLKPTR_SIZE = 128
SPA_MINBLOCKSHIFT = 9
BP_EMBEDDED_TYPE_DATA = 0
BPE_PAYLOAD_SIZE = 112  # bytes of data an embedded pointer holds (14 words)
SPA_LSIZEBITS = 16  # lsize and psize fields: sectors minus one
_PAYLOAD_WORDS = (0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 14, 15)
_WORDS = {"<": struct.Struct("<16Q"), ">": struct.Struct(">16Q")}


# The records are NamedTuples, not frozen dataclasses: as immutable, and a walk builds one
# per pointer it parses, which a frozen dataclass's __init__ makes five times as dear.
class DVA(NamedTuple):
    """One data virtual address: where one copy of a block lives."""

    vdev: int  # top-level vdev id
    offset: int  # bytes, from the start of the vdev's allocatable space (after labels)
    asize: int  # allocated bytes (includes raidz parity and padding)
    gang: bool  # the address holds a gang header, not the data


class BlockPtr(NamedTuple):
    """One blkptr_t. For an embedded pointer `dvas` is empty and `payload` holds the data."""

    dvas: tuple[DVA, ...]  # the non-empty copies, in order
    lsize: int  # logical (uncompressed) size in bytes
    psize: int  # physical (compressed) size in bytes
    compress: int  # enum zio_compress (see compress.py)
    checksum: int  # enum zio_checksum (see checksum.py); embedded type when `embedded`
    type: int  # dmu_object_type_t of the block's contents
    level: int  # 0 = data, n = indirect block n levels above the data
    embedded: bool
    byteorder: str  # byte order of the pointed-to data: "<" or ">"
    birth_txg: int  # blk_birth
    fill: int  # blk_fill
    cksum: tuple[int, int, int, int]  # blk_cksum words
    is_hole: bool  # no data: reads as lsize zeros
    phys_birth: int = 0  # blk_phys_birth (0: same as birth_txg)
    encrypted: bool = False
    dedup: bool = False
    payload: bytes = b""  # embedded data, psize bytes, still compressed

    @property
    def etype(self) -> int:
        """The embedded type (BP_EMBEDDED_TYPE_DATA ...) of an embedded pointer."""
        return self.checksum


class _Field(NamedTuple):
    """One bit field of a blkptr_t word: `width` bits from bit `shift` up."""

    shift: int
    width: int
    mask: int  # (1 << width) - 1, kept so the hot parser does no arithmetic for it

    # The parser reads a field inline (`word >> F.shift & F.mask`): a method call per field
    # made parse_blkptr 40% dearer, the inline form costs 20% over literal shifts.

    def put(self, value: int) -> int:
        if not 0 <= value <= self.mask:
            raise ValueError(f"{value} does not fit a {self.width}-bit block pointer field")
        return value << self.shift


def _field(shift: int, width: int) -> _Field:
    return _Field(shift, width, (1 << width) - 1)


# The one definition of the bit layout, read by parse_blkptr and written by encode_blkptr.
# DVA word 0 and word 1 (dva_t):
DVA_ASIZE = _field(0, 24)  # 512-byte units
DVA_GRID = _field(24, 8)
DVA_VDEV = _field(32, 24)
DVA_OFFSET = _field(0, 63)  # 512-byte units
DVA_GANG = _field(63, 1)
# blk_prop of a normal pointer:
PROP_LSIZE = _field(0, SPA_LSIZEBITS)  # sectors minus one
PROP_PSIZE = _field(16, SPA_LSIZEBITS)  # sectors minus one
PROP_COMPRESS = _field(32, 7)
PROP_EMBEDDED = _field(39, 1)
PROP_CHECKSUM = _field(40, 8)  # the embedded type of an embedded pointer
PROP_TYPE = _field(48, 8)
PROP_LEVEL = _field(56, 5)
PROP_ENCRYPTED = _field(61, 1)
PROP_DEDUP = _field(62, 1)
PROP_BYTEORDER = _field(63, 1)  # 1 = little endian
# blk_prop of an embedded pointer, in place of lsize and psize:
BPE_LSIZE = _field(0, 25)  # bytes minus one
BPE_PSIZE = _field(25, 7)  # bytes minus one
BPE_LSIZE_MAX = BPE_LSIZE.mask + 1

# A DVA is empty when its vdev, asize, offset and gang bit are all zero (the grid bits of
# word 0 do not count): the test on the raw words, without building the DVA.
_DVA_W0_FIELDS = (DVA_VDEV.mask << DVA_VDEV.shift) | (DVA_ASIZE.mask << DVA_ASIZE.shift)


def _parse_dva(word0: int, word1: int) -> DVA:
    return DVA(
        word0 >> DVA_VDEV.shift & DVA_VDEV.mask,
        (word1 >> DVA_OFFSET.shift & DVA_OFFSET.mask) << SPA_MINBLOCKSHIFT,
        (word0 >> DVA_ASIZE.shift & DVA_ASIZE.mask) << SPA_MINBLOCKSHIFT,
        bool(word1 >> DVA_GANG.shift & DVA_GANG.mask),
    )


def parse_blkptr(raw: bytes, byteorder: str) -> BlockPtr:
    """Decode one 128-byte blkptr_t whose words are in `byteorder` ("<" or ">").

    Hot (every indirect-block step and dnode of a walk), so it builds the record
    positionally, in BlockPtr's field order, and skips empty DVAs by their raw words.
    """
    w = _WORDS[byteorder].unpack_from(raw)
    prop = w[6]
    if prop >> PROP_EMBEDDED.shift & PROP_EMBEDDED.mask:
        return _parse_embedded(w, prop)
    dvas = tuple(_parse_dva(w[i], w[i + 1]) for i in (0, 2, 4) if w[i] & _DVA_W0_FIELDS or w[i + 1])
    return BlockPtr(
        dvas,
        ((prop >> PROP_LSIZE.shift & PROP_LSIZE.mask) + 1) << SPA_MINBLOCKSHIFT,
        ((prop >> PROP_PSIZE.shift & PROP_PSIZE.mask) + 1) << SPA_MINBLOCKSHIFT,
        prop >> PROP_COMPRESS.shift & PROP_COMPRESS.mask,
        prop >> PROP_CHECKSUM.shift & PROP_CHECKSUM.mask,
        prop >> PROP_TYPE.shift & PROP_TYPE.mask,
        prop >> PROP_LEVEL.shift & PROP_LEVEL.mask,
        False,  # embedded
        "<" if prop >> PROP_BYTEORDER.shift & PROP_BYTEORDER.mask else ">",
        w[10],  # birth_txg
        w[11],  # fill
        (w[12], w[13], w[14], w[15]),
        not (w[0] & _DVA_W0_FIELDS or w[1]),  # is_hole: the first DVA is empty
        w[9],  # phys_birth
        bool(prop >> PROP_ENCRYPTED.shift & PROP_ENCRYPTED.mask),
        bool(prop >> PROP_DEDUP.shift & PROP_DEDUP.mask),
    )


def _parse_embedded(w: tuple[int, ...], prop: int) -> BlockPtr:
    psize = (prop >> BPE_PSIZE.shift & BPE_PSIZE.mask) + 1
    payload = b"".join(w[i].to_bytes(8, "little") for i in _PAYLOAD_WORDS)
    return BlockPtr(
        dvas=(),
        lsize=(prop >> BPE_LSIZE.shift & BPE_LSIZE.mask) + 1,
        psize=psize,
        compress=prop >> PROP_COMPRESS.shift & PROP_COMPRESS.mask,
        checksum=prop >> PROP_CHECKSUM.shift & PROP_CHECKSUM.mask,
        type=prop >> PROP_TYPE.shift & PROP_TYPE.mask,
        level=prop >> PROP_LEVEL.shift & PROP_LEVEL.mask,
        embedded=True,
        byteorder="<" if prop >> PROP_BYTEORDER.shift & PROP_BYTEORDER.mask else ">",
        birth_txg=w[10],
        fill=1,
        cksum=(0, 0, 0, 0),
        is_hole=False,
        encrypted=bool(prop >> PROP_ENCRYPTED.shift & PROP_ENCRYPTED.mask),
        dedup=bool(prop >> PROP_DEDUP.shift & PROP_DEDUP.mask),
        payload=payload[:psize],
    )


def parse_blkptrs(raw: bytes, byteorder: str) -> list[BlockPtr]:
    """All block pointers of an indirect block (a whole number of 128-byte slots)."""
    return [
        parse_blkptr(raw[i : i + BLKPTR_SIZE], byteorder)
        for i in range(0, len(raw) - BLKPTR_SIZE + 1, BLKPTR_SIZE)
    ]


class BlockPtrs(Sequence[BlockPtr]):
    """The block pointers in `raw` (whole 128-byte slots), parsed on first use.

    A dnode's pointers are parsed only when its data is read: a directory listing reads
    thousands of dnodes for their bonus buffers alone.
    """

    __slots__ = ("_byteorder", "_parsed", "_raw")

    def __init__(self, raw: bytes, byteorder: str) -> None:
        self._raw = raw
        self._byteorder = byteorder
        self._parsed: tuple[BlockPtr, ...] | None = None

    def _all(self) -> tuple[BlockPtr, ...]:
        if self._parsed is None:
            self._parsed = tuple(parse_blkptrs(self._raw, self._byteorder))
        return self._parsed

    @overload
    def __getitem__(self, index: int) -> BlockPtr: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[BlockPtr]: ...
    def __getitem__(self, index: int | slice) -> BlockPtr | Sequence[BlockPtr]:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._raw) // BLKPTR_SIZE

    def __iter__(self) -> Iterator[BlockPtr]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def _dva_words(dva: DVA) -> tuple[int, int]:
    if (dva.asize | dva.offset) & ((1 << SPA_MINBLOCKSHIFT) - 1):
        raise ValueError(f"DVA {dva} is not in whole sectors")
    try:
        return (
            DVA_VDEV.put(dva.vdev) | DVA_ASIZE.put(dva.asize >> SPA_MINBLOCKSHIFT),
            DVA_GANG.put(int(dva.gang)) | DVA_OFFSET.put(dva.offset >> SPA_MINBLOCKSHIFT),
        )
    except ValueError:
        raise ValueError(f"DVA {dva} does not fit its fields") from None


_MAX_SECTORS = PROP_LSIZE.mask + 1


def _sectors_field(size: int, what: str) -> int:
    if (
        size <= 0
        or size & ((1 << SPA_MINBLOCKSHIFT) - 1)
        or size > _MAX_SECTORS << SPA_MINBLOCKSHIFT
    ):
        raise ValueError(f"{what} {size} is not 1..65536 whole sectors")
    return (size >> SPA_MINBLOCKSHIFT) - 1


def encode_blkptr(bp: BlockPtr, byteorder: str) -> bytes:
    """The 128-byte blkptr_t of `bp`, its words in `byteorder` ("<" or ">").

    Raises:
        ValueError: a field out of its range (sizes not in whole sectors, more than three
            DVAs, an embedded payload over BPE_PAYLOAD_SIZE ...).
    """
    try:
        common = (
            PROP_COMPRESS.put(bp.compress)
            | PROP_CHECKSUM.put(bp.checksum)
            | PROP_TYPE.put(bp.type)
            | PROP_LEVEL.put(bp.level)
            | PROP_ENCRYPTED.put(int(bp.encrypted))
            | PROP_DEDUP.put(int(bp.dedup))
            | PROP_BYTEORDER.put(int(bp.byteorder == "<"))
        )
    except ValueError:
        raise ValueError(f"block pointer field out of range: {bp}") from None
    w = [0] * 16
    if bp.embedded:
        if not 0 < len(bp.payload) == bp.psize <= BPE_PAYLOAD_SIZE:
            raise ValueError(f"embedded payload of {len(bp.payload)} bytes, psize {bp.psize}")
        if not 0 < bp.lsize <= BPE_LSIZE_MAX:
            raise ValueError(f"embedded lsize {bp.lsize} out of range")
        words = struct.unpack("<14Q", bp.payload.ljust(BPE_PAYLOAD_SIZE, b"\0"))
        for i, word in zip(_PAYLOAD_WORDS, words, strict=True):
            w[i] = word
        w[6] = (
            common
            | BPE_LSIZE.put(bp.lsize - 1)
            | BPE_PSIZE.put(bp.psize - 1)
            | PROP_EMBEDDED.put(1)
        )
        w[10] = bp.birth_txg
        return _WORDS[byteorder].pack(*w)
    if len(bp.dvas) > 3 or bp.is_hole != (not bp.dvas):
        raise ValueError(f"a block pointer has 1..3 DVAs, a hole none: {bp.dvas}")
    for i, dva in enumerate(bp.dvas):
        w[2 * i], w[2 * i + 1] = _dva_words(dva)
    w[6] = (
        common
        | PROP_LSIZE.put(_sectors_field(bp.lsize, "lsize"))
        | PROP_PSIZE.put(_sectors_field(bp.psize, "psize"))
    )
    w[9], w[10], w[11] = bp.phys_birth, bp.birth_txg, bp.fill
    w[12:16] = bp.cksum
    return _WORDS[byteorder].pack(*w)


def embedded_blkptr(
    payload: bytes, lsize: int, compress: int, type: int, level: int, byteorder: str, birth: int
) -> BlockPtr:
    """The embedded pointer (BP_EMBEDDED_TYPE_DATA) holding `payload`, a block's
    compressed stream, for a block of `lsize` logical bytes in `byteorder` born at `birth`."""
    return BlockPtr(
        dvas=(),
        lsize=lsize,
        psize=len(payload),
        compress=compress,
        checksum=BP_EMBEDDED_TYPE_DATA,
        type=type,
        level=level,
        embedded=True,
        byteorder=byteorder,
        birth_txg=birth,
        fill=1,
        cksum=(0, 0, 0, 0),
        is_hole=False,
        payload=payload,
    )
