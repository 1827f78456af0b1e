"""Byte-range reader/writer locks for one file, fair and cancellation-safe.

Theory of operation
===================

A `RangeLock` guards the bytes of one file. A request names a half-open range
``[start, end)`` (``end`` may be ``math.inf``: "to end of file and beyond", which truncates
and file-extending writes need) and a mode: shared (`RangeLock.read`) or exclusive
(`RangeLock.write`). Two requests *conflict* when their ranges overlap and at least one is
exclusive. Empty ranges overlap nothing, so they never wait.

The rules, in one sentence: **a request is granted as soon as it conflicts with no request
that arrived before it, held or still waiting.** Every request, granted or not, sits in one
queue in arrival order. From that rule follow:

* concurrency: requests for disjoint ranges, and shared requests for any ranges, never
  wait for each other;
* FIFO fairness for conflicting requests: a reader that arrives after a waiting writer of
  an overlapping range queues behind it, so a stream of readers cannot starve a writer
  (nor a stream of writers a reader). Unlike a "phase-fair" lock, a later reader is never
  granted ahead of an earlier conflicting writer, so the order in which the cache sees
  operations on one range is exactly their arrival order;
* no deadlock among tasks that hold at most one request per lock at a time: a request only
  ever waits for earlier ones, so the wait-for graph has no cycles.

When a request goes away (released, or its waiter cancelled), only the waiters it
conflicted with can have become grantable; those are re-examined in queue order and woken.
A cancelled waiter is removed in the abort callback, before anything else can run, so it
leaves no trace: it is never granted afterwards and whoever waited behind it only because
of it is woken at once.

`read_would_block` answers, without queueing, whether a shared request would be granted
now: a caller whose critical section never yields (the cache's full hit) needs no request.

Costs: with *n* requests in the queue, acquiring is O(n) and a release re-examines up to
*n* waiters against up to *n* earlier requests, O(n^2). For the broker, *n* is the number of
concurrent requests on one file, a handful at most. The same rule is what the Linux range
locks proposed by Jan Kara (2013) and Davidlohr Bueso (2017, "locking: Introduce range
reader/writer lock") implement with an interval tree and a per-waiter count of blocking
earlier requests, O(log n) per operation; at our queue lengths that would not pay off.

Acquiring always checks for cancellation, but yields only when it must wait: unlike
trio's own `Lock`, an uncontended acquire is no schedule point. Its one user is the buffer
cache, whose requests come from pyfuse3's worker loop, which yields before taking each
request; a yield per acquire sent every cache miss once more through trio's scheduler (an
epoll poll and a task switch). `read_nowait` grants without a context manager or coroutine
at all, for a caller that has just checked for cancellation itself. Releasing is
synchronous and never yields. The design follows ``trio/_core/_parking_lot.py``: waiters
park with `trio.lowlevel.wait_task_rescheduled` and the lock reschedules them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import trio

__all__ = ["RangeLock", "RangeLockStatistics"]


@dataclass(frozen=True, slots=True)
class RangeLockStatistics:
    """A snapshot of a `RangeLock`.

    Attributes:
        held: requests currently granted.
        waiting: requests queued and not yet granted.
    """

    held: int
    waiting: int


class _Request:
    """One request in the queue; ``task`` is the parked task, None once granted."""

    __slots__ = ("end", "exclusive", "start", "task")

    def __init__(self, start: int, end: float, exclusive: bool) -> None:
        self.start = start
        self.end = end
        self.exclusive = exclusive
        self.task: trio.lowlevel.Task | None = None

    def conflicts(self, start: int, end: float, exclusive: bool) -> bool:
        return (
            (exclusive or self.exclusive)
            and self.start < end
            and start < self.end
            and start < end
            and self.start < self.end
        )


class _Hold:
    """The async context manager returned by `RangeLock.read` and `RangeLock.write`."""

    __slots__ = ("_lock", "_request")

    def __init__(self, lock: RangeLock, request: _Request) -> None:
        self._lock = lock
        self._request = request

    async def __aenter__(self) -> None:
        await self._lock._acquire(self._request)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._remove(self._request)


class RangeLock:
    """Shared and exclusive locks on byte ranges of one file; see the module docstring.

    Example::

        async with lock.write(offset, offset + len(data)):
            await driver.write(...)
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: list[_Request] = []  # arrival order, granted and waiting alike

    def read(self, start: int, end: float) -> _Hold:
        """Hold ``[start, end)`` shared: concurrently with other readers, not with writers.

        Args:
            start: first byte, >= 0.
            end: one past the last byte, >= `start`; may be ``math.inf``.

        Returns:
            An async context manager that acquires on entry and releases on exit.
        """
        return _Hold(self, self._request(start, end, exclusive=False))

    def write(self, start: int, end: float) -> _Hold:
        """Hold ``[start, end)`` exclusively: alone among all overlapping requests.

        Args:
            start: first byte, >= 0.
            end: one past the last byte, >= `start`; ``math.inf`` for truncate and append.

        Returns:
            An async context manager that acquires on entry and releases on exit.
        """
        return _Hold(self, self._request(start, end, exclusive=True))

    def read_would_block(self, start: int, end: float) -> bool:
        """Whether `read` of ``[start, end)`` entered now would have to wait.

        The cache uses this to answer a full hit synchronously: when a shared request would
        be granted at once, a critical section that never yields needs no request at all.
        """
        queue = self._queue
        return bool(queue) and any(r.conflicts(start, end, False) for r in queue)

    def read_nowait(self, start: int, end: float) -> _Request:
        """Hold ``[start, end)`` shared now, without checkpoint; give it back with `release`.

        The twin of `read` for a caller that has just checked for cancellation: it spares
        the context manager and its coroutines, a few microseconds per cache miss.

        Raises:
            trio.WouldBlock: `read` would have to wait.
        """
        request = self._request(start, end, exclusive=False)
        if self._blocked(request, len(self._queue)):
            raise trio.WouldBlock
        self._queue.append(request)
        return request

    def release(self, request: _Request) -> None:
        """Give back what `read_nowait` granted."""
        self._remove(request)

    def statistics(self) -> RangeLockStatistics:
        """How many requests are held and how many wait."""
        waiting = sum(r.task is not None for r in self._queue)
        return RangeLockStatistics(held=len(self._queue) - waiting, waiting=waiting)

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _request(start: int, end: float, exclusive: bool) -> _Request:
        if not 0 <= start <= end:
            raise ValueError(f"bad range [{start}, {end})")
        return _Request(start, end, exclusive)

    def _blocked(self, request: _Request, before: int) -> bool:
        """Whether `request` conflicts with any of the first `before` requests in the queue."""
        queue = self._queue
        return before > 0 and any(
            queue[i].conflicts(request.start, request.end, request.exclusive) for i in range(before)
        )

    async def _acquire(self, request: _Request) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        blocked = self._blocked(request, len(self._queue))
        self._queue.append(request)
        if not blocked:
            return
        request.task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            # Still waiting (trio calls this only before we are rescheduled): vanish now,
            # so nothing can grant us later and those queued behind us move up.
            self._remove(request)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _remove(self, request: _Request) -> None:
        """Drop a granted or waiting request and wake the waiters it alone held back."""
        queue = self._queue
        if queue[-1] is request:  # the common case: the newest, or the only one
            queue.pop()
            gone = len(queue)
        else:
            gone = queue.index(request)
            del queue[gone]
        for i in range(gone, len(queue)):
            waiter = queue[i]
            if (
                waiter.task is not None
                and request.conflicts(waiter.start, waiter.end, waiter.exclusive)
                and not self._blocked(waiter, i)
            ):
                task, waiter.task = waiter.task, None
                trio.lowlevel.reschedule(task)
