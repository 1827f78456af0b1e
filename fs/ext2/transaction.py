"""jbd2 transactions, sans-I/O: running, committed into the circular log, checkpointed.

Theory of operation (after the kernel's fs/jbd2: transaction.c, commit.c, checkpoint.c).

A *running* `Transaction` collects the newest contents of every metadata block it changed
and the blocks it revoked (freed blocks whose older log copies must never be replayed:
they may hold file data written outside the journal by then). Writing a block cancels its
revoke in the same transaction and revoking one drops its copy, as jbd2_journal_cancel_revoke
and jbd2_journal_forget do, so replay (which skips a copy revoked by its own transaction or
a later one) sees exactly the transaction's last word on each block.

`Journal.commit` lays a transaction out in the log from the head on, wrapping from the
log's end back to s_first: its revoke blocks, then descriptor blocks each followed by the
copies it describes (a copy opening with the jbd2 magic is escaped), then one commit
block. It returns a `Commit`: the log writes (`log`), and the commit block, which must be
written only once those are durable (the caller flushes, writes it, flushes again: ordered
mode also puts the transaction's file data on disk before that first flush). A transaction
committed on an empty journal also rewrites the journal superblock (block 0) with s_start
and s_sequence pointing at it, in the same batch: the commit block is what makes the log
count, as in the kernel.

uvfs writes no fast commits, so, as the kernel's journal_reset until ext4 turns them on,
the journal superblock it writes drops the FAST_COMMIT feature and the log runs up to
s_maxlen, over the fast-commit area: every reader then agrees where the log wraps (e2fsck
1.47.0 wraps at s_maxlen even when the feature is set, the kernel before the area).

A committed transaction holds its log blocks until it is *checkpointed*: its blocks are
written home (the caller flushes), then the journal superblock moves s_start and
s_sequence to the oldest transaction still live, or marks the journal empty (s_start 0),
and is flushed too before the freed log blocks are reused. A block a later transaction
rewrote or revoked is not written home by an earlier one. When the log has no room for a
transaction, `commit` checkpoints the oldest transactions first (`Commit.checkpoint`).
Until its checkpoint, a block's newest committed contents exist only in the log (and here:
`committed`), so a caller that checkpoints lazily reads its metadata through `committed`
before the image; a checkpoint's blocks stay there until the caller says they are home
(`home_written`), so a read racing the checkpoint never finds the old contents.

All state lives in `Journal`; it assumes every plan it returns is carried out, in order,
before the next call (an I/O error aborts the journal: the object is dropped and the image
is left for recovery).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from uvfs_fs.ext2.jbd2 import (
    JournalError,
    JournalSuper,
    Tag,
    crc32_be,
    decode_superblock,
    encode_commit,
    encode_descriptor,
    encode_revoke,
    escape,
    mark_empty,
    revokes_per_block,
    tag_csum,
    tags_per_descriptor,
    with_log_tail,
    without_fast_commit,
)

_TID_MASK = 0xFFFFFFFF


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Transaction:
    """A running transaction: blocks changed (newest contents) and blocks revoked."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.blocks: dict[int, bytes] = {}
        self.revoked: set[int] = set()

    def write(self, block: int, data: bytes) -> None:
        """Log `data` as the new contents of filesystem block `block`."""
        self.revoked.discard(block)
        self.blocks[block] = bytes(data)

    def revoke(self, block: int) -> None:
        """Forbid replaying any copy of `block` from this or an earlier transaction."""
        self.blocks.pop(block, None)
        self.revoked.add(block)

    def log_blocks(self, jsb: JournalSuper) -> int:
        """The log blocks committing this transaction takes, its commit block included."""
        revokes = _ceil_div(len(self.revoked), revokes_per_block(jsb))
        descriptors = _ceil_div(len(self.blocks), tags_per_descriptor(jsb))
        return revokes + descriptors + len(self.blocks) + 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Writes that free log space: `home` first, durable, then `superblock`, durable."""

    home: list[tuple[int, bytes]]  # (filesystem block, contents), in block order
    superblock: bytes  # the journal superblock's new first 1024 bytes (journal block 0)
    transactions: list[int]  # the transactions checkpointed, oldest first


@dataclass(frozen=True, slots=True)
class Commit:
    """Writes that commit a transaction, in order (see the module docstring)."""

    tid: int
    checkpoint: Checkpoint | None  # first: the log had no room for this transaction
    log: list[tuple[int, bytes]]  # (journal block, bytes written at its start)
    commit: tuple[int, bytes]  # the commit block, once `log` is durable


@dataclass(slots=True)
class _Live:
    """A committed transaction still holding log space."""

    tid: int
    start: int  # its first log block
    length: int  # its log blocks, commit included
    home: dict[int, bytes] = field(default_factory=dict)  # what its checkpoint writes


class Journal:
    """The journal between commits: its superblock, head, and live transactions.

    Args:
        superblock: the journal superblock (block 0's first 1024 bytes at least), with the
            features to write with (see `jbd2.with_features`); it must be empty
            (s_start 0): replay a journal before writing to it.
        total_blocks: blocks the journal inode maps.
    """

    def __init__(self, superblock: bytes, total_blocks: int) -> None:
        if decode_superblock(superblock, total_blocks).start:
            raise JournalError("the journal needs recovery before it can be written")
        self._superblock = without_fast_commit(superblock)
        self.jsb = decode_superblock(self._superblock, total_blocks)
        self._on_disk_empty = True  # s_start is 0: the next commit sets it
        self.head = self.jsb.first  # where the next transaction begins (journal_reset)
        self.next_tid = (self.jsb.sequence + 1) & _TID_MASK  # as jbd2_journal_recover
        self._live: deque[_Live] = deque()
        # block -> the transaction (live, or checkpointed but not yet home) whose copy is newest
        self._holder: dict[int, _Live] = {}
        self._running: Transaction | None = None

    @property
    def log_size(self) -> int:
        """Blocks in the log: s_first up to its end."""
        return self.jsb.last - self.jsb.first

    @property
    def free(self) -> int:
        """Log blocks no live transaction holds."""
        return self.log_size - sum(live.length for live in self._live)

    @property
    def live(self) -> list[int]:
        """The committed transactions not checkpointed yet, oldest first."""
        return [live.tid for live in self._live]

    def committed(self, block: int) -> bytes | None:
        """The newest committed contents of filesystem block `block` not yet written home
        (None when the image holds its newest contents, or it was revoked)."""
        live = self._holder.get(block)
        return None if live is None else live.home[block]

    @property
    def superblock(self) -> bytes:
        """The journal superblock as the plans so far leave it."""
        return self._superblock

    def begin(self) -> Transaction:
        """The running transaction (a new one when none runs)."""
        if self._running is None:
            self._running = Transaction(self.next_tid)
        return self._running

    def commit(self, txn: Transaction, sec: int, nsec: int) -> Commit:
        """Commit running transaction `txn`, stamped `sec`.`nsec` (the commit time).

        Raises:
            JournalError: the transaction is larger than the whole log.
        """
        if txn is not self._running:
            raise ValueError(f"transaction {txn.tid} is not the running one")
        jsb = self.jsb
        needed = txn.log_blocks(jsb)
        if needed > self.log_size:
            raise JournalError(f"a transaction of {needed} blocks exceeds a log of {self.log_size}")
        checkpoint = self._checkpoint(needed) if needed > self.free else None
        records, crc = self._records(txn)
        start, log = self.head, []
        if self._on_disk_empty:
            self._superblock = with_log_tail(self._superblock, txn.tid, start)
            self._on_disk_empty = False
            log.append((0, self._superblock))
        at = start
        for block in records:
            log.append((at, block))
            at = jsb.wrap(at + 1)
        commit = (at, encode_commit(jsb, txn.tid, sec, nsec, crc))
        self.head = jsb.wrap(at + 1)
        for block in txn.revoked:
            older = self._holder.pop(block, None)
            if older is not None:
                del older.home[block]
        live = _Live(txn.tid, start, needed, dict(txn.blocks))
        for block in txn.blocks:
            older = self._holder.get(block)
            if older is not None:
                del older.home[block]
            self._holder[block] = live
        self._live.append(live)
        self._running = None
        self.next_tid = (txn.tid + 1) & _TID_MASK
        return Commit(txn.tid, checkpoint, log, commit)

    def _records(self, txn: Transaction) -> tuple[list[bytes], int]:
        """The log blocks of `txn` in log order but its commit block, and the CRC32 a v1
        commit block carries."""
        jsb, tid = self.jsb, txn.tid
        records: list[bytes] = []
        revoked, per_revoke = sorted(txn.revoked), revokes_per_block(jsb)
        for at in range(0, len(revoked), per_revoke):
            records.append(encode_revoke(jsb, tid, revoked[at : at + per_revoke]))
        crc = 0xFFFFFFFF  # checksum v1 covers descriptors and copies, not revoke blocks
        blocks, per_descriptor = sorted(txn.blocks.items()), tags_per_descriptor(jsb)
        for at in range(0, len(blocks), per_descriptor):
            tags, copies = [], []
            for block, data in blocks[at : at + per_descriptor]:
                if len(data) != jsb.block_size:
                    raise ValueError(f"block {block}: {len(data)} bytes, not {jsb.block_size}")
                copy, flags = escape(data)
                tags.append(Tag(block, flags, tag_csum(jsb, copy, tid)))
                copies.append(copy)
            descriptor = encode_descriptor(jsb, tid, tags)
            if jsb.csum_v1:
                for block in (descriptor, *copies):
                    crc = crc32_be(crc, block)
            records += [descriptor, *copies]
        return records, crc

    def checkpoint(self) -> Checkpoint | None:
        """Checkpoint every live transaction (None when there is none): the journal ends
        empty, as after the kernel's jbd2_journal_flush."""
        return self._checkpoint(self.log_size) if self._live else None

    def home_written(self, plan: Checkpoint) -> None:
        """`plan`'s home writes are done (readable from the image): `committed` stops
        answering for its blocks."""
        done = set(plan.transactions)
        for block, _ in plan.home:
            holder = self._holder.get(block)
            if holder is not None and holder.tid in done:
                del self._holder[block]

    def _checkpoint(self, needed: int) -> Checkpoint:
        """Checkpoint the oldest live transactions until `needed` log blocks are free."""
        done: list[_Live] = []
        while self._live and self.free < needed:
            done.append(self._live.popleft())
        home: dict[int, bytes] = {}
        for live in done:
            home.update(live.home)
        if self._live:
            oldest = self._live[0]
            self._superblock = with_log_tail(self._superblock, oldest.tid, oldest.start)
        else:
            self._superblock = mark_empty(self._superblock, self.next_tid, self.head)
            self._on_disk_empty = True
        return Checkpoint(sorted(home.items()), self._superblock, [live.tid for live in done])
