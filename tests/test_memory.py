"""One memory budget for a server's caches: drivers' `ChargedLRU` maps and the broker's
buffer cache evict as one merged LRU list, within the budget and any capacity of their own;
the budget pickles to a fresh one and is shared across processes through the table."""

from __future__ import annotations

import itertools
import pickle
import random
from functools import partial
from pathlib import Path

import pytest
import trio

from uvfs import ChargedLRU, MemoryBudget, MountOptions, _cache, _memory
from uvfs._budget import BudgetTable, share_budget
from uvfs._cache import EXTENT_CHARGE, FILE_CHARGE, BufferCache
from uvfs._memory import DEFAULT_BUDGET, ENTRY_CHARGE

W = 1000  # the weight of one test entry
E = W + ENTRY_CHARGE  # what it charges


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every use reads a later time, so the order of uses is the order of the calls."""
    ticks = itertools.count(1.0)
    monkeypatch.setattr(_memory, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(_cache, "monotonic", lambda: next(ticks))


def keys(lru: ChargedLRU) -> list:
    return list(lru._items)


def test_an_entry_charges_its_weight_and_its_bookkeeping() -> None:
    memory = MemoryBudget(10 * E)
    lru: ChargedLRU[str, bytes] = memory.lru("blocks")
    lru.put("a", b"x", W)
    lru.put("b", b"y", W)
    lru.put("a", b"z", 2 * W)  # replaced: charged once, at its new weight
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (b"z", b"y", None, 2)
    assert lru.charge == memory.charge == 3 * W + 2 * ENTRY_CHARGE
    assert lru.pop("a") == b"z" and lru.pop("a") is None
    assert memory.statistics() == _memory.MemoryStatistics(
        10 * E, E, {"blocks": E}, {"blocks": 3 * W + 2 * ENTRY_CHARGE}
    )
    lru.clear()
    assert (len(lru), memory.charge) == (0, 0)


def test_members_evict_as_one_merged_lru_list() -> None:
    memory = MemoryBudget(4 * E + E // 2)  # a batch (1/64 of it) is less than half an entry
    meta: ChargedLRU[str, int] = memory.lru("meta")
    data: ChargedLRU[str, int] = memory.lru("data")
    meta.put("m1", 1, W)
    data.put("d1", 1, W)
    meta.put("m2", 2, W)
    data.put("d2", 2, W)
    assert meta.get("m1") == 1  # now the youngest of all: d1 is the oldest
    data.put("d3", 3, W)
    assert (keys(meta), keys(data)) == (["m2", "m1"], ["d2", "d3"])
    meta.put("m3", 3, W)  # m2 is the oldest now
    data.put("d4", 4, W)  # then d2
    assert (keys(meta), keys(data)) == (["m1", "m3"], ["d3", "d4"])
    assert memory.charge == 4 * E


def test_the_buffer_cache_and_a_driver_cache_share_the_budget() -> None:
    extent = 4000 + EXTENT_CHARGE + FILE_CHARGE  # one file, one extent of 4000 bytes
    memory = MemoryBudget(extent + 2 * E + E // 2)
    cache = BufferCache(memory)
    blocks: ChargedLRU[int, bytes] = memory.lru("zfs metadata")
    blocks.put(1, b"", W)

    async def read() -> None:
        async def fetch(off: int, size: int) -> bytes:
            return bytes(size)

        await cache.read((0, 1), 0, 4000, fetch)

    trio.run(read)
    blocks.put(2, b"", W)
    assert (keys(blocks), cache.charge) == ([1, 2], extent)  # all of it fits
    blocks.put(3, b"", W)  # block 1 is the oldest entry of all
    assert (keys(blocks), cache.charge) == ([2, 3], extent)
    blocks.get(2)
    blocks.get(3)
    blocks.put(4, b"", W)  # now the file's extent is the oldest
    assert (keys(blocks), cache.charge, cache.statistics().evictions) == ([2, 3, 4], 0, 1)
    assert memory.statistics().caches == {"file data": 0, "zfs metadata": 3 * E}
    assert cache.statistics().budget == extent + 2 * E + E // 2


async def test_fills_within_the_room_of_the_last_sum_keep_the_budget_at_every_moment() -> None:
    """Broker fills settle against the room the last sum of the charges left, not a new sum;
    driver puts, pops, invalidations and shrinks by other processes interleave: after each
    step the members' total is within the budget, and a fill evicts only what it must."""
    memory = MemoryBudget(40_000)
    cache = BufferCache(memory)
    blocks: ChargedLRU[int, bytes] = memory.lru("zfs metadata")
    rng = random.Random(11)

    async def fetch(off: int, size: int) -> bytes:
        return bytes(size)

    for step in range(3000):
        action = rng.random()
        if action < 0.5:
            evicted = cache.statistics().evictions
            before = memory.charge
            start = rng.randrange(0, 60_000)
            await cache.read((0, rng.randrange(3)), start, rng.randrange(1, 5000), fetch)
            if cache.statistics().evictions > evicted:  # evicted: the budget had no room
                assert before + 5000 + EXTENT_CHARGE + FILE_CHARGE > memory.budget, step
        elif action < 0.8:
            blocks.put(rng.randrange(50), b"", rng.randrange(2000))
        elif action < 0.9:
            blocks.pop(rng.randrange(50))
        elif action < 0.95:
            cache.invalidate((0, rng.randrange(3)))
        else:
            memory.shrink(memory.charge // 2)  # another process asked for room
        assert memory.charge <= memory.budget, step


def test_a_capacity_bounds_one_member_within_the_budget() -> None:
    memory = MemoryBudget(100 * E)
    brief: ChargedLRU[int, int] = memory.lru("brief", capacity=2 * E)
    kept: ChargedLRU[int, int] = memory.lru("kept")
    kept.put(0, 0, W)
    for i in range(5):
        brief.put(i, i, W)
    assert (keys(brief), keys(kept), memory.statistics().peaks["brief"]) == ([3, 4], [0], 2 * E)


def test_a_budget_of_zero_keeps_nothing_and_an_entry_over_a_bound_is_not_kept() -> None:
    lru: ChargedLRU[int, int] = MemoryBudget(0).lru("none")
    lru.put(1, 1, W)
    assert (lru.get(1), lru.charge) == (None, 0)
    small: ChargedLRU[int, int] = MemoryBudget(E).lru("small")
    small.put(1, 1, W)
    small.put(2, 2, 2 * W)  # too big for the whole budget: not kept, and nothing goes for it
    small.put(1, 3, W)
    assert (keys(small), small.charge) == ([1], E)
    capped: ChargedLRU[int, int] = MemoryBudget(10 * E).lru("capped", capacity=E)
    capped.put(1, 1, 2 * W)
    assert len(capped) == 0


def test_dropped_members_no_longer_count() -> None:
    memory = MemoryBudget(10 * E)
    lru: ChargedLRU[int, int] = memory.lru("gone")
    lru.put(1, 1, W)
    del lru
    assert (memory.charge, memory.statistics().caches) == (0, {})


def test_a_pickled_budget_is_a_fresh_one_of_the_same_size() -> None:
    memory = MemoryBudget(12345)
    memory.lru("x").put(1, 1, W)
    options = pickle.loads(pickle.dumps(MountOptions(memory=memory)))
    assert (options.memory.budget, options.memory.charge) == (12345, 0)
    assert options.memory is not memory
    assert MountOptions().memory.budget == DEFAULT_BUDGET
    assert MountOptions().memory is not MountOptions().memory  # one per open, not shared


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="negative cache budget -1"):
        MemoryBudget(-1)


async def test_a_driver_cache_charges_the_budget_shared_across_processes(tmp_path: Path) -> None:
    memory = MemoryBudget(10 * E)
    lru: ChargedLRU[int, int] = memory.lru("zfs metadata")
    with BudgetTable(tmp_path / "b") as table:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(share_budget, memory, path=tmp_path / "b"))
            lru.put(1, 1, W)
            lru.put(2, 2, W)
            assert (table.charge[0], table.oldest[0]) == (2 * E, memory.oldest_use)
            assert table.asked[0] == 10 * E
            # Another process asks the table to make room: the oldest entry goes.
            assert memory.shrink(E) == E and keys(lru) == [2]
            nursery.cancel_scope.cancel()


class Pool:
    """A fake shared pool: counts how often it hears that the charge grew."""

    crowded = False

    def __init__(self) -> None:
        self.heard = 0

    def grown(self) -> None:
        self.heard += 1

    async def wait_room(self) -> None:
        raise AssertionError("never crowded")


def test_the_pool_hears_of_driver_puts_once_they_add_up() -> None:
    memory = MemoryBudget(int(10 * E / _memory.BATCH_FRACTION))  # it hears every 10 entries
    pool = Pool()
    memory.join(pool)
    lru: ChargedLRU[int, int] = memory.lru("walk")
    for i in range(10):
        lru.put(i, i, W)
    assert pool.heard == 0
    lru.put(10, 10, W)
    assert pool.heard == 1
    memory.settle(0)  # a broker fill: heard at once, and the count starts again
    for i in range(10):
        lru.put(100 + i, i, W)
    assert pool.heard == 2


def test_a_driver_put_over_the_budget_evicts_a_batch() -> None:
    memory = MemoryBudget(128 * E)  # a batch is two entries
    lru: ChargedLRU[int, int] = memory.lru("walk")
    for i in range(128):
        lru.put(i, i, W)
    assert len(lru) == 128  # the budget, exactly
    lru.put(128, 128, W)  # over: down to 126 entries, the three oldest gone
    assert (len(lru), keys(lru)[0]) == (126, 3)
    lru.put(129, 129, W)
    lru.put(130, 130, W)  # the room the batch left
    assert (len(lru), keys(lru)[0]) == (128, 3)
