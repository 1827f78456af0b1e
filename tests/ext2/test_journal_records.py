"""jbd2 records and the recovery passes on hand-built journals: layouts, checksums, ends.

Logs here are built byte by byte after the kernel's include/linux/jbd2.h; the same code
replays journals written by debugfs and the kernel in test_journal.py.
"""

from __future__ import annotations

import struct

import pytest
import trio

from uvfs_fs.ext2 import jbd2
from uvfs_fs.ext2.csum import crc32c_le
from uvfs_fs.ext2.jbd2 import (
    JBD2_COMMIT_BLOCK,
    JBD2_DESCRIPTOR_BLOCK,
    JBD2_FEATURE_COMPAT_CHECKSUM,
    JBD2_FEATURE_INCOMPAT_64BIT,
    JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT,
    JBD2_FEATURE_INCOMPAT_CSUM_V2,
    JBD2_FEATURE_INCOMPAT_CSUM_V3,
    JBD2_FEATURE_INCOMPAT_FAST_COMMIT,
    JBD2_FLAG_ESCAPE,
    JBD2_FLAG_LAST_TAG,
    JBD2_FLAG_SAME_UUID,
    JBD2_MAGIC_NUMBER,
    JBD2_REVOKE_BLOCK,
    JournalError,
    JournalSuper,
    crc32_be,
    decode_superblock,
    decode_tags,
    revoke_records,
)
from uvfs_fs.ext2.recovery import Recovery, recover, tid_gt

BS = 1024
MAXLEN = 1024
UUID = bytes(range(16))
V2, V3 = JBD2_FEATURE_INCOMPAT_CSUM_V2, JBD2_FEATURE_INCOMPAT_CSUM_V3
WIDE = JBD2_FEATURE_INCOMPAT_64BIT


def test_superblock_offsets() -> None:
    """Every field where include/linux/jbd2.h puts it, 1024 bytes in all."""
    offsets, at = {}, 0
    for sub in jbd2.journal_superblock.subcons:
        offsets[sub.name] = at
        at += sub.sizeof()
    assert at == 1024
    assert {k: offsets[k] for k in ("s_blocksize", "s_start", "s_feature_compat", "s_uuid")} == {
        "s_blocksize": 0x0C,
        "s_start": 0x1C,
        "s_feature_compat": 0x24,
        "s_uuid": 0x30,
    }
    assert (offsets["s_checksum_type"], offsets["s_num_fc_blks"], offsets["s_checksum"]) == (
        0x50,
        0x54,
        0xFC,
    )
    assert (offsets["s_users"], jbd2.commit_header.sizeof()) == (0x100, 0x3C)


def test_crc32_be_is_the_kernels() -> None:
    """The MSB-first CRC32 of checksum v1, against a bit-by-bit reference."""

    def reference(crc: int, data: bytes) -> int:
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = (crc << 1 ^ (0x04C11DB7 if crc & 0x80000000 else 0)) & 0xFFFFFFFF
        return crc

    for data in (b"", b"a", bytes(range(256)) * 3):
        for seed in (0, 0xFFFFFFFF, 0x1234567):
            assert crc32_be(seed, data) == reference(seed, data)


# --- building journals ----------------------------------------------------------------------


def superblock(
    *, start: int = 1, sequence: int = 7, compat: int = 0, incompat: int = 0, fc: int = 0
) -> bytes:
    sb = bytearray(BS)
    struct.pack_into(">IIIIIIII", sb, 0, JBD2_MAGIC_NUMBER, 4, 0, BS, MAXLEN, 1, sequence, start)
    struct.pack_into(">III", sb, 0x24, compat, incompat, 0)
    sb[0x30:0x40] = UUID
    sb[0x50] = jbd2.JBD2_CRC32C_CHKSUM if incompat & (V2 | V3) else 0
    struct.pack_into(">I", sb, 0x54, fc)
    struct.pack_into(
        ">I", sb, 0xFC, crc32c_le(0xFFFFFFFF, bytes(sb[:0xFC]) + bytes(4) + sb[0x100:])
    )
    return bytes(sb)


def jsb(**kwargs: int) -> JournalSuper:
    return decode_superblock(superblock(**kwargs), MAXLEN)


def header(kind: int, sequence: int) -> bytes:
    return struct.pack(">III", JBD2_MAGIC_NUMBER, kind, sequence)


def seal(block: bytearray, j: JournalSuper) -> bytes:
    """Add the descriptor/revoke tail checksum when the journal has one."""
    if j.tail_size:
        struct.pack_into(">I", block, BS - 4, crc32c_le(j.seed, bytes(block[:-4]) + bytes(4)))
    return bytes(block)


def descriptor(j: JournalSuper, sequence: int, copies: list[tuple[int, bytes, int]]) -> bytes:
    """A descriptor of (block, copy as logged, flags) entries; the first carries a UUID."""
    block = bytearray(header(JBD2_DESCRIPTOR_BLOCK, sequence).ljust(BS, b"\0"))
    at = 12
    for n, (blocknr, data, flags) in enumerate(copies):
        flags |= (JBD2_FLAG_SAME_UUID if n else 0) | (
            JBD2_FLAG_LAST_TAG if n == len(copies) - 1 else 0
        )
        csum = crc32c_le(crc32c_le(j.seed, struct.pack(">I", sequence)), data)
        if j.has(V3):
            tag = struct.pack(">IIII", blocknr & 0xFFFFFFFF, flags, blocknr >> 32, csum)
        else:
            tag = struct.pack(
                ">IHH", blocknr & 0xFFFFFFFF, csum & 0xFFFF if j.has(V2) else 0, flags
            )
            tag += struct.pack(">I", blocknr >> 32) if j.has(WIDE) else b""
        block[at : at + len(tag)] = tag
        at += j.tag_bytes + (0 if n else 16)
    return seal(block, j)


def commit(j: JournalSuper, sequence: int, when: int = 100, v1: int | None = None) -> bytes:
    block = bytearray(header(JBD2_COMMIT_BLOCK, sequence).ljust(BS, b"\0"))
    struct.pack_into(">Q", block, 0x30, when)
    if v1 is not None:
        block[0x0C], block[0x0D] = jbd2.JBD2_CRC32_CHKSUM, jbd2.JBD2_CRC32_CHKSUM_SIZE
        struct.pack_into(">I", block, 0x10, v1)
    elif j.csum_v2or3:
        struct.pack_into(">I", block, 0x10, crc32c_le(j.seed, bytes(block)))
    return bytes(block)


def revoke(j: JournalSuper, sequence: int, blocks: list[int]) -> bytes:
    record = ">Q" if j.has(WIDE) else ">I"
    body = b"".join(struct.pack(record, b) for b in blocks)
    block = bytearray(
        (header(JBD2_REVOKE_BLOCK, sequence) + struct.pack(">I", 16 + len(body)) + body).ljust(
            BS, b"\0"
        )
    )
    return seal(block, j)


def data(text: bytes) -> bytes:
    return (text * BS)[:BS]


class Log:
    """A journal of MAXLEN blocks in memory, filled from `start` on (wrapping)."""

    def __init__(self, j: JournalSuper) -> None:
        self.j = j
        self.blocks: dict[int, bytes] = {}
        self.at = j.start

    def put(self, *blocks: bytes) -> None:
        for block in blocks:
            self.blocks[self.at] = block
            self.at = self.j.wrap(self.at + 1)

    def transaction(self, sequence: int, copies: dict[int, bytes], committed: bool = True) -> None:
        self.put(
            descriptor(self.j, sequence, [(b, d, 0) for b, d in copies.items()]), *copies.values()
        )
        if committed:
            self.put(commit(self.j, sequence))

    async def read(self, block: int) -> bytes:
        assert 0 <= block < self.j.maxlen
        return self.blocks.get(block, bytes(BS))

    def replay(self) -> Recovery:
        return trio.run(recover, self.j, self.read)

    def replayed(self) -> dict[int, bytes]:
        """Block -> content after replay, ESCAPE undone."""
        return {
            b: jbd2.unescape(self.blocks[at], flags)
            for b, (at, flags) in self.replay().blocks.items()
        }


# --- records --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("incompat", "size"),
    [(0, 8), (V2, 10), (WIDE, 12), (WIDE | V2, 14), (V3, 16), (WIDE | V3, 16)],
)
def test_tag_layouts(incompat: int, size: int) -> None:
    """Every tag size of journal_tag_bytes, the UUID after the first tag, flags, 64-bit numbers."""
    j = jsb(incompat=incompat)
    assert j.tag_bytes == size
    high = 5 << 32 if incompat & WIDE else 0
    copies = [
        (10 + high, data(b"a"), JBD2_FLAG_ESCAPE),
        (11, data(b"b"), 0),
        (12 + high, data(b"c"), 0),
    ]
    tags = decode_tags(descriptor(j, 3, copies), j)
    assert [(t.blocknr, t.flags) for t in tags] == [
        (10 + high, JBD2_FLAG_ESCAPE),
        (11, JBD2_FLAG_SAME_UUID),
        (12 + high, JBD2_FLAG_SAME_UUID | JBD2_FLAG_LAST_TAG),
    ]
    for tag, (_, copy, _) in zip(tags, copies, strict=True):
        assert jbd2.tag_csum_ok(j, tag, copy, 3)
        assert jbd2.tag_csum_ok(j, tag, data(b"z"), 3) == (not j.csum_v2or3)


def test_tags_stop_at_the_tail() -> None:
    """Without LAST_TAG, tags end where the next would overlap the checksum tail."""
    j = jsb(incompat=V3)
    block = bytearray(header(JBD2_DESCRIPTOR_BLOCK, 1).ljust(BS, b"\0"))
    for at in range(12, BS - 4 - 15, 16):
        struct.pack_into(">IIII", block, at, at, JBD2_FLAG_SAME_UUID, 0, 0)
    assert len(decode_tags(bytes(block), j)) == (BS - 4 - 12) // 16


def test_revoke_records() -> None:
    narrow, wide = jsb(), jsb(incompat=WIDE)
    assert revoke_records(revoke(narrow, 1, [5, 6, 7]), narrow) == [5, 6, 7]
    assert revoke_records(revoke(wide, 1, [5, 1 << 40]), wide) == [5, 1 << 40]
    bad = bytearray(revoke(narrow, 1, [5]))
    struct.pack_into(">I", bad, 12, BS + 1)
    with pytest.raises(JournalError, match="revoke block of 1025 bytes"):
        revoke_records(bytes(bad), narrow)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({0: b"\0\0\0\0"}, "the journal superblock has a bad magic number"),
        ({0x28: struct.pack(">I", 0x40)}, r"unknown journal feature\(s\) 0x40"),
        ({0x28: struct.pack(">I", V2 | V3)}, "the journal claims checksums v2 and v3 at once"),
        ({0x10: struct.pack(">I", MAXLEN + 1)}, "journal of 1025 blocks in an inode of 1024"),
        ({0x1C: struct.pack(">I", MAXLEN)}, "journal head at block 1024, outside the log"),
    ],
)
def test_superblock_refusals(change: dict[int, bytes], message: str) -> None:
    raw = bytearray(superblock())
    for at, value in change.items():
        raw[at : at + len(value)] = value
    with pytest.raises(JournalError, match=f"^{message}$"):
        decode_superblock(bytes(raw), MAXLEN)


def test_superblock_checksum() -> None:
    raw = bytearray(superblock(incompat=V3))
    assert decode_superblock(bytes(raw), MAXLEN).seed == crc32c_le(0xFFFFFFFF, UUID)
    raw[0x40] ^= 1  # s_nr_users, covered by the checksum
    with pytest.raises(JournalError, match="checksum does not match"):
        decode_superblock(bytes(raw), MAXLEN)


def test_fast_commit_area() -> None:
    """The fast-commit blocks (s_num_fc_blks, 256 when 0) are cut from the end of the log."""
    j = decode_superblock(superblock(incompat=JBD2_FEATURE_INCOMPAT_FAST_COMMIT, fc=0), 4096)
    assert (j.last, j.fc_first) == (MAXLEN, MAXLEN)  # too small a journal to spare 256
    raw = bytearray(superblock(incompat=JBD2_FEATURE_INCOMPAT_FAST_COMMIT, fc=16))
    struct.pack_into(">I", raw, 0x10, 2048)
    j = decode_superblock(bytes(raw), 2048)
    assert (j.last, j.fc_first) == (2032, 2033)


# --- recovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("incompat", [0, V2, WIDE | V3], ids=["none", "v2", "v3-64bit"])
def test_replay_with_revokes_and_escapes(incompat: int) -> None:
    """A revoke hides copies from its own and earlier transactions, not later ones; the
    newest copy wins; ESCAPE puts the magic back; an uncommitted transaction is dropped."""
    j = jsb(incompat=incompat)
    log = Log(j)
    escaped = data(b"E")
    log.put(
        descriptor(j, 7, [(100, data(b"1"), 0), (101, bytes(4) + escaped[4:], JBD2_FLAG_ESCAPE)]),
        data(b"1"),
        bytes(4) + escaped[4:],
        commit(j, 7),
    )
    log.transaction(8, {102: data(b"2"), 100: data(b"3")})
    log.put(revoke(j, 9, [100, 103]), commit(j, 9))
    log.transaction(10, {103: data(b"4")})
    log.transaction(11, {104: data(b"5")}, committed=False)
    got = log.replayed()
    assert got == {
        101: struct.pack(">I", JBD2_MAGIC_NUMBER) + escaped[4:],
        102: data(b"2"),
        103: data(b"4"),
    }
    result = log.replay()
    assert (result.start_transaction, result.end_transaction, result.revoke_hits) == (7, 11, 2)


def test_empty_journal_replays_nothing() -> None:
    assert Log(jsb(start=0)).replay() == Recovery(7, 7)


def test_log_wraps_around() -> None:
    """A transaction crossing the end of the log goes on at s_first."""
    j = jsb(start=MAXLEN - 2)
    log = Log(j)
    log.transaction(7, {50: data(b"w"), 51: data(b"x")})
    assert log.at == 3 and log.replayed() == {50: data(b"w"), 51: data(b"x")}


def test_transaction_ids_wrap() -> None:
    assert tid_gt(0, 0xFFFFFFFF) and not tid_gt(0xFFFFFFFF, 0)
    j = jsb(sequence=0xFFFFFFFF)
    log = Log(j)
    log.transaction(0xFFFFFFFF, {60: data(b"a")})
    log.transaction(0, {61: data(b"b")})
    log.put(revoke(j, 1, [60]), commit(j, 1))
    assert log.replayed() == {61: data(b"b")}


def test_a_log_that_never_ends_is_walked_once() -> None:
    """Descriptor after descriptor of one transaction, all around the log: no endless walk."""
    j = jsb()
    log = Log(j)
    for _ in range(MAXLEN - 1):
        log.put(header(JBD2_DESCRIPTOR_BLOCK, 7).ljust(BS, b"\0"))
    assert log.replay().blocks == {}


@pytest.mark.parametrize("async_commit", [False, True])
def test_bad_commit_checksum_ends_replay(async_commit: bool) -> None:
    j = jsb(incompat=V3 | (JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT if async_commit else 0))
    log = Log(j)
    log.transaction(7, {1: data(b"a")})
    log.put(descriptor(j, 8, [(2, data(b"b"), 0)]), data(b"b"))
    bad = bytearray(commit(j, 8))
    bad[0x10] ^= 1
    log.put(bytes(bad))
    log.transaction(9, {3: data(b"c")})
    result = log.replay()
    assert (sorted(result.blocks), result.end_transaction, result.failed_commit) == ([1], 8, 8)


def test_checksum_v1() -> None:
    """compat CHECKSUM: the commit block holds the CRC32 of the descriptor and copies."""
    j = jsb(compat=JBD2_FEATURE_COMPAT_CHECKSUM)
    log = Log(j)
    for sequence, block, good in ((7, 1, True), (8, 2, True), (9, 3, False)):
        desc = descriptor(j, sequence, [(block, data(b"%d" % block), 0)])
        crc = crc32_be(crc32_be(0xFFFFFFFF, desc), data(b"%d" % block))
        log.put(desc, data(b"%d" % block), commit(j, sequence, v1=crc if good else crc ^ 1))
    result = log.replay()
    assert (sorted(result.blocks), result.end_transaction) == ([1, 2], 9)


def test_stale_descriptor_ends_replay_quietly() -> None:
    """A descriptor failing its checksum followed by an older commit is left over from an
    earlier use of the log: replay ends there, as the kernel decides."""
    j = jsb(incompat=V3)
    log = Log(j)
    log.put(descriptor(j, 7, [(1, data(b"a"), 0)]), data(b"a"), commit(j, 7, when=200))
    stale = bytearray(descriptor(j, 8, [(2, data(b"b"), 0)]))
    stale[100] ^= 1
    log.put(bytes(stale), data(b"b"), commit(j, 8, when=100))
    assert (sorted(log.replay().blocks), log.replay().failed_commit) == ([1], None)
    log.blocks[log.at - 1] = commit(j, 8, when=300)  # not older: the journal is corrupt
    with pytest.raises(JournalError, match="transaction 8: descriptor block checksum"):
        log.replay()


def test_bad_copy_checksum_is_refused() -> None:
    j = jsb(incompat=V2)
    log = Log(j)
    log.put(descriptor(j, 7, [(1, data(b"a"), 0)]), data(b"x"), commit(j, 7))
    with pytest.raises(JournalError, match=r"copies of block\(s\) 1 fail their checksums"):
        log.replay()


def test_fast_commits_in_use_are_refused() -> None:
    raw = bytearray(superblock(incompat=JBD2_FEATURE_INCOMPAT_FAST_COMMIT, fc=16))
    struct.pack_into(">I", raw, 0x10, 2048)
    j = decode_superblock(bytes(raw), 2048)
    log = Log(j)
    log.transaction(7, {1: data(b"a")})
    head = struct.pack("<HHII", jbd2.EXT4_FC_TAG_HEAD, 8, 0, 8).ljust(BS, b"\0")
    log.blocks[j.fc_first] = head
    with pytest.raises(JournalError, match=r"ext4 fast commits \(transaction 8\)"):
        log.replay()
    log.blocks[j.fc_first] = struct.pack("<HHII", jbd2.EXT4_FC_TAG_HEAD, 8, 0, 5).ljust(BS, b"\0")
    assert sorted(log.replay().blocks) == [1]  # an old area, not in use
