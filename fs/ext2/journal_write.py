"""Writing the journal: transactions committed and checkpointed through the block device.

The thin I/O half of transaction.py: `JournalWriter` carries out its plans with the
barriers jbd2 uses, each a flush (fdatasync) of the image:

- commit: [checkpoint first, when the log is full] log blocks (revoke, descriptor, copies,
  and the journal superblock when the journal was empty), flush, commit block, flush.
  Ordered mode: the caller writes the transaction's file data before `commit`, and the
  first flush makes it durable before the commit block can be.
- checkpoint: blocks written home, flush, journal superblock (s_start moved on, or the
  journal marked empty), flush; only then may the log blocks it frees be reused.

A crash at any point leaves a journal that replay makes consistent: a transaction counts
once its commit block is durable, and never a block sooner.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from uvfs import BlockDevice
from uvfs_fs.ext2.blockmap import Run
from uvfs_fs.ext2.jbd2 import JOURNAL_SUPERBLOCK_SIZE
from uvfs_fs.ext2.journal import JournalLog
from uvfs_fs.ext2.transaction import Checkpoint, Commit, Journal, Transaction


class JournalWriter:
    """Commits and checkpoints `journal` into the journal inode's blocks of `image`.

    Args:
        image: the filesystem's device.
        log: the journal inode's blocks in the image.
        journal: the journal's state (empty: replayed first).
        block_size: the filesystem's block size.
    """

    def __init__(
        self, image: BlockDevice, log: JournalLog, journal: Journal, block_size: int
    ) -> None:
        self.image = image
        self.log = log
        self.journal = journal
        self._bs = block_size

    @classmethod
    async def open(
        cls,
        image: BlockDevice,
        runs: Sequence[Run],
        block_size: int,
        blocks_count: int,
        superblock: bytes | None = None,
    ) -> JournalWriter:
        """The writer of the journal whose inode maps `runs`.

        Args:
            superblock: the journal superblock to start from (features set with
                `jbd2.with_features`); by default the one in the image. It reaches the
                image with the first commit.

        Raises:
            JournalError: the journal cannot be used, or needs recovery first.
        """
        log = JournalLog(runs, blocks_count)
        if superblock is None:
            superblock = await image.read(log.image_block(0) * block_size, JOURNAL_SUPERBLOCK_SIZE)
        journal = Journal(superblock, sum(run.count for run in runs))
        return cls(image, log, journal, block_size)

    def begin(self) -> Transaction:
        """The running transaction."""
        return self.journal.begin()

    async def commit(self, txn: Transaction, now_ns: int | None = None) -> Commit:
        """Commit `txn` and wait until it is durable; returns the plan carried out."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        plan = self.journal.commit(txn, now_ns // 1_000_000_000, now_ns % 1_000_000_000)
        if plan.checkpoint is not None:
            await self._write_checkpoint(plan.checkpoint)
        await self.write_log(plan.log)
        await self.image.sync()
        await self.write_log([plan.commit])
        await self.image.sync()
        return plan

    async def checkpoint(self) -> Checkpoint | None:
        """Write every committed transaction home and mark the journal empty."""
        plan = self.journal.checkpoint()
        if plan is not None:
            await self._write_checkpoint(plan)
        return plan

    async def write_log(self, writes: Sequence[tuple[int, bytes]]) -> None:
        """Write each (journal block, bytes) of `writes`, with no barrier."""
        await self._write([(self.log.image_block(block), data) for block, data in writes])

    async def _write_checkpoint(self, plan: Checkpoint) -> None:
        await self._write(plan.home)
        self.journal.home_written(plan)
        await self.image.sync()
        await self.write_log([(0, plan.superblock)])
        await self.image.sync()

    async def _write(self, writes: Sequence[tuple[int, bytes]]) -> None:
        """Write (image block, bytes) pairs, whole blocks that follow each other as one."""
        bs, pending, first = self._bs, bytearray(), 0
        for block, data in writes:
            if pending and (len(pending) % bs or block != first + len(pending) // bs):
                await self.image.write(first * bs, bytes(pending))
                pending = bytearray()
            if not pending:
                first = block
            pending += data
        if pending:
            await self.image.write(first * bs, bytes(pending))
