"""The volume's journal in the image: located through its inode, recovered, written home.

The journal inode's block map (runs, from the driver's own inode and extent code) places
the journal's blocks in the image (`JournalLog`). `recover_journal` reads the journal
superblock and runs the three recovery passes (recovery.py) over it, giving a `Replay`:
for each filesystem block, the image block holding its newest copy. A read-only mount lays
that over the image (replayed.py); a writable one first has `write_replay` put each copy
home and mark the journal empty, as the kernel and e2fsck do.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from uvfs import BlockDevice
from uvfs_fs.ext2.blockmap import Run
from uvfs_fs.ext2.jbd2 import (
    JOURNAL_SUPERBLOCK_SIZE,
    JournalError,
    JournalSuper,
    decode_superblock,
    mark_empty,
    unescape,
)
from uvfs_fs.ext2.recovery import Recovery, recover


class JournalLog:
    """The journal inode's blocks located in the image.

    Args:
        runs: the journal inode's block map, in logical order.
        blocks_count: blocks in the filesystem; the journal must lie inside it.
    """

    def __init__(self, runs: Sequence[Run], blocks_count: int) -> None:
        self._runs = list(runs)
        self._starts = [run.logical for run in self._runs]
        self._blocks_count = blocks_count

    def image_block(self, log: int) -> int:
        """The image block holding journal block `log`; `JournalError` for a hole."""
        at = bisect.bisect_right(self._starts, log) - 1
        run = self._runs[at] if at >= 0 else None
        if run is None or not run.physical or log >= run.logical + run.count:
            raise JournalError(f"journal block {log} is not mapped")
        block = run.physical + log - run.logical
        if block >= self._blocks_count:
            raise JournalError(f"journal block {log} lies past the filesystem")
        return block


@dataclass(frozen=True, slots=True)
class Replay:
    """What recovering the journal does to the volume."""

    jsb: JournalSuper
    log: JournalLog
    recovery: Recovery
    copies: dict[int, tuple[int, int]]  # fs block -> (image block of its newest copy, flags)


async def recover_journal(
    image: BlockDevice, runs: Sequence[Run], block_size: int, blocks_count: int
) -> Replay:
    """Recover the journal whose inode maps `runs`, without writing.

    Raises:
        JournalError: the journal cannot be read or replayed (see `recovery.recover`).
    """
    total = sum(run.count for run in runs)
    log = JournalLog(runs, blocks_count)

    async def read_log(block: int) -> bytes:
        return await image.read(log.image_block(block) * block_size, block_size)

    jsb = decode_superblock(await read_log(0), total)
    if jsb.block_size != block_size:
        raise JournalError(f"journal blocks of {jsb.block_size} bytes, not {block_size}")
    recovery = await recover(jsb, read_log)
    copies = {}
    for block, (at, flags) in recovery.blocks.items():
        if not 0 <= block < blocks_count:
            raise JournalError(f"the journal replays block {block}, past the end")
        copies[block] = (log.image_block(at), flags)
    return Replay(jsb, log, recovery, copies)


async def write_replay(image: BlockDevice, replay: Replay, block_size: int) -> None:
    """Put every replayed block home, then mark the journal empty.

    The blocks are durable before the journal says it is empty, so a crash in between
    leaves a journal that replays the same blocks again.
    """
    bs = block_size
    for block, (at, flags) in sorted(replay.copies.items()):
        await image.write(block * bs, unescape(await image.read(at * bs, bs), flags))
    await image.sync()
    where = replay.log.image_block(0) * bs
    head = await image.read(where, JOURNAL_SUPERBLOCK_SIZE)
    # The next transaction gets the id after the last one replayed, as jbd2 restarts it.
    await image.write(where, mark_empty(head, replay.recovery.end_transaction + 1))
    await image.sync()
