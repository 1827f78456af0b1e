"""Range-lock semantics: sharing, exclusion, FIFO fairness, cancellation, checkpoints."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing

from uvfs._rangelock import RangeLock, RangeLockStatistics


class Log:
    """Tasks that take a lock, note when they got it, and hold it until told to go."""

    def __init__(self, lock: RangeLock, nursery: trio.Nursery) -> None:
        self.lock = lock
        self.nursery = nursery
        self.granted: list[str] = []
        self._release: dict[str, trio.Event] = {}

    def start(self, name: str, mode: str, start: int, end: float) -> None:
        release = self._release[name] = trio.Event()

        async def hold() -> None:
            async with getattr(self.lock, mode)(start, end):
                self.granted.append(name)
                await release.wait()

        self.nursery.start_soon(hold, name=name)

    def release(self, name: str) -> None:
        self._release[name].set()


async def settle_with(log: Log, *steps: tuple[str, str, int, float]) -> None:
    for step in steps:
        log.start(*step)
        await trio.testing.wait_all_tasks_blocked()


def stats(held: int, waiting: int) -> RangeLockStatistics:
    return RangeLockStatistics(held=held, waiting=waiting)


async def test_readers_share_and_disjoint_writers_run_together() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(
            log,
            ("r1", "read", 0, 100),
            ("r2", "read", 50, 150),
            ("w1", "write", 150, 200),
            ("w2", "write", 200, math.inf),
        )
        assert log.granted == ["r1", "r2", "w1", "w2"]
        assert lock.statistics() == stats(4, 0)
        for name in ("r1", "r2", "w1", "w2"):
            log.release(name)
    assert lock.statistics() == stats(0, 0)


async def test_writer_excludes_overlaps_in_arrival_order() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(
            log,
            ("w1", "write", 10, 20),
            ("r1", "read", 19, 30),  # touches w1's last byte
            ("w2", "write", 0, 11),  # touches w1's first byte
            ("r2", "read", 20, 25),  # adjacent to w1 (half-open): only behind nobody
        )
        assert log.granted == ["w1", "r2"]
        assert lock.statistics() == stats(2, 2)
        log.release("w1")
        await trio.testing.wait_all_tasks_blocked()
        # Both were behind w1 only; trio may run the two woken tasks in either order.
        assert log.granted[:2] == ["w1", "r2"]
        assert sorted(log.granted[2:]) == ["r1", "w2"]
        for name in ("r1", "r2", "w2"):
            log.release(name)


async def test_waiting_writer_is_not_starved_by_later_readers() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(
            log,
            ("r1", "read", 0, 10),
            ("w", "write", 5, 15),
            ("r2", "read", 8, 9),  # only readers hold [8, 9), but w came first
            ("r3", "read", 0, 5),  # does not touch w's range: no reason to wait
        )
        assert log.granted == ["r1", "r3"]
        log.release("r1")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["r1", "r3", "w"]
        log.release("w")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["r1", "r3", "w", "r2"]
        log.release("r2")
        log.release("r3")


async def test_writer_waits_for_reader_that_came_first_too() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(
            log,
            ("w1", "write", 0, 10),
            ("r", "read", 0, 10),
            ("w2", "write", 0, 10),
        )
        log.release("w1")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["w1", "r"]
        log.release("r")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["w1", "r", "w2"]
        log.release("w2")


async def test_infinite_range_covers_everything_after_start() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(
            log,
            ("trunc", "write", 100, math.inf),
            ("far", "read", 10**15, 10**15 + 1),
            ("before", "read", 0, 100),
        )
        assert log.granted == ["trunc", "before"]
        log.release("trunc")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["trunc", "before", "far"]
        log.release("far")
        log.release("before")


async def test_empty_range_never_waits() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(log, ("all", "write", 0, math.inf), ("empty", "write", 50, 50))
        assert log.granted == ["all", "empty"]
        log.release("all")
        log.release("empty")


async def test_cancelled_waiter_leaves_no_trace() -> None:
    lock = RangeLock()
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(log, ("r1", "read", 0, 5))
        scope = trio.CancelScope()
        reached = []

        async def doomed_writer() -> None:
            with scope:
                async with lock.write(0, 20):
                    reached.append("w")  # pragma: no cover - must never run

        nursery.start_soon(doomed_writer)
        await trio.testing.wait_all_tasks_blocked()
        # r2 waits only because the writer came first; r1 still holds [0, 5).
        await settle_with(log, ("r2", "read", 10, 15), ("w3", "write", 3, 4))
        assert log.granted == ["r1"]
        assert lock.statistics() == stats(1, 3)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert scope.cancelled_caught
        assert log.granted == ["r1", "r2"]
        assert lock.statistics() == stats(2, 1)
        log.release("r1")
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["r1", "r2", "w3"]
        log.release("r2")
        log.release("w3")
    assert reached == []
    assert lock.statistics() == stats(0, 0)


async def test_cancelled_holder_releases(autojump_clock: trio.testing.MockClock) -> None:
    lock = RangeLock()
    with trio.move_on_after(1):
        async with lock.write(0, 10):
            await trio.sleep_forever()
    assert lock.statistics() == stats(0, 0)
    async with lock.write(0, 10):
        pass


async def test_timeout_while_waiting(autojump_clock: trio.testing.MockClock) -> None:
    lock = RangeLock()
    async with lock.write(0, 10):
        with trio.move_on_after(5) as scope:
            async with lock.read(9, 10):
                raise AssertionError("granted while a writer holds the range")
        assert scope.cancelled_caught
        assert trio.current_time() == 5
        assert lock.statistics() == stats(1, 0)


async def test_acquire_checks_for_cancellation_and_yields_only_to_wait() -> None:
    lock = RangeLock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)  # runs at our next yield
        hold = lock.read(0, 1)
        await hold.__aenter__()
        assert ran == []  # granted at once: no yield
        with trio.testing.assert_no_checkpoints():
            await hold.__aexit__(None, None, None)
    assert ran == ["other"]
    with trio.CancelScope() as scope:
        scope.cancel()
        async with lock.write(0, 1):
            raise AssertionError("an uncontended acquire must still check for cancellation")
    assert lock.statistics() == stats(0, 0)


async def test_read_would_block() -> None:
    lock = RangeLock()
    assert not lock.read_would_block(0, 10)
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(log, ("r", "read", 0, 100), ("w", "write", 5, 10))
        assert log.granted == ["r"]
        # Only the waiting writer matters: readers share, and a new one would queue behind it.
        assert lock.read_would_block(0, 6)
        assert not lock.read_would_block(0, 5)
        assert not lock.read_would_block(10, 100)
        assert not lock.read_would_block(7, 7)
        log.release("r")
        await trio.testing.wait_all_tasks_blocked()
        assert lock.read_would_block(9, 10)
        log.release("w")
    assert not lock.read_would_block(0, math.inf)


async def test_read_nowait_grants_at_once_or_would_block_and_release_wakes_waiters() -> None:
    lock = RangeLock()
    first = lock.read_nowait(0, 100)
    second = lock.read_nowait(50, 60)  # readers share
    assert lock.statistics() == stats(2, 0)
    async with trio.open_nursery() as nursery:
        log = Log(lock, nursery)
        await settle_with(log, ("w", "write", 90, 200))
        assert log.granted == []
        with pytest.raises(trio.WouldBlock):
            lock.read_nowait(150, 160)  # would overtake the waiting writer
        assert lock.statistics() == stats(2, 1)
        lock.release(first)
        await trio.testing.wait_all_tasks_blocked()
        assert log.granted == ["w"]  # the second reader's range does not overlap it
        log.release("w")
    lock.release(second)
    assert lock.statistics() == stats(0, 0)


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4)])
def test_bad_ranges(start: int, end: int) -> None:
    lock = RangeLock()
    with pytest.raises(ValueError, match="bad range"):
        lock.read(start, end)
    with pytest.raises(ValueError, match="bad range"):
        lock.write(start, end)


async def test_random_workload_is_exclusive_and_fifo(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Random requests, holds and cancellations: no conflicting holders ever, and
    conflicting requests that both got the lock got it in arrival order."""
    lock = RangeLock()
    rng = random.Random(7)
    held: dict[int, tuple[int, float, bool]] = {}
    requests: list[tuple[int, float, bool]] = []  # by arrival
    granted: list[int] = []  # request numbers by grant

    def conflict(a: tuple[int, float, bool], b: tuple[int, float, bool]) -> bool:
        return (a[2] or b[2]) and a[0] < b[1] and b[0] < a[1]

    async def client() -> None:
        start = rng.randrange(64)
        end = math.inf if rng.random() < 0.1 else start + rng.randrange(1, 16)
        me = (start, end, rng.random() < 0.4)
        ident = len(requests)
        requests.append(me)
        with trio.move_on_after(rng.choice([0.5, 3, 100])):
            async with (lock.write if me[2] else lock.read)(start, end):
                assert not any(conflict(me, other) for other in held.values())
                granted.append(ident)
                held[ident] = me
                try:
                    await trio.sleep(rng.random() * 2)
                finally:
                    del held[ident]

    async with trio.open_nursery() as nursery:
        for _ in range(400):
            nursery.start_soon(client)
            await trio.sleep(rng.random() * 0.05)
    assert lock.statistics() == stats(0, 0)
    assert 100 < len(granted) < 400  # some were cancelled while waiting, most got through
    for i, a in enumerate(granted):
        for b in granted[i + 1 :]:
            assert not (conflict(requests[a], requests[b]) and b < a)
