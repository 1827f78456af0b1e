"""jbd2 on-disk records: the journal superblock, descriptor, commit and revoke blocks.

The journal (ext3's and ext4's, kept by the kernel's fs/jbd2) is a circular log of
blocks, all big-endian. Its first block is the journal superblock; the log proper runs
from s_first to s_maxlen (less the fast-commit area at the end, when there is one), and
s_start names the block where the oldest transaction not yet written home begins, 0 when
the journal is empty. Every log block that is not a copy of a filesystem block opens with
a `journal_header` (magic, type, transaction sequence):

- a *descriptor* block lists the filesystem blocks whose new contents follow it in the
  log, one tag each (block number; flags: ESCAPE when the copy's first four bytes were
  the magic and are stored as zeros, SAME_UUID when no 16-byte UUID follows the tag,
  LAST_TAG on the last one); tags are 8 to 16 bytes depending on 64bit and csum v2/v3;
- a *commit* block closes a transaction: only committed transactions are replayed;
- a *revoke* block lists blocks whose copies in this or earlier transactions must not be
  replayed (they were freed and may since hold data written outside the journal).

Checksums. v1 (compat CHECKSUM) puts in each commit block a big-endian CRC32 of every
descriptor and data block of the transaction. v2 and v3 (incompat CSUM_V2/V3) use crc32c
seeded by the journal UUID: in the superblock, in a 4-byte tail of descriptor and revoke
blocks, in the commit block's h_chksum[0], and per data block in its tag (16 bits in v2,
32 in v3), chained over the big-endian transaction sequence first.

Each record has its decoder and its encoder side by side, over one layout definition: the
readers (recovery.py) and the writer (transaction.py) cannot disagree. Decoders raise
`JournalError` for what cannot be trusted; nothing here does I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from construct import Array, Bytes, Container, Int8ub, Int32ub, Int64ub, Struct

from uvfs_fs.ext2.csum import crc32c_le

JBD2_MAGIC_NUMBER = 0xC03B3998

# h_blocktype
JBD2_DESCRIPTOR_BLOCK = 1
JBD2_COMMIT_BLOCK = 2
JBD2_SUPERBLOCK_V1 = 3
JBD2_SUPERBLOCK_V2 = 4
JBD2_REVOKE_BLOCK = 5

# feature words of the journal superblock
JBD2_FEATURE_COMPAT_CHECKSUM = 0x1
JBD2_FEATURE_INCOMPAT_REVOKE = 0x1
JBD2_FEATURE_INCOMPAT_64BIT = 0x2
JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT = 0x4
JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8
JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10
JBD2_FEATURE_INCOMPAT_FAST_COMMIT = 0x20
JBD2_KNOWN_INCOMPAT = 0x3F

# t_flags of a descriptor tag
JBD2_FLAG_ESCAPE = 1  # the block's first 4 bytes were the magic: zeroed in the log copy
JBD2_FLAG_SAME_UUID = 2  # no 16-byte UUID follows this tag
JBD2_FLAG_DELETED = 4
JBD2_FLAG_LAST_TAG = 8

# commit_header.h_chksum_type (v1), journal_superblock.s_checksum_type (v2/v3)
JBD2_CRC32_CHKSUM = 1
JBD2_CRC32_CHKSUM_SIZE = 4
JBD2_CRC32C_CHKSUM = 4

JBD2_MIN_JOURNAL_BLOCKS = 1024
JBD2_DEFAULT_FAST_COMMIT_BLOCKS = 256
JOURNAL_HEADER_SIZE = 12
JBD2_BLOCK_TAIL_SIZE = 4  # jbd2_journal_block_tail: descriptor and revoke blocks, v2/v3
JOURNAL_SUPERBLOCK_SIZE = 1024
S_CHECKSUM = 0xFC  # journal_superblock.s_checksum
H_CHKSUM = 0x10  # commit_header.h_chksum[0]
UUID_SIZE = 16

# fmt: off
journal_header = Struct(
    "h_magic" / Int32ub,                    # 0x0
    "h_blocktype" / Int32ub,                # 0x4
    "h_sequence" / Int32ub,                 # 0x8
)

journal_superblock = Struct(
    "s_header" / journal_header,            # 0x000
    "s_blocksize" / Int32ub,                # 0x00c
    "s_maxlen" / Int32ub,                   # 0x010
    "s_first" / Int32ub,                    # 0x014
    "s_sequence" / Int32ub,                 # 0x018
    "s_start" / Int32ub,                    # 0x01c
    "s_errno" / Int32ub,                    # 0x020
    # superblock v2 only from here on
    "s_feature_compat" / Int32ub,           # 0x024
    "s_feature_incompat" / Int32ub,         # 0x028
    "s_feature_ro_compat" / Int32ub,        # 0x02c
    "s_uuid" / Bytes(16),                   # 0x030
    "s_nr_users" / Int32ub,                 # 0x040
    "s_dynsuper" / Int32ub,                 # 0x044
    "s_max_transaction" / Int32ub,          # 0x048
    "s_max_trans_data" / Int32ub,           # 0x04c
    "s_checksum_type" / Int8ub,             # 0x050
    "s_padding2" / Bytes(3),                # 0x051
    "s_num_fc_blks" / Int32ub,              # 0x054
    "s_head" / Int32ub,                     # 0x058
    "s_padding" / Array(40, Int32ub),       # 0x05c
    "s_checksum" / Int32ub,                 # 0x0fc
    "s_users" / Bytes(16 * 48),             # 0x100
)

commit_header = Struct(
    "h_header" / journal_header,            # 0x00
    "h_chksum_type" / Int8ub,               # 0x0c
    "h_chksum_size" / Int8ub,               # 0x0d
    "h_padding" / Bytes(2),                 # 0x0e
    "h_chksum" / Array(8, Int32ub),         # 0x10
    "h_commit_sec" / Int64ub,               # 0x30
    "h_commit_nsec" / Int32ub,              # 0x38
)

revoke_header = Struct(
    "r_header" / journal_header,            # 0x00
    "r_count" / Int32ub,                    # 0x0c: bytes used, this header included
)
# fmt: on

# Descriptor tags, decoded with struct as their layout depends on the features:
# journal_block_tag_t (no checksum, or v2) is t_blocknr, t_checksum (v2's 16 bits),
# t_flags, t_blocknr_high (absent without 64bit); journal_block_tag3_t (v3) is t_blocknr,
# t_flags, t_blocknr_high (ignored without 64bit), t_checksum.
_TAG = struct.Struct(">IHH")
_TAG3 = struct.Struct(">IIII")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

_MASK = 0xFFFFFFFF
_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


class JournalError(Exception):
    """The journal cannot be replayed as it stands (one line, said to the user)."""


def _reflect32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def crc32_be(crc: int, data: bytes) -> int:
    """The kernel's crc32_be: MSB-first CRC32 (polynomial 0x04C11DB7), no inversions.

    Computed through zlib's reflected CRC32 on bit-reversed bytes, which is the same
    polynomial division read the other way round.
    """
    reflected = zlib.crc32(data.translate(_BIT_REVERSED), ~_reflect32(crc) & _MASK)
    return _reflect32(~reflected & _MASK)


@dataclass(frozen=True, slots=True)
class JournalSuper:
    """The journal superblock's meaning: where the log lies and how its blocks read."""

    block_size: int
    maxlen: int  # blocks in the journal, superblock included
    first: int  # first block of the log
    last: int  # one past the last block of the log (the fast-commit area follows)
    sequence: int  # s_sequence: the transaction expected at s_start
    start: int  # s_start: where the log begins; 0 when the journal is empty
    errno: int
    compat: int
    incompat: int
    uuid: bytes
    fc_first: int  # the first fast-commit block; == maxlen when there are none

    def has(self, incompat: int) -> bool:
        """Whether incompat feature bit `incompat` is set."""
        return bool(self.incompat & incompat)

    @property
    def csum_v2or3(self) -> bool:
        return self.has(JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3)

    @property
    def csum_v1(self) -> bool:
        return bool(self.compat & JBD2_FEATURE_COMPAT_CHECKSUM)

    @property
    def tail_size(self) -> int:
        """Bytes a jbd2_journal_block_tail takes at the end of descriptor and revoke blocks."""
        return JBD2_BLOCK_TAIL_SIZE if self.csum_v2or3 else 0

    @property
    def tag_bytes(self) -> int:
        """The size of one descriptor tag, as the kernel's journal_tag_bytes."""
        if self.has(JBD2_FEATURE_INCOMPAT_CSUM_V3):
            return _TAG3.size
        size = 12 + (2 if self.has(JBD2_FEATURE_INCOMPAT_CSUM_V2) else 0)
        return size if self.has(JBD2_FEATURE_INCOMPAT_64BIT) else size - 4

    @property
    def seed(self) -> int:
        """The crc32c seed of every v2/v3 checksum: the journal UUID's crc32c."""
        return crc32c_le(_MASK, self.uuid)

    def wrap(self, block: int) -> int:
        """Log block `block`, folded back to the start of the log past its end."""
        return block - (self.last - self.first) if block >= self.last else block


def decode_superblock(raw: bytes, total_blocks: int) -> JournalSuper:
    """Check the journal superblock `raw` (its first 1024 bytes at least) and decode it.

    Args:
        raw: the journal's block 0.
        total_blocks: blocks the journal inode maps; s_maxlen may not exceed it.
    """
    sb = journal_superblock.parse(raw[:JOURNAL_SUPERBLOCK_SIZE])
    head = sb.s_header
    if head.h_magic != JBD2_MAGIC_NUMBER:
        raise JournalError("the journal superblock has a bad magic number")
    if head.h_blocktype == JBD2_SUPERBLOCK_V1:
        compat = incompat = 0  # version 1 predates the feature words
    elif head.h_blocktype == JBD2_SUPERBLOCK_V2:
        compat, incompat = sb.s_feature_compat, sb.s_feature_incompat
    else:
        raise JournalError(f"unknown journal superblock type {head.h_blocktype}")
    if incompat & ~JBD2_KNOWN_INCOMPAT:
        raise JournalError(f"unknown journal feature(s) 0x{incompat & ~JBD2_KNOWN_INCOMPAT:x}")
    v2, v3 = incompat & JBD2_FEATURE_INCOMPAT_CSUM_V2, incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3
    if v2 and v3:
        raise JournalError("the journal claims checksums v2 and v3 at once")
    if v2 or v3:
        if compat & JBD2_FEATURE_COMPAT_CHECKSUM:
            raise JournalError("the journal claims checksums v1 and v2/v3 at once")
        if sb.s_checksum_type != JBD2_CRC32C_CHKSUM:
            raise JournalError(f"unknown journal checksum type {sb.s_checksum_type}")
        if not superblock_csum_ok(raw):
            raise JournalError("the journal superblock checksum does not match")
    maxlen = sb.s_maxlen
    if not JBD2_MIN_JOURNAL_BLOCKS <= maxlen <= total_blocks:
        raise JournalError(f"journal of {maxlen} blocks in an inode of {total_blocks}")
    last = fc_first = maxlen
    if incompat & JBD2_FEATURE_INCOMPAT_FAST_COMMIT:
        fc_blocks = sb.s_num_fc_blks or JBD2_DEFAULT_FAST_COMMIT_BLOCKS
        if maxlen - fc_blocks >= JBD2_MIN_JOURNAL_BLOCKS:
            last = maxlen - fc_blocks
            fc_first = last + 1
    if not 0 < sb.s_first < last:
        raise JournalError(f"journal log starts at block {sb.s_first} of {last}")
    if sb.s_start and not sb.s_first <= sb.s_start < last:
        raise JournalError(f"journal head at block {sb.s_start}, outside the log")
    return JournalSuper(
        block_size=sb.s_blocksize,
        maxlen=maxlen,
        first=sb.s_first,
        last=last,
        sequence=sb.s_sequence,
        start=sb.s_start,
        errno=sb.s_errno,
        compat=compat,
        incompat=incompat,
        uuid=sb.s_uuid,
        fc_first=fc_first,
    )


def without_fast_commit(raw: bytes) -> bytes:
    """The journal superblock `raw` (1024 bytes) without the FAST_COMMIT feature: a writer
    that logs no fast commits drops it, and its log then runs up to s_maxlen, as the
    kernel's journal_reset does until ext4 turns fast commits on."""
    sb = journal_superblock.parse(raw[:JOURNAL_SUPERBLOCK_SIZE])
    sb.s_feature_incompat &= ~JBD2_FEATURE_INCOMPAT_FAST_COMMIT
    return _sealed_superblock(sb)


def superblock_csum(raw: bytes) -> int:
    """The v2/v3 checksum of the 1024-byte journal superblock in `raw`: crc32c from ~0 over
    it with s_checksum zeroed."""
    return crc32c_le(
        _MASK, raw[:S_CHECKSUM] + bytes(4) + raw[S_CHECKSUM + 4 : JOURNAL_SUPERBLOCK_SIZE]
    )


def superblock_csum_ok(raw: bytes) -> bool:
    """Whether s_checksum matches the 1024-byte journal superblock in `raw`."""
    return superblock_csum(raw) == _BE32.unpack_from(raw, S_CHECKSUM)[0]


def _sealed_superblock(sb: Container) -> bytes:
    """The 1024 bytes of journal superblock `sb`, its v2/v3 checksum (s_checksum) set."""
    if sb.s_header.h_blocktype == JBD2_SUPERBLOCK_V2 and sb.s_feature_incompat & (
        JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3
    ):
        sb.s_checksum = superblock_csum(journal_superblock.build(sb))
    return journal_superblock.build(sb)


def with_log_tail(raw: bytes, sequence: int, start: int) -> bytes:
    """The journal superblock `raw` (1024 bytes) saying the log begins at block `start` with
    transaction `sequence` (the kernel's jbd2_journal_update_sb_log_tail)."""
    sb = journal_superblock.parse(raw[:JOURNAL_SUPERBLOCK_SIZE])
    sb.s_sequence, sb.s_start = sequence & _MASK, start
    return _sealed_superblock(sb)


def mark_empty(raw: bytes, sequence: int, head: int | None = None) -> bytes:
    """The journal superblock `raw` (1024 bytes) once its log is replayed or checkpointed:
    s_start 0, the next transaction `sequence`, and its checksum (v2/v3) updated; `head`,
    when given, is kept in s_head as the kernel's jbd2_mark_journal_empty keeps it."""
    sb = journal_superblock.parse(raw[:JOURNAL_SUPERBLOCK_SIZE])
    sb.s_sequence, sb.s_start = sequence & _MASK, 0
    if head is not None:
        sb.s_head = head
    return _sealed_superblock(sb)


def with_features(raw: bytes, compat: int, incompat: int) -> bytes:
    """The journal superblock `raw` (1024 bytes, version 2) with its checksum features set
    as ext4 sets them when it loads the journal: COMPAT_CHECKSUM, CSUM_V2, CSUM_V3 and
    ASYNC_COMMIT are replaced by those in `compat` and `incompat`; other incompat bits
    (64BIT...) are added. Only an empty journal may change its features."""
    sb = journal_superblock.parse(raw[:JOURNAL_SUPERBLOCK_SIZE])
    if sb.s_header.h_blocktype != JBD2_SUPERBLOCK_V2:
        raise JournalError("a version 1 journal superblock has no features")
    if sb.s_start:
        raise JournalError("the journal needs recovery: its features cannot change")
    sums = (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3
            | JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT)  # fmt: skip
    sb.s_feature_compat = sb.s_feature_compat & ~JBD2_FEATURE_COMPAT_CHECKSUM | compat
    sb.s_feature_incompat = sb.s_feature_incompat & ~sums | incompat
    if incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3):
        sb.s_checksum_type = JBD2_CRC32C_CHKSUM
    return _sealed_superblock(sb)


# --- log blocks -----------------------------------------------------------------------------


class Header(NamedTuple):
    """A log block's journal_header, past its magic."""

    blocktype: int
    sequence: int


def decode_header(block: bytes) -> Header | None:
    """The header of log block `block`; None when it does not open with the jbd2 magic."""
    head = journal_header.parse(block)
    return Header(head.h_blocktype, head.h_sequence) if head.h_magic == JBD2_MAGIC_NUMBER else None


def encode_header(blocktype: int, sequence: int) -> bytes:
    """The journal_header opening a descriptor, commit or revoke block of `sequence`."""
    return journal_header.build(
        {"h_magic": JBD2_MAGIC_NUMBER, "h_blocktype": blocktype, "h_sequence": sequence & _MASK}
    )


def block_tail_csum(block: bytes, seed: int) -> int:
    """The crc32c a jbd2_journal_block_tail holds: over the block with the tail zeroed."""
    return crc32c_le(seed, block[: len(block) - JBD2_BLOCK_TAIL_SIZE] + bytes(JBD2_BLOCK_TAIL_SIZE))


def block_tail_ok(block: bytes, seed: int) -> bool:
    """Whether the jbd2_journal_block_tail of a descriptor or revoke block matches it."""
    return block_tail_csum(block, seed) == _BE32.unpack_from(block, len(block) - 4)[0]


def _sealed(block: bytearray, jsb: JournalSuper) -> bytes:
    """Descriptor or revoke block `block` (a whole log block) with its v2/v3 tail set."""
    if jsb.tail_size:
        _BE32.pack_into(block, len(block) - JBD2_BLOCK_TAIL_SIZE, block_tail_csum(block, jsb.seed))
    return bytes(block)


class Tag(NamedTuple):
    """One descriptor tag: the filesystem block the next log block is a copy of."""

    blocknr: int
    flags: int
    checksum: int  # v2: 16 bits, v3: 32 bits, else 0


def decode_tag(block: bytes, at: int, jsb: JournalSuper) -> Tag:
    """The tag at offset `at` of a descriptor block.

    The flags are the 16 bits at offset 6 in both tag layouts (tag3's t_flags is 32-bit
    big-endian: its low half sits there) and the high block number is at offset 8 in both,
    exactly as the kernel reads them.
    """
    low, csum16, flags = _TAG.unpack_from(block, at)
    high = _BE32.unpack_from(block, at + 8)[0] if jsb.has(JBD2_FEATURE_INCOMPAT_64BIT) else 0
    if jsb.has(JBD2_FEATURE_INCOMPAT_CSUM_V3):
        checksum = _TAG3.unpack_from(block, at)[3]
    else:
        checksum = csum16 if jsb.has(JBD2_FEATURE_INCOMPAT_CSUM_V2) else 0
    return Tag(low | high << 32, flags, checksum)


def encode_tag(tag: Tag, jsb: JournalSuper) -> bytes:
    """The `jsb.tag_bytes` bytes of `tag`, in the layout `decode_tag` reads."""
    low = tag.blocknr & _MASK
    high = tag.blocknr >> 32 if jsb.has(JBD2_FEATURE_INCOMPAT_64BIT) else 0
    if jsb.has(JBD2_FEATURE_INCOMPAT_CSUM_V3):
        return _TAG3.pack(low, tag.flags, high, tag.checksum)
    csum16 = tag.checksum & 0xFFFF if jsb.has(JBD2_FEATURE_INCOMPAT_CSUM_V2) else 0
    raw = _TAG.pack(low, csum16, tag.flags) + _BE32.pack(high)
    return raw[: jsb.tag_bytes].ljust(jsb.tag_bytes, b"\0")  # v2 pads with 2 unused bytes


def decode_tags(block: bytes, jsb: JournalSuper) -> list[Tag]:
    """The tags of descriptor block `block`, up to the LAST_TAG flag or the block's end."""
    tags = []
    tag_bytes, end = jsb.tag_bytes, jsb.block_size - jsb.tail_size
    at = JOURNAL_HEADER_SIZE
    while at + tag_bytes <= end:
        tag = decode_tag(block, at, jsb)
        tags.append(tag)
        at += tag_bytes + (0 if tag.flags & JBD2_FLAG_SAME_UUID else UUID_SIZE)
        if tag.flags & JBD2_FLAG_LAST_TAG:
            break
    return tags


def tags_per_descriptor(jsb: JournalSuper) -> int:
    """How many tags the writer puts in one descriptor block.

    As the kernel's commit: the header, the tags, the journal UUID after the first tag,
    and still 16 bytes of slack before the checksum tail when the block is closed.
    """
    room = jsb.block_size - JOURNAL_HEADER_SIZE - UUID_SIZE - 16 - jsb.tail_size
    return room // jsb.tag_bytes


def encode_descriptor(jsb: JournalSuper, sequence: int, tags: list[Tag]) -> bytes:
    """The descriptor block of transaction `sequence` listing `tags` (at most
    `tags_per_descriptor`): SAME_UUID on all but the first, which the UUID follows, and
    LAST_TAG on the last; the checksum tail set."""
    if not 0 < len(tags) <= tags_per_descriptor(jsb):
        raise ValueError(f"{len(tags)} tags for one descriptor block")
    block = bytearray(jsb.block_size)
    block[:JOURNAL_HEADER_SIZE] = encode_header(JBD2_DESCRIPTOR_BLOCK, sequence)
    at = JOURNAL_HEADER_SIZE
    for n, tag in enumerate(tags):
        flags = tag.flags & ~(JBD2_FLAG_SAME_UUID | JBD2_FLAG_LAST_TAG)
        flags |= (JBD2_FLAG_SAME_UUID if n else 0) | (
            JBD2_FLAG_LAST_TAG if n == len(tags) - 1 else 0
        )
        raw = encode_tag(tag._replace(flags=flags), jsb)
        block[at : at + len(raw)] = raw
        at += len(raw)
        if not n:
            block[at : at + UUID_SIZE] = jsb.uuid
            at += UUID_SIZE
    return _sealed(block, jsb)


def tag_csum(jsb: JournalSuper, data: bytes, sequence: int) -> int:
    """The v2/v3 checksum of log copy `data` in transaction `sequence` (the kernel's
    jbd2_block_tag_csum_set: v2 keeps its low 16 bits); 0 without checksums."""
    if not jsb.csum_v2or3:
        return 0
    calculated = crc32c_le(crc32c_le(jsb.seed, _BE32.pack(sequence & _MASK)), data)
    return calculated if jsb.has(JBD2_FEATURE_INCOMPAT_CSUM_V3) else calculated & 0xFFFF


def tag_csum_ok(jsb: JournalSuper, tag: Tag, data: bytes, sequence: int) -> bool:
    """Whether the log copy `data` matches its tag's v2/v3 checksum (True without one)."""
    return not jsb.csum_v2or3 or tag.checksum == tag_csum(jsb, data, sequence)


def commit_csum(block: bytes, seed: int) -> int:
    """The v2/v3 checksum of a commit block: crc32c of it with h_chksum[0] zeroed."""
    return crc32c_le(seed, block[:H_CHKSUM] + bytes(4) + block[H_CHKSUM + 4 :])


def commit_csum_ok(block: bytes, seed: int) -> bool:
    """Whether a commit block's h_chksum[0] holds its v2/v3 checksum."""
    return commit_csum(block, seed) == _BE32.unpack_from(block, H_CHKSUM)[0]


def commit_v1_ok(block: bytes, crc32_sum: int) -> bool:
    """Whether a commit block agrees with the v1 CRC32 of its transaction, or has none."""
    commit = commit_header.parse(block)
    found = commit.h_chksum[0]
    if commit.h_chksum_type == JBD2_CRC32_CHKSUM and commit.h_chksum_size == JBD2_CRC32_CHKSUM_SIZE:
        return found == crc32_sum
    return commit.h_chksum_type == commit.h_chksum_size == found == 0


def commit_time(block: bytes) -> int:
    """h_commit_sec of a commit block."""
    return commit_header.parse(block).h_commit_sec


def encode_commit(jsb: JournalSuper, sequence: int, sec: int, nsec: int, crc32_sum: int) -> bytes:
    """The commit block of transaction `sequence`, committed at `sec`.`nsec`.

    With checksum v1 it carries `crc32_sum`, the CRC32 (`crc32_be` from ~0) of the
    transaction's descriptor blocks and log copies in log order; with v2/v3 its own crc32c.
    """
    v1 = jsb.csum_v1 and not jsb.csum_v2or3
    head = commit_header.build(
        {
            "h_header": journal_header.parse(encode_header(JBD2_COMMIT_BLOCK, sequence)),
            "h_chksum_type": JBD2_CRC32_CHKSUM if v1 else 0,
            "h_chksum_size": JBD2_CRC32_CHKSUM_SIZE if v1 else 0,
            "h_padding": bytes(2),
            "h_chksum": [crc32_sum if v1 else 0] + [0] * 7,
            "h_commit_sec": sec,
            "h_commit_nsec": nsec,
        }
    )
    block = bytearray(head.ljust(jsb.block_size, b"\0"))
    if jsb.csum_v2or3:
        _BE32.pack_into(block, H_CHKSUM, commit_csum(block, jsb.seed))
    return bytes(block)


def _revoke_record(jsb: JournalSuper) -> struct.Struct:
    return _BE64 if jsb.has(JBD2_FEATURE_INCOMPAT_64BIT) else _BE32


def revoke_records(block: bytes, jsb: JournalSuper) -> list[int]:
    """The block numbers a revoke block lists."""
    count = revoke_header.parse(block).r_count
    if count > jsb.block_size - jsb.tail_size:
        raise JournalError(f"revoke block of {count} bytes")
    record = _revoke_record(jsb)
    first = revoke_header.sizeof()
    usable = first + max(count - first, 0) // record.size * record.size
    return [value for (value,) in record.iter_unpack(block[first:usable])]


def revokes_per_block(jsb: JournalSuper) -> int:
    """How many records one revoke block holds (the kernel's journal_revoke_records_per_block)."""
    room = jsb.block_size - revoke_header.sizeof() - jsb.tail_size
    return room // _revoke_record(jsb).size


def encode_revoke(jsb: JournalSuper, sequence: int, blocks: list[int]) -> bytes:
    """The revoke block of transaction `sequence` listing `blocks` (at most
    `revokes_per_block`), r_count and the checksum tail set."""
    if not 0 < len(blocks) <= revokes_per_block(jsb):
        raise ValueError(f"{len(blocks)} records for one revoke block")
    record = _revoke_record(jsb)
    records = b"".join(record.pack(block) for block in blocks)
    count = revoke_header.sizeof() + len(records)
    head = revoke_header.build(
        {"r_header": journal_header.parse(encode_header(JBD2_REVOKE_BLOCK, sequence)),
         "r_count": count}
    )  # fmt: skip
    return _sealed(bytearray((head + records).ljust(jsb.block_size, b"\0")), jsb)


def escape(data: bytes) -> tuple[bytes, int]:
    """A filesystem block as its log copy, and the tag flags saying how: a block opening
    with the jbd2 magic would read as a log record, so its first 4 bytes are zeroed and
    the tag marked ESCAPE (the kernel's jbd2_journal_write_metadata_buffer)."""
    if _BE32.unpack_from(data)[0] == JBD2_MAGIC_NUMBER:
        return bytes(4) + data[4:], JBD2_FLAG_ESCAPE
    return data, 0


def unescape(data: bytes, flags: int) -> bytes:
    """A log copy as the filesystem block it stands for: ESCAPE puts the magic back."""
    if flags & JBD2_FLAG_ESCAPE:
        return _BE32.pack(JBD2_MAGIC_NUMBER) + data[4:]
    return data


# --- fast commits ---------------------------------------------------------------------------

EXT4_FC_TAG_HEAD = 0x0009  # ext4_fc_tl.fc_tag of the record opening a fast commit area


def fast_commit_tid(block: bytes) -> int | None:
    """The transaction a fast-commit area belongs to (its HEAD record's fc_tid), or None.

    ext4 replays the area only when that is the transaction after the last full commit.
    """
    tag, length = struct.unpack_from("<HH", block)
    if tag != EXT4_FC_TAG_HEAD or length < 8:
        return None
    return struct.unpack_from("<I", block, 8)[0]
