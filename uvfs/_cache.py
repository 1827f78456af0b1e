"""The broker's buffer cache: file data by byte range, shared by the mounts of a process.

Theory of operation
===================

What is cached
--------------
File data, keyed by `FileKey` ``(mount id, inode)``. Per file, the cache keeps a sorted
list of non-overlapping *extents*: a start offset and a ``bytearray`` of the bytes from
there. Byte offsets are cut into chunks of `EXTENT_MAX` (1 MiB) and an extent never
crosses a chunk boundary, so:

* adjacent extents in the same chunk always merge into one (a sequential reader in
  128 KiB requests builds one 1 MiB extent per chunk, appending in place: a ``bytearray``
  grows in amortised O(appended bytes));
* a fill that crosses a boundary is split there, so no extent exceeds 1 MiB and eviction
  stays fine-grained (evicting one extent frees at most 1 MiB, never a whole big file);
* writes overwrite cached bytes in place, never splitting an extent; truncation cuts the
  extent that straddles the new size and drops the ones after it.

Besides data, a file may know its end: ``eof``, learnt when a fetch comes back short (with
some bytes, or with none right after a byte the read holds: an empty answer far past the
end only says the end is not after it), set by truncate, moved by writes past it. The
cache keeps no byte at or beyond a known EOF, and answers reads past it without asking
the driver.

Eviction and the budget
-----------------------
One LRU list holds every extent of every file of every mount; a hit or fill moves the
extents it touches to the young end. After every change the cache evicts from the old end
until its *charge* fits the budget. The charge is the cached bytes plus `EXTENT_CHARGE`
per extent plus `FILE_CHARGE` per file that has extents: what the bookkeeping really costs
(measured at ~267 B per extent, its last-use stamp included, and ~455 B per file on
CPython 3.11), so that a budget
filled with tiny extents cannot cost many times the budget. Hence at every moment
``bytes_cached <= charge <= budget``, and the memory the cache holds is at most about
1.125 x budget (``bytearray`` over-allocates up to 1/8 when appended to) plus a few
hundred bytes per in-flight request. A file without extents and without requests in
flight is forgotten altogether, EOF knowledge included, so nothing outside the charge
grows with the number of files ever read.

The budget is a `MemoryBudget` (`uvfs._memory`), which the cache shares with the
driver's own caches (metadata blocks, parsed records): after every change the cache calls
`MemoryBudget.settle`, which evicts from whichever member holds the oldest entries, this
cache through `BufferCache.shrink` (down to a charge, and only extents last used before a
given time). For that, every extent carries the `time.monotonic` of its last use, so
`oldest_use` compares across members and across processes: a `MemoryBudget` also shares
its budget with the other processes of the user (`uvfs._budget`; each ``uvfs mount`` is a
process of its own). While that shared pool is ``crowded`` (too far over its budget), a
miss, write or truncate waits in `MemoryBudget.pace` before it answers: after installing,
holding no lock, so only that request waits; hits never do.

A single fill (the gaps one read fetched, or one write) larger than the whole budget only
updates bytes already cached: it is answered, not kept, and does not flush the cache.
Writes are write-through and write-allocate: the written bytes become cached, since a file
just written is often read back (builds, ``cp`` then ``cmp``), and a copy is cheap next to
the driver call. There is no read-ahead: the kernel already reads ahead (``read_ahead_kb``)
and asks in page multiples, so the gaps a read fetches are exactly the missing bytes,
each one fetched as one call, in order.

Locking model
-------------
Everything runs in one trio thread, so a synchronous stretch of code is atomic. Per file,
a `RangeLock` orders the operations that overlap:

* a read that must fetch holds a shared lock on its range across the fetches and until
  it has installed what it fetched. Locks rather than generation numbers, because the
  write path needs the lock anyway (to keep ``store`` and the cache update of one range
  in one order), and then a fetched byte can never be older than a write that finished:
  no write of the range can run while the fetch does. The price is that a write waits
  for slow reads of the same bytes, as it would on a local filesystem;
* a full hit takes no lock: it is answered in one synchronous step, after checking with
  `RangeLock.read_would_block` that no overlapping write holds the range or waits for it
  (so a hit never overtakes a queued writer);
* a write locks ``[offset, offset + len)`` exclusively, or from the known EOF when it
  extends the file (it also changes what lies between the old EOF and `offset`); a
  truncate locks ``[min(size, eof), inf)``, or ``[size, inf)`` when the EOF is unknown,
  in which case no cached byte and no answer depends on the old size. Both recompute the
  range once granted and lock again if the EOF moved below it while they waited. Under
  the lock they call the driver, then update the cache synchronously;
* `invalidate` and `drop_mount` are synchronous and cannot wait for locks: they drop the
  data and bump the file's ``generation``, and an operation in flight installs nothing
  unless the generation it started with is still current;
* EOF knowledge is not protected by the range locks, because a write beyond an unknown
  EOF moves it without touching the reader's range. A read therefore installs the EOF it
  found only if no write or truncate of the file was in flight when it finished
  (``changing``) or finished while it fetched (``epoch``, bumped as each one ends).

Cancellation and failure
------------------------
A read installs only after all its fetches succeeded, so a cancelled or failed fetch
installs nothing; the lock is released on the way out. When ``store`` or ``apply``
fails or is cancelled, the driver's state of the range is unknown, so the file is
invalidated.

Costs
-----
A read checks for cancellation but yields only when it waits (for a range lock, or in the
driver's fetch): pyfuse3's worker loop already yields before taking each request, and a
yield of our own sent every request once more through trio's scheduler (an epoll poll and
a task switch: ~4 us each, more than a whole hit). A full hit then costs a bisection, one
clock read (the extent's last-use stamp, ~0.1 us) and one copy of the bytes returned:
~1.5 us for 4 KiB over the broker without a cache (micro-benchmark on the loaded 2-core
machine). `test_hit_rate` in ``tests/test_cache.py`` measured ~105,000 hits/s of 128 KiB
from a warm cache (~14 GB/s) on the quiet machine, 25,000-35,000 with both cores busy. A
miss adds a range lock taken without a coroutine (`RangeLock.read_nowait`), the fetch,
the copy into its extent and the settling of the budget, which sums the members' charges
only when the fill outgrows the room the last sum left (`MemoryBudget.settle`): ~8.5 us
for 4 KiB, of which ~2.5 us is the kernel faulting in the fresh page the copy lands on
(a cold read grows the cache; ~6 us in a busy server). Fills, evictions and truncates cost
O(log n) to find an extent plus list insertions and deletions, O(n) in the extents of one
file, with n small thanks to merging.
Concurrent reads of the same missing range each fetch it: the second finds nothing
cached yet and is not made to wait for the first.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import TypeVar

import trio

from uvfs._memory import MemoryBudget
from uvfs._rangelock import RangeLock

__all__ = [
    "EXTENT_CHARGE",
    "EXTENT_MAX",
    "FILE_CHARGE",
    "BufferCache",
    "CacheStatistics",
    "FileKey",
]

FileKey = tuple[int, int]  # (mount id, inode)
T = TypeVar("T")

EXTENT_MAX = 1 << 20  # chunk size: extents never cross a multiple of it
EXTENT_CHARGE = 288  # budget bytes charged per extent for its bookkeeping
FILE_CHARGE = 512  # budget bytes charged per file that holds extents


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of the cache's counters, for one mount or for all.

    Attributes:
        hits: reads answered without calling the driver (past a known EOF included).
        misses: reads that called the driver at least once (partial hits included).
        bytes_from_cache: bytes returned by reads out of cached data.
        bytes_from_driver: bytes the driver returned to reads.
        evictions: extents evicted to fit the budget (invalidation and truncation are not
            evictions).
        bytes_cached: data bytes held now.
        budget: the budget of the whole cache, shared by all mounts (the same figure in
            every mount's statistics).
        entries: extents held now.
    """

    hits: int
    misses: int
    bytes_from_cache: int
    bytes_from_driver: int
    evictions: int
    bytes_cached: int
    budget: int
    entries: int


class _Counters:
    """The mutable counters of one mount."""

    __slots__ = (
        "bytes_cached",
        "bytes_from_cache",
        "bytes_from_driver",
        "entries",
        "evictions",
        "hits",
        "misses",
    )

    def __init__(self) -> None:
        self.hits = self.misses = self.evictions = 0
        self.bytes_from_cache = self.bytes_from_driver = 0
        self.bytes_cached = self.entries = 0


_COUNTERS = _Counters.__slots__


class _Extent:
    """Cached bytes ``data`` of `file` from offset `start` on, last used at `used`."""

    __slots__ = ("data", "file", "start", "used")

    def __init__(self, file: _File, start: int, data: bytearray) -> None:
        self.file = file
        self.start = start
        self.data = data
        self.used = 0.0  # last use (time.monotonic), stamped whenever moved to the LRU end


class _File:
    """Everything the cache knows about one file; see the module docstring."""

    __slots__ = (
        "changing",
        "counters",
        "eof",
        "epoch",
        "extents",
        "generation",
        "key",
        "lock",
        "starts",
        "users",
    )

    def __init__(self, key: FileKey, counters: _Counters) -> None:
        self.key = key
        self.counters = counters
        self.lock = RangeLock()
        self.starts: list[int] = []  # extents[i].start, for bisection
        self.extents: list[_Extent] = []
        self.eof: int | None = None
        self.generation = 0  # bumped when the contents are forgotten
        self.changing = 0  # writes and truncates in flight
        self.epoch = 0  # bumped when a write or truncate ends
        self.users = 0  # reads that fetch, writes and truncates in flight

    def change_start(self, start: int, end: float) -> int:
        """Where a change of ``[start, end)`` must lock from: the EOF if it extends past it."""
        eof = self.eof
        return min(start, eof) if eof is not None and end > eof else start


class BufferCache:
    """Offset-range cache of file data for all mounts, within one memory budget.

    Args:
        budget: what cached data and its bookkeeping may cost, for all mounts together
            (see the module docstring): the `MemoryBudget` it shares with the driver's
            caches, or a number of bytes for a budget of its own; 0 caches nothing.
    """

    def __init__(self, budget: MemoryBudget | int) -> None:
        self.memory = budget if isinstance(budget, MemoryBudget) else MemoryBudget(budget)
        self.memory.add(self, "file data")
        self._charge = 0
        self._files: dict[FileKey, _File] = {}
        self._lru: OrderedDict[_Extent, None] = OrderedDict()  # oldest first
        self._mounts: dict[int, _Counters] = {}
        self._retired = _Counters()  # what unmounted mounts counted, for the totals

    # --- the API ----------------------------------------------------------------------------

    async def read(
        self,
        key: FileKey,
        offset: int,
        size: int,
        fetch: Callable[[int, int], Awaitable[bytes]],
    ) -> bytes:
        """Up to `size` bytes of file `key` at `offset`, shorter only at end of file.

        Args:
            key: the file.
            offset: where to start, >= 0.
            size: how much, >= 0.
            fetch: reads from the driver: ``await fetch(off, n)`` returns the `n` bytes at
                `off`, fewer only at end of file. Called only for bytes not cached, once
                per contiguous gap, in order, never past a known EOF.

        Returns:
            The bytes, exactly as the driver would return them now.
        """
        if offset < 0 or size < 0:
            raise ValueError(f"bad read of {size} bytes at {offset}")
        await trio.lowlevel.checkpoint_if_cancelled()  # no yield: see "Costs"
        end = offset + size
        file = self._files.get(key)
        blocked = file is not None and file.lock.read_would_block(offset, end)
        if file is not None and not blocked:
            data = self._hit(file, offset, end)
            if data is not None:
                counters = file.counters
                counters.hits += 1
                counters.bytes_from_cache += len(data)
                return data
        file = self._enter(key)
        lock = file.lock
        try:
            if blocked:
                async with lock.read(offset, end):
                    data = await self._read_locked(file, offset, end, fetch)
            else:
                request = lock.read_nowait(offset, end)
                try:
                    data = await self._read_locked(file, offset, end, fetch)
                finally:
                    lock.release(request)
        finally:
            self._leave(file)
        await self.memory.pace()
        return data

    async def write(
        self,
        key: FileKey,
        offset: int,
        data: bytes,
        store: Callable[[int, bytes], Awaitable[int]],
    ) -> int:
        """Write `data` at `offset` through to the driver, then update the cache.

        Args:
            key: the file.
            offset: where to write, >= 0.
            data: what to write.
            store: writes to the driver: ``await store(offset, data)`` returns the number
                of bytes written.

        Returns:
            What `store` returned.
        """
        if offset < 0:
            raise ValueError(f"bad write at {offset}")

        def update(file: _File, written: int) -> None:
            self._fill(
                file, offset, memoryview(data)[:written], insert=written <= self.memory.budget
            )
            if written and file.eof is not None and offset + written > file.eof:
                file.eof = offset + written

        return await self._change(
            key, offset, offset + len(data), lambda: store(offset, data), update
        )

    async def truncate(self, key: FileKey, size: int, apply: Callable[[], Awaitable[T]]) -> T:
        """Truncate (or extend) file `key` to `size` bytes through `apply`.

        Args:
            key: the file.
            size: the new size, >= 0.
            apply: changes the size in the driver (setattr); its result is returned.

        Returns:
            What `apply` returned.
        """
        if size < 0:
            raise ValueError(f"bad size {size}")
        return await self._change(
            key, size, math.inf, apply, lambda file, _: self._set_eof(file, size)
        )

    def invalidate(self, key: FileKey) -> None:
        """Forget all data and the EOF of file `key` (unlinked, or changed behind our back).

        Operations in flight on the file install nothing of what they read or wrote.
        """
        file = self._files.get(key)
        if file is not None:
            self._forget(file)
            self._discard_if_idle(file)

    def invalidate_mount(self, mount: int) -> None:
        """`invalidate` every file of `mount` (its driver lost changes it had answered)."""
        for key in [key for key in self._files if key[0] == mount]:
            self.invalidate(key)

    def drop_mount(self, mount: int) -> None:
        """Forget every file of `mount` (unmounted); its counters go into the totals."""
        self.invalidate_mount(mount)
        counters = self._mounts.pop(mount, None)
        if counters is not None:
            for name in _COUNTERS:
                setattr(self._retired, name, getattr(self._retired, name) + getattr(counters, name))

    def statistics(self, mount: int | None = None) -> CacheStatistics:
        """The counters of `mount`, or of the whole cache (unmounted mounts included)."""
        if mount is not None:
            parts = [self._mounts.get(mount, _Counters())]
        else:
            parts = [self._retired, *self._mounts.values()]
        totals = {name: sum(getattr(part, name) for part in parts) for name in _COUNTERS}
        return CacheStatistics(budget=self.memory.budget, **totals)

    # --- as a member of its MemoryBudget ----------------------------------------------------

    @property
    def charge(self) -> int:
        """What the cached bytes and their bookkeeping cost now, in budget bytes."""
        return self._charge

    @property
    def oldest_use(self) -> float:
        """When the least recently used extent was last used (`time.monotonic`); inf if none."""
        return next(iter(self._lru)).used if self._lru else math.inf

    def shrink(self, limit: int, *, used_by: float = math.inf) -> int:
        """Evict least recently used extents while the charge exceeds `limit`, as long as
        the oldest was last used at or before `used_by`.

        Returns:
            The charge freed.
        """
        lru = self._lru
        before = self._charge
        while lru and self._charge > limit:
            oldest = next(iter(lru))
            if oldest.used > used_by:
                break
            file = oldest.file
            self._remove(file, bisect_left(file.starts, oldest.start))
            file.counters.evictions += 1
            self._discard_if_idle(file)
        return before - self._charge

    # --- reads ------------------------------------------------------------------------------

    def _hit(self, file: _File, start: int, end: int) -> bytes | None:
        """The bytes of ``[start, end)`` if all of them are cached (up to EOF), else None."""
        eof = file.eof
        if eof is not None and end > eof:
            end = max(start, eof)
        if start == end:
            return b""
        extents = file.extents
        i = bisect_right(file.starts, start) - 1
        if i < 0:
            return None
        extent = extents[i]
        extent_end = extent.start + len(extent.data)
        if end <= extent_end:  # the common case: one extent has it all
            self._lru.move_to_end(extent)
            extent.used = monotonic()
            return bytes(memoryview(extent.data)[start - extent.start : end - extent.start])
        if start >= extent_end:  # the first byte is missing (a sequential reader's next page)
            return None
        segments = list(self._segments(file, start, end))
        if any(extent is None for _, _, extent in segments):
            return None
        now = monotonic()
        for _, _, extent in segments:
            self._lru.move_to_end(extent)
            extent.used = now
        return b"".join(
            memoryview(e.data)[pos - e.start : stop - e.start] for pos, stop, e in segments
        )

    def _segments(
        self, file: _File, start: int, end: int
    ) -> Iterator[tuple[int, int, _Extent | None]]:
        """``[start, end)`` cut into cached pieces (with their extent) and gaps (None)."""
        extents = file.extents
        i = bisect_right(file.starts, start) - 1
        if i < 0 or extents[i].start + len(extents[i].data) <= start:
            i += 1
        # From here on extents[i], if any, holds pos or starts after it.
        pos = start
        while pos < end:
            if i < len(extents) and extents[i].start <= pos:
                extent = extents[i]
                stop = min(end, extent.start + len(extent.data))
                yield pos, stop, extent
                i += 1
            else:
                stop = min(end, extents[i].start) if i < len(extents) else end
                yield pos, stop, None
            pos = stop

    async def _read_locked(
        self,
        file: _File,
        start: int,
        end: int,
        fetch: Callable[[int, int], Awaitable[bytes]],
    ) -> bytes:
        """A read that may fetch, under the shared lock of ``[start, end)``."""
        if file.eof is not None:
            end = max(start, min(end, file.eof))
        plan = self._plan(file, start, end)
        generation, epoch = file.generation, file.epoch
        parts: list[bytes] = []
        fetched: list[tuple[int, bytes]] = []
        from_cache = from_driver = 0
        found_eof = None
        for step in plan:
            if isinstance(step, bytes):
                parts.append(step)
                from_cache += len(step)
                continue
            off, size = step
            got = await fetch(off, size)
            if len(got) > size:
                raise ValueError(f"fetch({off}, {size}) returned {len(got)} bytes")
            parts.append(got)
            fetched.append((off, got))
            from_driver += len(got)
            if len(got) < size:
                # The file ends here, and we know exactly where if we hold the byte before
                # (an empty answer at `off` only says that the end is not after `off`).
                if got or off == 0 or len(parts) > 1:
                    found_eof = off + len(got)
                break
        counters = file.counters
        counters.bytes_from_driver += from_driver
        counters.bytes_from_cache += from_cache
        if fetched:
            counters.misses += 1
        else:
            counters.hits += 1
        if file.generation == generation:
            before = self._charge
            insert = from_driver <= self.memory.budget
            for off, got in fetched:
                self._fill(file, off, got, insert=insert)
            if found_eof is not None and file.changing == 0 and file.epoch == epoch:
                self._set_eof(file, found_eof)
            self._evict(before)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _plan(self, file: _File, start: int, end: int) -> list[bytes | tuple[int, int]]:
        """``[start, end)`` as the cached bytes, copied now (eviction may drop them while
        a fetch waits), and the gaps to fetch, ``(offset, size)``, in order."""
        if start == end:
            return []
        i = bisect_right(file.starts, start)
        if i == len(file.starts) or file.starts[i] >= end:  # no extent starts inside
            if not i:
                return [(start, end - start)]
            extent = file.extents[i - 1]
            if extent.start + len(extent.data) <= start:  # nor holds the first byte
                return [(start, end - start)]
        plan: list[bytes | tuple[int, int]] = []
        now = monotonic()
        for pos, stop, extent in self._segments(file, start, end):
            if extent is None:
                plan.append((pos, stop - pos))
            else:
                plan.append(
                    bytes(memoryview(extent.data)[pos - extent.start : stop - extent.start])
                )
                self._lru.move_to_end(extent)
                extent.used = now
        return plan

    # --- writes and truncates ---------------------------------------------------------------

    async def _change(
        self,
        key: FileKey,
        start: int,
        end: float,
        call: Callable[[], Awaitable[T]],
        update: Callable[[_File, T], None],
    ) -> T:
        """Run `call` (the driver) under the exclusive lock of what it changes, then
        `update` the cache, unless the file was invalidated meanwhile."""
        file = self._enter(key)
        file.changing += 1
        try:
            while True:
                low = file.change_start(start, end)
                async with file.lock.write(low, end):
                    if file.change_start(start, end) < low:
                        continue  # the EOF moved below our range while we waited
                    generation = file.generation
                    try:
                        result = await call()
                    except BaseException:
                        self._forget(file)
                        raise
                    if file.generation == generation:
                        before = self._charge
                        update(file, result)
                        self._evict(before)
                    break
        finally:
            file.changing -= 1
            file.epoch += 1
            self._leave(file)
        await self.memory.pace()
        return result

    def _set_eof(self, file: _File, eof: int) -> None:
        """The file ends at `eof`: drop the cached bytes at or past it."""
        file.eof = eof
        extents = file.extents
        first = bisect_left(file.starts, eof)
        while len(extents) > first:
            self._remove(file, len(extents) - 1)
        if first:
            extent = extents[first - 1]
            over = extent.start + len(extent.data) - eof
            if over > 0:
                del extent.data[eof - extent.start :]
                self._account(file, -over)

    # --- extents ----------------------------------------------------------------------------

    def _fill(self, file: _File, offset: int, data: memoryview | bytes, *, insert: bool) -> None:
        """Make the cached bytes of ``[offset, offset + len(data))`` equal `data`.

        Cached bytes are overwritten in place; missing ones are added (merging with their
        neighbours) only when `insert`.
        """
        view = memoryview(data)
        end = offset + len(view)
        starts, extents = file.starts, file.extents
        pos = offset
        while pos < end:
            i = bisect_right(starts, pos)
            if i:
                extent = extents[i - 1]
                extent_end = extent.start + len(extent.data)
                if pos < extent_end:
                    stop = min(end, extent_end)
                    extent.data[pos - extent.start : stop - extent.start] = view[
                        pos - offset : stop - offset
                    ]
                    self._lru.move_to_end(extent)
                    extent.used = monotonic()
                    pos = stop
                    continue
            stop = min(end, (pos // EXTENT_MAX + 1) * EXTENT_MAX)
            if i < len(starts):
                stop = min(stop, starts[i])
            if insert:
                self._insert(file, i, pos, view[pos - offset : stop - offset])
            pos = stop

    def _insert(self, file: _File, i: int, start: int, piece: memoryview) -> None:
        """Add `piece` at `start`, a gap in one chunk before ``extents[i]``; merge."""
        extents = file.extents
        end = start + len(piece)
        left = right = None
        if i and start % EXTENT_MAX:
            left = extents[i - 1]
            if left.start + len(left.data) != start:
                left = None
        if i < len(extents) and end % EXTENT_MAX and extents[i].start == end:
            right = extents[i]
        if left is not None:
            left.data += piece
            if right is not None:
                self._remove(file, i)
                left.data += right.data
                self._account(file, len(right.data))
            extent = left
            self._lru.move_to_end(extent)
        elif right is not None:
            right.data[0:0] = piece
            right.start = file.starts[i] = start
            extent = right
            self._lru.move_to_end(extent)
        else:
            if not extents:
                self._charge += FILE_CHARGE
            extent = _Extent(file, start, bytearray(piece))
            file.starts.insert(i, start)
            extents.insert(i, extent)
            file.counters.entries += 1
            self._charge += EXTENT_CHARGE
            self._lru[extent] = None  # new: at the young end
        extent.used = monotonic()
        self._account(file, len(piece))

    def _remove(self, file: _File, i: int) -> None:
        """Drop ``extents[i]`` from the file, the LRU list and the accounts."""
        extent = file.extents.pop(i)
        del file.starts[i]
        del self._lru[extent]
        file.counters.entries -= 1
        self._charge -= EXTENT_CHARGE
        if not file.extents:
            self._charge -= FILE_CHARGE
        self._account(file, -len(extent.data))

    def _account(self, file: _File, nbytes: int) -> None:
        file.counters.bytes_cached += nbytes
        self._charge += nbytes

    def _evict(self, before: int) -> None:
        """The charge was `before` at the start of this synchronous stretch: evict the least
        recently used entries of the budget's members (this cache's extents, the driver's
        entries) until the budget fits, then tell the shared pool."""
        self.memory.settle(max(0, self._charge - before))

    def _forget(self, file: _File) -> None:
        """Drop all of the file's data and EOF; in-flight operations will install nothing."""
        while file.extents:
            self._remove(file, len(file.extents) - 1)
        file.eof = None
        file.generation += 1

    # --- files ------------------------------------------------------------------------------

    def _enter(self, key: FileKey) -> _File:
        """The file, created if need be, with one more operation in flight."""
        file = self._files.get(key)
        if file is None:
            counters = self._mounts.setdefault(key[0], _Counters())
            file = self._files[key] = _File(key, counters)
        file.users += 1
        return file

    def _leave(self, file: _File) -> None:
        file.users -= 1
        self._discard_if_idle(file)

    def _discard_if_idle(self, file: _File) -> None:
        if not file.users and not file.extents:
            del self._files[file.key]
