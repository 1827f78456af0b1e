"""How a flush reaches a journaled volume: one jbd2 transaction each, checkpointed lazily.

Theory of operation (ordered mode, after the kernel's ext4 over fs/jbd2).

The write side (writable.py) gathers every metadata block a flush writes (bitmaps, group
descriptors, inode table blocks, directory and indirect blocks) and hands them to
`MetadataJournal.commit` with the blocks freed since the last flush and the new
superblock. They become one transaction: the superblock's block is logged with them, so
the log always holds the superblock that goes with its metadata and a replay never puts
an older one over a newer one. File data was written to its blocks before the flush;
the commit's first barrier (log blocks, flush, commit block, flush) makes it durable
before the commit block can be, so no committed pointer leads to unwritten data. Once
`commit` returns, the transaction survives a crash: replay (the kernel's, e2fsck's, or
ours at the next writable mount) writes it home.

Checkpoints are lazy: a committed block reaches its home only when live transactions hold
half the log (or `LIVE_BYTES`, which bounds the memory their copies take), when the mount
has been idle, and at unmount; a flush then costs two barriers, as an ext2 flush does.
Until then the newest contents of a block are the log's, and the write side reads its
metadata through `committed` before the image.

Revokes. A freed block may be handed out again as file data, written outside the journal.
If an uncheckpointed transaction logged it as metadata, a replay would put that old copy
over the data, so the transaction freeing it revokes it (and a checkpoint never writes
it home). Blocks freed become allocatable only after the flush that frees them (writable.py
defers them), so the revoke is committed before any data can reach the block.

A transaction takes at most a quarter of the log (`max_blocks`; the kernel's
j_max_transaction_buffers): the write side flushes earlier rather than grow past it.

An I/O error or a cancellation in the middle of a commit or checkpoint leaves the log in
an unknown state: the journal is aborted, every later flush is EIO, and the volume keeps
needs_recovery for the next mount or e2fsck to replay.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence

from uvfs import BlockDevice, FSError
from uvfs_fs.ext2.blockmap import Run
from uvfs_fs.ext2.jbd2 import (
    JBD2_FEATURE_INCOMPAT_64BIT,
    JBD2_FEATURE_INCOMPAT_CSUM_V3,
    JBD2_FEATURE_INCOMPAT_REVOKE,
    JOURNAL_SUPERBLOCK_SIZE,
    JournalError,
    decode_superblock,
    with_features,
)
from uvfs_fs.ext2.journal import JournalLog
from uvfs_fs.ext2.journal_write import JournalWriter
from uvfs_fs.ext2.superblock import SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Geometry

LIVE_BYTES = 64 << 20  # committed copies kept in memory before a checkpoint is forced


def kernel_features(features: frozenset[str]) -> tuple[int, int]:
    """The journal's (compat, incompat) checksum and width features as ext4 loads them for
    a volume with `features`: csum v3 with metadata_csum, else none (the kernel sets
    JOURNAL_CHECKSUM only then); 64-bit tags with 64bit; REVOKE, which jbd2 sets at its
    first revoke."""
    incompat = JBD2_FEATURE_INCOMPAT_REVOKE
    if "metadata_csum" in features:
        incompat |= JBD2_FEATURE_INCOMPAT_CSUM_V3
    if "64bit" in features:
        incompat |= JBD2_FEATURE_INCOMPAT_64BIT
    return 0, incompat


class NotEmpty(JournalError):
    """The journal holds transactions: it must be replayed before it is written."""


class MetadataJournal:
    """The volume's journal as the write side uses it: commits, reads, checkpoints.

    Open one with `MetadataJournal.open`.
    """

    def __init__(self, writer: JournalWriter, geo: Geometry, super_block: bytes) -> None:
        self._writer = writer
        self._bs = geo.block_size
        # The filesystem block holding the superblock, and where in it the superblock lies.
        self._super_at, self._super_offset = divmod(SUPERBLOCK_OFFSET, geo.block_size)
        self._super_block = bytearray(super_block)
        self._aborted = False

    @classmethod
    async def open(cls, image: BlockDevice, runs: Sequence[Run], geo: Geometry) -> MetadataJournal:
        """The journal whose inode maps `runs`, with the features ext4 would load it with.

        Raises:
            NotEmpty: the journal needs recovery first.
            JournalError: it cannot be written (damaged, a hole in its inode...).
        """
        bs = geo.block_size
        total = sum(run.count for run in runs)
        if not runs or not all(run.physical for run in runs):
            raise JournalError("the journal inode has holes")
        first = JournalLog(runs, geo.blocks_count).image_block(0)
        raw = await image.read(first * bs, JOURNAL_SUPERBLOCK_SIZE)
        jsb = decode_superblock(raw, total)
        if jsb.start:
            raise NotEmpty("the journal is not empty")
        if jsb.block_size != bs:
            raise JournalError(f"journal blocks of {jsb.block_size} bytes, not {bs}")
        raw = with_features(raw, *kernel_features(geo.features))
        writer = await JournalWriter.open(image, runs, bs, geo.blocks_count, raw)
        at = SUPERBLOCK_OFFSET // bs
        return cls(writer, geo, await image.read(at * bs, bs))

    @property
    def max_blocks(self) -> int:
        """The most metadata blocks one transaction may log."""
        return self._writer.journal.log_size // 4

    @property
    def live(self) -> bool:
        """Whether committed transactions wait for their checkpoint."""
        return bool(self._writer.journal.live)

    def committed(self, block: int) -> bytes | None:
        """Block `block`'s newest committed contents while only the log holds them."""
        return self._writer.journal.committed(block)

    async def commit(
        self, writes: dict[int, bytes], freed: Iterable[int], superblock: bytes
    ) -> None:
        """Log `writes` (filesystem block -> contents), revoke what `freed` leaves in the
        log, log the 1024-byte `superblock`, and wait until the transaction is durable,
        file data written before it included. Checkpoints when the log is half full.
        """
        self._check()
        journal = self._writer.journal
        txn = self._writer.begin()
        for block in freed:
            if journal.committed(block) is not None:
                txn.revoke(block)
        for block, data in writes.items():
            txn.write(block, data)
        at = self._super_offset
        self._super_block[at : at + SUPERBLOCK_SIZE] = superblock
        txn.write(self._super_at, self._super_block)
        try:
            await self._writer.commit(txn)
            held = journal.log_size - journal.free
            if held * 2 >= journal.log_size or held * self._bs >= LIVE_BYTES:
                await self._writer.checkpoint()
        except BaseException:
            self._aborted = True
            raise

    async def checkpoint(self) -> None:
        """Write every committed transaction home and mark the journal empty."""
        self._check()
        try:
            await self._writer.checkpoint()
        except BaseException:
            self._aborted = True
            raise

    def _check(self) -> None:
        if self._aborted:
            raise FSError(errno.EIO, "the journal was aborted by an earlier error")
