"""Journal recovery: the three passes of the kernel's fs/jbd2/recovery.c, without writing.

Theory of operation. The log runs from s_start, transaction s_sequence, through
descriptor blocks (each followed by the copies it describes), revoke blocks and one commit
block per transaction; a block without the magic, or with another sequence, ends it.

1. *Scan* finds where replay ends: the first transaction without a commit block, or the
   first whose checksum fails (v1: the CRC32 of its descriptor and data blocks in the
   commit block; v2/v3: the commit block's own crc32c). The latter is reported
   (`Recovery.failed_commit`): the kernel replays up to it and then refuses to mount,
   e2fsck replays up to it and goes on; the caller chooses. A bad descriptor or revoke block
   checksum is judged at the next commit, as the kernel judges it: if that commit is not
   older than the one before, the journal is corrupt (the kernel refuses to mount, and so
   do we); if it is older, the block is stale data from an earlier use of the log and
   replay ends there.
2. *Revoke* collects every revoke record of the committed transactions, keeping for each
   block the newest transaction that revoked it.
3. *Replay* takes, transaction by transaction, each copy a descriptor lists, unless a
   transaction at or after its own revoked the block; a later copy replaces an earlier.
   A copy whose v2/v3 tag checksum fails is left out, and recovery then fails as the
   kernel's does (it replays the rest, then refuses the mount).

Nothing is written: the result is `Recovery.blocks`, filesystem block -> the log block
holding its newest copy (and the tag flags, for the ESCAPE fix-up), which a reader lays
over the image. Transaction ids wrap at 2^32 and are compared as the kernel's tid_gt.

The log is read through an async `read_log(block)` callback (journal-relative block
numbers). Its records (descriptor, commit and revoke blocks) are read once, up to the end of
the log but never past one turn of it, so a hostile journal cannot loop; the passes then
go over them, the later two only up to the end the scan found.
Fast commits (ext4's fast_commit) are not replayed: a journal whose fast-commit area
belongs to the transaction after the last full commit is refused with `JournalError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from uvfs_fs.ext2.jbd2 import (
    JBD2_COMMIT_BLOCK,
    JBD2_DESCRIPTOR_BLOCK,
    JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT,
    JBD2_FEATURE_INCOMPAT_FAST_COMMIT,
    JBD2_REVOKE_BLOCK,
    JournalError,
    JournalSuper,
    Tag,
    block_tail_ok,
    commit_csum_ok,
    commit_time,
    commit_v1_ok,
    crc32_be,
    decode_header,
    decode_tags,
    fast_commit_tid,
    revoke_records,
    tag_csum_ok,
)

ReadLog = Callable[[int], Awaitable[bytes]]

_TID_MASK = 0xFFFFFFFF


def tid_gt(x: int, y: int) -> bool:
    """Whether transaction `x` comes after `y`, ids wrapping at 2^32 (the kernel's tid_gt)."""
    return 0 < (x - y) & _TID_MASK < 0x80000000


@dataclass
class Recovery:
    """What replaying the journal does to the filesystem, and how far it went."""

    start_transaction: int
    end_transaction: int  # the first transaction not replayed
    # filesystem block -> (log block of its newest copy, that copy's tag flags)
    blocks: dict[int, tuple[int, int]] = field(default_factory=dict)
    revoke_hits: int = 0  # copies left out because a revoke record covers them
    failed_commit: int | None = None  # the transaction whose commit failed its checksum


class _Record(NamedTuple):
    """One log record the walk meets: a descriptor (with its copies), commit or revoke."""

    kind: int
    sequence: int
    block: bytes
    copies: list[tuple[Tag, int]]  # descriptor: each tag and the log block of its copy


async def _walk(jsb: JournalSuper, read_log: ReadLog) -> list[_Record]:
    """The log's records from s_start to its end (the copies themselves are not read)."""
    records: list[_Record] = []
    tid, at, budget = jsb.sequence, jsb.start, jsb.last - jsb.first
    while budget > 0:
        block = await read_log(at)
        at, budget = jsb.wrap(at + 1), budget - 1
        head = decode_header(block)
        if head is None or head.sequence != tid:
            break
        if head.blocktype == JBD2_DESCRIPTOR_BLOCK:
            copies = []
            for tag in decode_tags(block, jsb):
                copies.append((tag, at))
                at, budget = jsb.wrap(at + 1), budget - 1
            records.append(_Record(head.blocktype, tid, block, copies))
        elif head.blocktype in (JBD2_COMMIT_BLOCK, JBD2_REVOKE_BLOCK):
            records.append(_Record(head.blocktype, tid, block, []))
            if head.blocktype == JBD2_COMMIT_BLOCK:
                tid = (tid + 1) & _TID_MASK
        else:
            break  # an unknown block type ends the log, as in the kernel
    return records


async def _scan(
    jsb: JournalSuper, records: list[_Record], read_log: ReadLog
) -> tuple[int, int | None]:
    """Pass 1: the first transaction not to replay, and the one whose commit failed its
    checksum (None when the log simply ends, or ends in stale blocks)."""
    seed, tail = jsb.seed, jsb.tail_size
    end = jsb.sequence
    failed: int | None = None  # a transaction whose commit checksum failed
    suspect = ""  # a descriptor or revoke block failed its checksum since the last commit
    last_time, crc = 0, 0xFFFFFFFF
    for rec in records:
        if rec.kind == JBD2_DESCRIPTOR_BLOCK or rec.kind == JBD2_REVOKE_BLOCK:
            if tail and not block_tail_ok(rec.block, seed):
                suspect = "descriptor" if rec.kind == JBD2_DESCRIPTOR_BLOCK else "revoke"
            elif rec.kind == JBD2_DESCRIPTOR_BLOCK and jsb.csum_v1 and failed is None:
                crc = crc32_be(crc, rec.block)
                for _, log in rec.copies:
                    crc = crc32_be(crc, await read_log(log))
            continue
        when = commit_time(rec.block)
        if suspect:
            if when >= last_time:
                raise JournalError(
                    f"journal transaction {rec.sequence}: {suspect} block checksum does not "
                    "match (the kernel refuses this journal too): run e2fsck"
                )
            break  # stale blocks of an earlier use of the log: the log ends here
        if jsb.csum_v1:
            if failed is not None:
                break
            good = commit_v1_ok(rec.block, crc)
            crc = 0xFFFFFFFF
        else:
            good = not jsb.csum_v2or3 or commit_csum_ok(rec.block, seed)
        if not good:
            if when < last_time:
                break  # stale, as above
            if failed is None:
                failed = rec.sequence
            if not jsb.has(JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT):
                break
        last_time = when
        end = (rec.sequence + 1) & _TID_MASK
    else:
        return (end if failed is None else failed), failed
    return (rec.sequence if failed is None else failed), failed


async def recover(jsb: JournalSuper, read_log: ReadLog) -> Recovery:
    """Scan, collect revokes and replay the log of journal `jsb`, in memory.

    Raises:
        JournalError: the kernel would refuse this journal (a corrupt descriptor or revoke
            block inside the log, a copy failing its checksum, fast commits to replay).
    """
    if not jsb.start:
        return Recovery(jsb.sequence, jsb.sequence)
    records = await _walk(jsb, read_log)
    end, failed = await _scan(jsb, records, read_log)
    records = [rec for rec in records if tid_gt(end, rec.sequence)]
    fast = jsb.has(JBD2_FEATURE_INCOMPAT_FAST_COMMIT) and jsb.fc_first < jsb.maxlen
    if fast and fast_commit_tid(await read_log(jsb.fc_first)) == end:
        raise JournalError(
            f"the journal holds ext4 fast commits (transaction {end}), which uvfs does "
            "not replay: let the kernel or e2fsck recover the image first"
        )
    revoked: dict[int, int] = {}  # block -> newest transaction revoking it
    for rec in records:
        if rec.kind == JBD2_REVOKE_BLOCK:
            for block in revoke_records(rec.block, jsb):
                if block not in revoked or tid_gt(rec.sequence, revoked[block]):
                    revoked[block] = rec.sequence
    recovery = Recovery(jsb.sequence, end, failed_commit=failed)
    bad: list[int] = []
    for rec in records:
        if rec.kind != JBD2_DESCRIPTOR_BLOCK:
            continue
        if jsb.tail_size and not block_tail_ok(rec.block, jsb.seed):
            raise JournalError(
                f"journal transaction {rec.sequence}: descriptor block checksum does not match"
            )
        for tag, log in rec.copies:
            by = revoked.get(tag.blocknr)
            if by is not None and not tid_gt(rec.sequence, by):
                recovery.revoke_hits += 1
            elif jsb.csum_v2or3 and not tag_csum_ok(jsb, tag, await read_log(log), rec.sequence):
                bad.append(tag.blocknr)
            else:
                recovery.blocks[tag.blocknr] = (log, tag.flags)
    if bad:
        raise JournalError(
            f"the journal's copies of block(s) {', '.join(map(str, bad[:8]))} fail their "
            "checksums (the kernel refuses this journal too): run e2fsck"
        )
    return recovery
