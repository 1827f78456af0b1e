"""The read pipeline (module/zfs/zio.c, zio_checksum.c, blkptr.c): block pointer to bytes.

`zio_read` turns a block pointer into its logical bytes, the way zio_read's pipeline does
for a pool opened read-only:

1. a hole reads as `lsize` zeros; an embedded pointer's payload is decompressed, no I/O;
2. each DVA in turn (ditto copies) is read from its top-level vdev, which itself tries
   mirror sides and raidz reconstructions, until a version passes the block's checksum;
   a gang DVA holds a 512-byte gang header (zio_gbh_phys_t: three block pointers and an
   embedded sha256 seeded with the block's identity) whose children, read the same way
   and concatenated, form the block;
3. the verified physical bytes are decompressed to `lsize`.

Nothing passing is EIO. All checksums and decoders are C that releases the GIL. The slow
ones (sha256, sha512, blake3; lzjb, gzip, zstd) run in a worker thread for blocks of 64 KiB
or more, so other requests proceed meanwhile and both cores work; the fast ones (fletcher,
lz4, zle: several GB/s) run inline up to 1 MiB, since a thread hop costs more than they do.
A block whose checksum function cannot be computed here (off, skein, edonr; blake3 without
the salt) is returned unverified and counted.

`zio_read_many` reads several blocks at once, adjacent ones with a single I/O, as the
vdev queue aggregates them upstream (see there); `zio_prefetch` starts such reads in
worker threads without waiting for them (read-ahead).

In a block of an encrypted dataset (the crypt bit, objsets aside) the last two checksum
words hold its MAC and the first two the checksum of the stored bytes, folded with its
last two words for non-dedup functions (zio_checksum_handle_crypt); only those are
compared. Its bytes are returned as stored: decrypting is not this layer's job (an
encrypted block then fails to decompress: EIO).
"""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import trio

from uvfs import FSError
from uvfs_fs.zfs.blkptr import BP_EMBEDDED_TYPE_DATA, DVA, BlockPtr, parse_blkptrs
from uvfs_fs.zfs.checksum import (
    INLINE,
    ZIO_CHECKSUM_BLAKE3,
    ZIO_CHECKSUM_GANG_HEADER,
    ZIO_CHECKSUM_SHA256,
    ZIO_CHECKSUM_SHA512,
    ZIO_CHECKSUM_SKEIN,
    checksum_name,
    compute,
    eck_byteorder,
    verify_embedded,
)
from uvfs_fs.zfs.compress import THREADED, CompressError, decompress
from uvfs_fs.zfs.vdev import LeafVdev, MirrorVdev, Vdev, VdevStats

if TYPE_CHECKING:
    import outcome

SPA_MAXBLOCKSIZE = 16 * 1024 * 1024
SPA_GANGBLOCKSIZE = 512
SPA_GBH_NBLKPTRS = 3
GANG_MAX_DEPTH = 8  # gang children may be gangs; upstream nests a few levels at most
THREAD_MIN = 64 * 1024  # slow functions go to a worker thread from this block size
INLINE_MAX = 1 << 20  # fast functions stay inline up to this one
AGGREGATE_MAX = 1 << 20  # one read covers neighbouring blocks up to this many bytes
AGGREGATE_GAP = 64 * 1024  # ... reading the gaps between them up to this size
AGGREGATE_PARALLEL = 4  # runs of one zio_read_many in flight at once

DMU_OT_OBJSET = 11
# Functions strong enough for dedup keep their first two words as is in encrypted blocks;
# the others fold their last two words in (zio_checksum_handle_crypt).
_SECURE = frozenset({ZIO_CHECKSUM_SHA256, ZIO_CHECKSUM_SHA512, ZIO_CHECKSUM_SKEIN,
                     ZIO_CHECKSUM_BLAKE3})  # fmt: skip

T = TypeVar("T")


def _crypt_words(func: int, got: tuple[int, int, int, int]) -> tuple[int, int]:
    if func in _SECURE:
        return got[0], got[1]
    return got[0] ^ got[2], got[1] ^ got[3]


async def _cpu(size: int, fn: Callable[..., T], *args: object, slow: bool) -> T:
    if size < (THREAD_MIN if slow else INLINE_MAX):
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args)


def _eio(bp: BlockPtr, why: str) -> FSError:
    return FSError(errno.EIO, f"block (txg {bp.birth_txg}, type {bp.type}): {why}")


async def zio_read(
    vdevs: Sequence[Vdev], bp: BlockPtr, stats: VdevStats, salt: bytes | None = None
) -> bytes:
    """The logical bytes of `bp`: verified, reassembled and decompressed.

    Args:
        vdevs: the pool's top-level vdevs, by id.
        bp: the block pointer.
        stats: counters to update.
        salt: the pool's checksum salt (for skein/edonr/blake3 blocks).

    Raises:
        FSError: EIO when no copy passes its checksum or the block does not decompress.
    """
    stats.blocks_read += 1
    if bp.lsize > SPA_MAXBLOCKSIZE or bp.psize > SPA_MAXBLOCKSIZE:
        raise _eio(bp, f"size {bp.lsize}/{bp.psize} exceeds the maximum block size")
    if bp.embedded:
        if bp.etype != BP_EMBEDDED_TYPE_DATA:
            raise _eio(bp, f"embedded type {bp.etype} holds no data")
        physical = bp.payload
    elif bp.is_hole:
        return bytes(bp.lsize)
    else:
        physical = await _read_physical(vdevs, bp, stats, salt, 0)
    try:
        return await _cpu(
            bp.lsize, decompress, bp.compress, physical, bp.lsize,
            slow=bp.compress in THREADED,
        )  # fmt: skip
    except CompressError as e:
        raise _eio(bp, str(e)) from None


def _matches(bp: BlockPtr, got: tuple[int, int, int, int]) -> bool:
    """Whether computed checksum words `got` are those `bp` records."""
    if bp.encrypted and bp.type != DMU_OT_OBJSET:
        return _crypt_words(bp.checksum, got) == bp.cksum[:2]
    return got == bp.cksum


async def _read_physical(
    vdevs: Sequence[Vdev], bp: BlockPtr, stats: VdevStats, salt: bytes | None, depth: int
) -> bytes:
    async def check(data: bytes) -> bool:
        got = await _cpu(
            len(data), compute, bp.checksum, data, bp.byteorder, salt,
            slow=bp.checksum not in INLINE,
        )  # fmt: skip
        if got is None:
            stats.unverified += 1
            return True
        return _matches(bp, got)

    for dva in bp.dvas:
        if dva.vdev >= len(vdevs):
            continue
        if dva.gang:
            data = await _read_gang(dva, vdevs, bp, stats, salt, depth, check)
        else:
            data = await vdevs[dva.vdev].read(dva.offset, bp.psize, check)
        if data is not None:
            return data
    raise _eio(bp, f"no copy passes its {checksum_name(bp.checksum)} checksum")


async def _read_gang(
    dva: DVA,
    vdevs: Sequence[Vdev],
    bp: BlockPtr,
    stats: VdevStats,
    salt: bytes | None,
    depth: int,
    check: Callable[[bytes], Awaitable[bool]],
) -> bytes | None:
    if depth >= GANG_MAX_DEPTH:
        return None
    identity = bp.dvas[0]
    verifier = (identity.vdev, identity.offset, bp.phys_birth or bp.birth_txg, 0)

    async def check_header(header: bytes) -> bool:
        return verify_embedded(header, ZIO_CHECKSUM_GANG_HEADER, verifier)

    header = await vdevs[dva.vdev].read(dva.offset, SPA_GANGBLOCKSIZE, check_header)
    if header is None:
        return None
    order = eck_byteorder(header)
    assert order is not None  # check_header saw the magic
    parts = []
    for child in parse_blkptrs(header[: SPA_GBH_NBLKPTRS * 128], order):
        if child.is_hole or child.embedded:
            continue
        try:
            parts.append(await _read_physical(vdevs, child, stats, salt, depth + 1))
        except FSError:
            return None
    data = b"".join(parts)[: bp.psize]
    if len(data) != bp.psize or not await check(data):
        return None
    return data


# --- several blocks at once --------------------------------------------------------------


def _aggregatable(vdevs: Sequence[Vdev], bp: BlockPtr) -> bool:
    """Whether `bp` may share one read with its neighbours: a plain block on a vdev where a
    range read is the concatenation of the blocks in it (a leaf or a mirror, not raidz,
    whose columns depend on each block's own offset and size)."""
    if bp.embedded or bp.is_hole or not bp.dvas or bp.psize > AGGREGATE_MAX:
        return False
    dva = bp.dvas[0]
    return (
        not dva.gang
        and dva.vdev < len(vdevs)
        and isinstance(vdevs[dva.vdev], LeafVdev | MirrorVdev)
    )


def _runs(vdevs: Sequence[Vdev], bps: Sequence[BlockPtr]) -> list[list[int]]:
    """Indexes of `bps` in runs that one read covers (first DVAs in order on one vdev, at
    most AGGREGATE_GAP apart, AGGREGATE_MAX in all); every other block alone."""
    runs: list[list[int]] = []
    alone = [i for i, bp in enumerate(bps) if not _aggregatable(vdevs, bp)]
    order = sorted(
        (i for i, bp in enumerate(bps) if _aggregatable(vdevs, bp)),
        key=lambda i: (bps[i].dvas[0].vdev, bps[i].dvas[0].offset),
    )
    start = end = vdev = -1
    for i in order:
        dva = bps[i].dvas[0]
        if (
            runs
            and dva.vdev == vdev
            and end <= dva.offset <= end + AGGREGATE_GAP
            and dva.offset + bps[i].psize - start <= AGGREGATE_MAX
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
            start, vdev = dva.offset, dva.vdev
        end = dva.offset + bps[i].psize
    return runs + [[i] for i in alone]


def _finish(bp: BlockPtr, physical: bytes, salt: bytes | None) -> tuple[bytes | None, bool]:
    """Verify and decompress one block read in a run: (logical bytes, or None when it must
    be read again on its own; whether its checksum could be verified)."""
    got = compute(bp.checksum, physical, bp.byteorder, salt)
    if got is not None and not _matches(bp, got):
        return None, True
    try:
        return decompress(bp.compress, physical, bp.lsize), got is not None
    except CompressError:
        return None, got is not None


Verdict = tuple[bytes | None, bool]  # what `_finish` says of one block


def _finish_run(
    data: bytes | None, at: int, run: list[BlockPtr], salt: bytes | None
) -> list[Verdict] | None:
    """`_finish` each block of `run`, cut from `data` (read from vdev offset `at`)."""
    if data is None:
        return None
    view = memoryview(data)
    out = []
    for bp in run:
        start = bp.dvas[0].offset - at
        out.append(_finish(bp, bytes(view[start : start + bp.psize]), salt))
    return out


def _read_finish(vdev: LeafVdev, run: list[BlockPtr], salt: bytes | None) -> list[Verdict] | None:
    """Read `run` from a leaf with one I/O, then verify and decompress it: a worker
    thread's whole job, so the trio thread neither copies nor decodes."""
    at = run[0].dvas[0].offset
    return _finish_run(vdev.read_raw_sync(at, _span(run)), at, run, salt)


def _span(run: list[BlockPtr]) -> int:
    return run[-1].dvas[0].offset + run[-1].psize - run[0].dvas[0].offset


async def zio_read_many(
    vdevs: Sequence[Vdev], bps: Sequence[BlockPtr], stats: VdevStats, salt: bytes | None = None
) -> list[bytes]:
    """`zio_read` of every pointer in `bps` (in that order), adjacent blocks read together.

    As upstream's vdev queue aggregates neighbouring reads, blocks whose first copies lie
    within AGGREGATE_GAP of each other on a leaf or mirror vdev are read with one I/O (so
    a sequential read of a file costs one system call and one thread hop per megabyte, not
    per block); they are then verified and decompressed, on two worker threads when that
    is slow. A block of a run that fails its checksum or does not decompress is read again
    alone by `zio_read`, which tries every copy and reports the errors. Runs are read
    concurrently, at most AGGREGATE_PARALLEL at a time.

    Raises:
        FSError: as `zio_read`, for the first block that cannot be read.
    """
    out: list[bytes | None] = [None] * len(bps)
    limiter = trio.CapacityLimiter(AGGREGATE_PARALLEL)

    async def run(indexes: list[int]) -> None:
        async with limiter:
            if len(indexes) > 1:
                await _read_run(vdevs, bps, indexes, stats, salt, out)
            for i in indexes:
                if out[i] is None:
                    out[i] = await zio_read(vdevs, bps[i], stats, salt)

    try:
        async with trio.open_nursery() as nursery:
            for indexes in _runs(vdevs, bps):
                nursery.start_soon(run, indexes)
    except* FSError as group:
        raise group.exceptions[0] from None
    return out  # type: ignore[return-value]  # every slot filled, or an error raised


async def _read_run(
    vdevs: Sequence[Vdev],
    bps: Sequence[BlockPtr],
    indexes: list[int],
    stats: VdevStats,
    salt: bytes | None,
    out: list[bytes | None],
) -> None:
    """Read one run into `out`; blocks left None must be read alone.

    From a leaf, worker threads read, verify and decompress (two threads, a half each,
    when the functions are slow); from a mirror, one side is read, then checked.
    """
    run = [bps[i] for i in indexes]
    vdev = vdevs[run[0].dvas[0].vdev]
    slow = any(bp.compress in THREADED or bp.checksum not in INLINE for bp in run)
    cut = (len(run) + 1) // 2 if slow else len(run)
    halves = [h for h in (run[:cut], run[cut:]) if h]
    verdicts: list[list[Verdict] | None] = [None] * len(halves)
    data = None
    at = run[0].dvas[0].offset
    if not isinstance(vdev, LeafVdev):
        data = await vdev.read(at, _span(run), None)

    async def finish(k: int) -> None:
        if isinstance(vdev, LeafVdev):
            verdicts[k] = await trio.to_thread.run_sync(_read_finish, vdev, halves[k], salt)
            stats.leaf_reads += 1
            stats.leaf_errors += verdicts[k] is None
        elif slow:
            verdicts[k] = await trio.to_thread.run_sync(_finish_run, data, at, halves[k], salt)
        else:
            verdicts[k] = _finish_run(data, at, halves[k], salt)

    async with trio.open_nursery() as nursery:
        for k in range(len(halves)):
            nursery.start_soon(finish, k)
    for part, verdict in zip((indexes[:cut], indexes[cut:]), verdicts, strict=False):
        for i, (logical, verified) in zip(part, verdict or [], strict=False):
            if logical is not None:
                out[i] = logical
                stats.blocks_read += 1
                stats.unverified += not verified


# --- read-ahead ---------------------------------------------------------------------------


def zio_prefetch(
    vdevs: Sequence[Vdev],
    bps: Sequence[BlockPtr],
    stats: VdevStats,
    salt: bytes | None,
    deliver: Callable[[BlockPtr, bytes | None], None],
) -> None:
    """Start reading `bps` without waiting: read-ahead, which no request awaits.

    Runs on leaf vdevs are read, verified and decompressed in worker threads started
    with trio.lowlevel.start_thread_soon (no task, so no nursery outlives a request);
    `deliver(bp, data)` is then called on the trio thread, exactly once for every pointer:
    with None for a block that failed or that is not read ahead (other vdevs, embedded,
    gang), which its reader will then read itself and report.
    """
    token = trio.lowlevel.current_trio_token()
    for indexes in _runs(vdevs, bps):
        run = [bps[i] for i in indexes]
        vdev = vdevs[run[0].dvas[0].vdev] if _aggregatable(vdevs, run[0]) else None
        if not isinstance(vdev, LeafVdev):
            for bp in run:
                deliver(bp, None)
            continue
        slow = any(bp.compress in THREADED or bp.checksum not in INLINE for bp in run)
        cut = (len(run) + 1) // 2 if slow and len(run) > 1 else len(run)
        for half in (run[:cut], run[cut:]):
            if half:
                trio.lowlevel.start_thread_soon(
                    functools.partial(_read_finish, vdev, half, salt),
                    functools.partial(_delivered, token, half, stats, deliver),
                )


def _delivered(
    token: trio.lowlevel.TrioToken,
    run: list[BlockPtr],
    stats: VdevStats,
    deliver: Callable[[BlockPtr, bytes | None], None],
    result: outcome.Outcome[list[Verdict] | None],
) -> None:
    """In the worker thread: hand a read-ahead run's outcome to the trio thread."""

    def on_trio_thread() -> None:
        try:
            verdicts = result.unwrap() or [(None, False)] * len(run)
        except Exception:  # a read-ahead that fails costs nothing: the reader retries
            verdicts = [(None, False)] * len(run)
        stats.leaf_reads += 1
        for bp, (logical, verified) in zip(run, verdicts, strict=True):
            if logical is not None:
                stats.blocks_read += 1
                stats.unverified += not verified
            deliver(bp, logical)

    with contextlib.suppress(trio.RunFinishedError):  # unmounted meanwhile: nobody waits
        token.run_sync_soon(on_trio_thread)
