"""The jbd2 writer without I/O: record encoders, transactions, log layout, checkpoints.

The encoders are checked byte for byte against the journals test_journal_records.py builds
by hand after include/linux/jbd2.h; the plans of transaction.py against recovery.py run
over a log kept in memory. test_journal_write.py checks the same writer against the kernel,
e2fsck and debugfs on real images.
"""

from __future__ import annotations

import pytest

from uvfs_fs.ext2 import jbd2
from uvfs_fs.ext2.jbd2 import (
    JBD2_FEATURE_COMPAT_CHECKSUM,
    JBD2_FEATURE_INCOMPAT_FAST_COMMIT,
    JBD2_FLAG_ESCAPE,
    JBD2_MAGIC_NUMBER,
    JournalError,
    JournalSuper,
    Tag,
    decode_superblock,
)
from uvfs_fs.ext2.recovery import Recovery, recover
from uvfs_fs.ext2.transaction import Commit, Journal

from .test_journal_records import (
    BS,
    MAXLEN,
    V2,
    V3,
    WIDE,
    commit,
    data,
    descriptor,
    revoke,
    seal,
    superblock,
)

FEATURES = {
    "none": (0, 0),
    "64bit": (0, WIDE),
    "v1": (JBD2_FEATURE_COMPAT_CHECKSUM, 0),
    "v2": (0, V2),
    "v2-64bit": (0, V2 | WIDE),
    "v3": (0, V3),
    "v3-64bit": (0, V3 | WIDE),
}
FEATURE_IDS = list(FEATURES)


def empty_journal(compat: int = 0, incompat: int = 0, sequence: int = 7) -> Journal:
    return Journal(superblock(start=0, sequence=sequence, compat=compat, incompat=incompat), MAXLEN)


@pytest.fixture(params=FEATURE_IDS)
def j(request: pytest.FixtureRequest) -> JournalSuper:
    compat, incompat = FEATURES[request.param]
    return decode_superblock(superblock(compat=compat, incompat=incompat), MAXLEN)


# --- records --------------------------------------------------------------------------------


def test_descriptor_is_the_hand_built_one(j: JournalSuper) -> None:
    """Tags (UUID after the first, SAME_UUID, LAST_TAG, ESCAPE, 64-bit numbers, v2/v3
    checksums of the copies) and the tail, as jbd2.h lays them out."""
    copies = [(5, data(b"a"), 0), ((7 << 32) + 9 if j.has(WIDE) else 9, data(b"b"), 1)]
    copies.append((11, bytes(4) + data(b"c")[4:], JBD2_FLAG_ESCAPE))
    tags = [Tag(b, flags, jbd2.tag_csum(j, copy, 3)) for b, copy, flags in copies]
    encoded = jbd2.encode_descriptor(j, 3, tags)
    expected = bytearray(descriptor(j, 3, copies))  # built without the UUID: add it
    at = jbd2.JOURNAL_HEADER_SIZE + j.tag_bytes
    expected[at : at + 16] = j.uuid
    assert encoded == seal(expected, j)
    assert [(t.blocknr, t.flags & JBD2_FLAG_ESCAPE) for t in jbd2.decode_tags(encoded, j)] == [
        (b, flags & JBD2_FLAG_ESCAPE) for b, _, flags in copies
    ]


def test_a_full_descriptor_keeps_the_kernels_slack(j: JournalSuper) -> None:
    """As commit.c closes a descriptor: after the last tag, room for one more tag, a UUID
    and the tail would remain only if it were not full; a full one still decodes whole."""
    n = jbd2.tags_per_descriptor(j)
    used = jbd2.JOURNAL_HEADER_SIZE + jbd2.UUID_SIZE + n * j.tag_bytes
    assert used + 16 + j.tail_size <= BS < used + j.tag_bytes + 16 + j.tail_size
    tags = [Tag(b, 0, jbd2.tag_csum(j, data(b"x"), 1)) for b in range(100, 100 + n)]
    assert [t.blocknr for t in jbd2.decode_tags(jbd2.encode_descriptor(j, 1, tags), j)] == list(
        range(100, 100 + n)
    )
    with pytest.raises(ValueError):
        jbd2.encode_descriptor(j, 1, [*tags, Tag(1, 0, 0)])


def test_commit_is_the_hand_built_one(j: JournalSuper) -> None:
    """h_commit_sec/nsec, v1's CRC32 with its type and size, v2/v3's crc32c."""
    encoded = jbd2.encode_commit(j, 4, 100, 0, 0x12345678)
    assert encoded == commit(j, 4, when=100, v1=0x12345678 if j.csum_v1 else None)
    stamped = jbd2.commit_header.parse(jbd2.encode_commit(j, 4, 1_700_000_000, 999, 0))
    assert (stamped.h_commit_sec, stamped.h_commit_nsec) == (1_700_000_000, 999)


def test_revoke_is_the_hand_built_one(j: JournalSuper) -> None:
    """r_count, 4- or 8-byte records, the tail; a full block holds revokes_per_block."""
    blocks = [3, (1 << 33) + 1 if j.has(WIDE) else 4]
    assert jbd2.encode_revoke(j, 2, blocks) == revoke(j, 2, blocks)
    n = jbd2.revokes_per_block(j)
    assert n == (BS - 16 - j.tail_size) // (8 if j.has(WIDE) else 4)
    full = list(range(10, 10 + n))
    assert jbd2.revoke_records(jbd2.encode_revoke(j, 2, full), j) == full


def test_escape_round_trips() -> None:
    """A block opening with the magic is logged with zeros there and flagged ESCAPE."""
    block = JBD2_MAGIC_NUMBER.to_bytes(4, "big") + data(b"m")[4:]
    copy, flags = jbd2.escape(block)
    assert (copy[:4], flags, jbd2.unescape(copy, flags)) == (bytes(4), JBD2_FLAG_ESCAPE, block)
    assert jbd2.escape(data(b"n")) == (data(b"n"), 0)


@pytest.mark.parametrize("incompat", [0, V2, V3 | WIDE])
def test_superblock_updates_keep_it_valid(incompat: int) -> None:
    """with_log_tail, mark_empty (s_head kept), with_features and without_fast_commit
    change their fields only and reseal the v2/v3 checksum."""
    raw = superblock(start=0, sequence=5, incompat=incompat)
    tail = decode_superblock(jbd2.with_log_tail(raw, 9, 40), MAXLEN)
    assert (tail.sequence, tail.start, tail.incompat) == (9, 40, incompat)
    empty = jbd2.mark_empty(jbd2.with_log_tail(raw, 9, 40), 12, 77)
    assert (
        decode_superblock(empty, MAXLEN).start,
        jbd2.journal_superblock.parse(empty).s_head,
    ) == (
        0,
        77,
    )
    featured = decode_superblock(jbd2.with_features(raw, 0, V3 | WIDE), MAXLEN)
    assert (featured.compat, featured.incompat, featured.csum_v2or3) == (0, V3 | WIDE, True)
    v1 = decode_superblock(jbd2.with_features(raw, JBD2_FEATURE_COMPAT_CHECKSUM, 0), MAXLEN)
    assert (v1.compat, v1.incompat & (V2 | V3)) == (JBD2_FEATURE_COMPAT_CHECKSUM, 0)
    fast = jbd2.with_features(raw, 0, incompat | JBD2_FEATURE_INCOMPAT_FAST_COMMIT)
    assert decode_superblock(jbd2.without_fast_commit(fast), MAXLEN).incompat == incompat
    with pytest.raises(JournalError):
        jbd2.with_features(jbd2.with_log_tail(raw, 9, 40), 0, V3)


# --- transactions and the log ---------------------------------------------------------------


class Disk:
    """A journal kept in memory: plans carried out, then recovery.py reads it back."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.log: dict[int, bytes] = {0: journal.superblock}
        self.home: dict[int, bytes] = {}

    def carry_out(self, plan: Commit, *, committed: bool = True) -> None:
        if plan.checkpoint:
            self.home.update(plan.checkpoint.home)
            self.log[0] = plan.checkpoint.superblock
        for at, block in plan.log:
            self.log[at] = block
        if committed:
            self.log[plan.commit[0]] = plan.commit[1]

    async def replay(self) -> tuple[Recovery, dict[int, bytes]]:
        async def read(block: int) -> bytes:
            return self.log.get(block, bytes(BS))

        jsb = decode_superblock(self.log[0], MAXLEN)
        recovery = await recover(jsb, read)
        replayed = {b: jbd2.unescape(self.log[at], f) for b, (at, f) in recovery.blocks.items()}
        return recovery, replayed


@pytest.mark.parametrize("features", FEATURE_IDS)
async def test_committed_transactions_replay(features: str) -> None:
    """Three transactions: a later copy wins, a revoke hides an earlier copy, an escaped
    block comes back, an uncommitted transaction is left out; the first commit points the
    journal superblock at itself (s_sequence = the loaded one + 1, as the kernel starts)."""
    disk = Disk(empty_journal(*FEATURES[features]))
    journal = disk.journal
    magic = JBD2_MAGIC_NUMBER.to_bytes(4, "big") + data(b"e")[4:]
    t1 = journal.begin()
    t1.write(10, data(b"1"))
    t1.write(11, data(b"r"))
    t1.write(12, magic)
    plan = journal.commit(t1, 100, 0)
    assert (t1.tid, [at for at, _ in plan.log], plan.commit[0]) == (8, [0, 1, 2, 3, 4], 5)
    disk.carry_out(plan)
    t2 = journal.begin()
    t2.write(10, data(b"2"))
    t2.revoke(11)
    disk.carry_out(journal.commit(t2, 101, 0))
    assert [at for at, _ in journal.commit(journal.begin(), 102, 0).log] == []  # no block 0 now
    t4 = journal.begin()
    t4.write(10, data(b"4"))
    disk.carry_out(journal.commit(t4, 103, 0), committed=False)
    recovery, replayed = await disk.replay()
    assert replayed == {10: data(b"2"), 12: magic}
    assert (recovery.start_transaction, recovery.end_transaction, recovery.revoke_hits) == (
        8,
        10,
        1,
    )


def test_write_and_revoke_cancel_each_other() -> None:
    """In one transaction the last word on a block counts: a write cancels its revoke, a
    revoke drops its copy."""
    journal = empty_journal()
    txn = journal.begin()
    txn.write(1, data(b"a"))
    txn.revoke(1)
    txn.revoke(2)
    txn.write(2, data(b"b"))
    assert (txn.blocks, txn.revoked) == ({2: data(b"b")}, {1})
    assert txn.log_blocks(journal.jsb) == 1 + 1 + 1 + 1  # revoke, descriptor, copy, commit


def commit_t1_and_t2(journal: Journal) -> None:
    """T1 writes blocks 1, 2 and 3 (b"1"); T2 rewrites block 2 (b"2") and revokes block 3."""
    t1 = journal.begin()
    for block in (1, 2, 3):
        t1.write(block, data(b"1"))
    journal.commit(t1, 1, 0)
    t2 = journal.begin()
    t2.write(2, data(b"2"))
    t2.revoke(3)
    journal.commit(t2, 2, 0)


def test_a_checkpoint_writes_only_the_last_word() -> None:
    """Checkpointing T1 and T2 writes T1's block 1, T2's block 2 and never block 3, which
    T2 revoked; then the journal is empty, the next transaction id in s_sequence."""
    journal = empty_journal(incompat=V3)
    commit_t1_and_t2(journal)
    done = journal.checkpoint()
    assert done is not None
    assert (done.home, done.transactions) == ([(1, data(b"1")), (2, data(b"2"))], [8, 9])
    after = decode_superblock(done.superblock, MAXLEN)
    assert (after.start, after.sequence, journal.free, journal.checkpoint()) == (
        0,
        10,
        MAXLEN - 1,
        None,
    )
    t3 = journal.begin()
    t3.write(5, data(b"3"))
    plan = journal.commit(t3, 3, 0)  # the journal was empty: block 0 points at it again
    start = decode_superblock(plan.log[0][1], MAXLEN)
    assert (plan.log[0][0], start.start, start.sequence) == (0, journal.head - 3, 10)


async def test_a_full_log_checkpoints_the_oldest_and_wraps() -> None:
    """Transactions of 300 blocks in a 1023-block log: the fourth commit first checkpoints
    T1 only (s_start moves to T2), its 306 blocks wrap from 1023 to 1; replay of what is left
    in the log, over what went home, gives every block's newest contents."""
    disk = Disk(empty_journal(incompat=V3 | WIDE))
    journal, newest = disk.journal, {}
    plans = []
    for n in range(5):
        txn = journal.begin()
        for k in range(300):
            txn.write(1000 + (n * 100 + k) % 700, data(bytes([65 + n])))
        newest.update(txn.blocks)
        plans.append(journal.commit(txn, n, 0))
        disk.carry_out(plans[-1])
    assert [p.checkpoint.transactions if p.checkpoint else [] for p in plans] == [
        [], [], [], [8], [9],
    ]  # fmt: skip
    positions = [at for at, _ in plans[3].log] + [plans[3].commit[0]]
    assert (positions[0], max(positions), min(positions)) == (919, 1023, 1)
    jsb = decode_superblock(disk.log[0], MAXLEN)
    assert (jsb.start, jsb.sequence) == (plans[2].log[0][0], 10)
    _, replayed = await disk.replay()
    assert {**disk.home, **replayed} == newest


def test_refusals() -> None:
    """A journal needing recovery is not written; a transaction larger than the log, a
    block of the wrong size and a stale transaction are refused."""
    with pytest.raises(JournalError, match="needs recovery"):
        Journal(superblock(start=1), MAXLEN)
    journal = empty_journal()
    txn = journal.begin()
    for block in range(1100):
        txn.write(block, data(b"x"))
    with pytest.raises(JournalError, match="exceeds a log of 1023"):
        journal.commit(txn, 0, 0)
    small = empty_journal()
    txn = small.begin()
    txn.write(1, b"short")
    with pytest.raises(ValueError):
        small.commit(txn, 0, 0)
    other = empty_journal()
    done = other.begin()
    other.commit(done, 0, 0)
    with pytest.raises(ValueError):
        other.commit(done, 1, 0)


def test_committed_answers_until_the_checkpoint_is_home() -> None:
    """A lazy checkpointer reads metadata through `committed`: a block's newest committed
    copy, nothing for a revoked one, and the copies of a checkpoint until `home_written`,
    except those a later commit replaced."""
    journal = empty_journal()
    commit_t1_and_t2(journal)
    assert [journal.committed(b) for b in (1, 2, 3, 4)] == [data(b"1"), data(b"2"), None, None]
    done = journal.checkpoint()
    assert done is not None
    t3 = journal.begin()
    t3.write(1, data(b"3"))
    journal.commit(t3, 3, 0)  # while the checkpoint's writes are under way
    assert [journal.committed(b) for b in (1, 2)] == [data(b"3"), data(b"2")]
    journal.home_written(done)
    assert [journal.committed(b) for b in (1, 2)] == [data(b"3"), None]
