"""The cache budget shared by processes: the table (slots, dead owners, concurrent claims),
who evicts (the oldest tail, as one merged LRU list would), the slack, the bound under a
random load of real processes, and two real mounts sharing one budget."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.conftest import need, run_uvfs
from uvfs._budget import (
    PATIENCE,
    SLACK_FRACTION,
    SLOTS,
    BudgetTable,
    _start_time,
    share_budget,
)
from uvfs._cache import EXTENT_CHARGE, EXTENT_MAX, FILE_CHARGE, BufferCache

PIECE = 64 << 10  # one extent per read when reads start at multiples of EXTENT_MAX
REPO = Path(__file__).parent.parent


@contextmanager
def inbox() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        yield sock


async def fetch(off: int, size: int) -> bytes:
    await trio.lowlevel.checkpoint()
    return bytes(size)


def extents(cache: BufferCache) -> list[tuple[int, int]]:
    """The extents of a cache as (inode, start), from least to most recently used."""
    return [(e.file.key[1], e.start) for e in cache._lru]


@asynccontextmanager
async def sharing(path: Path, *caches: BufferCache) -> AsyncIterator[None]:
    """Each cache in the table at `path`, as if each were a process of its own."""
    async with trio.open_nursery() as nursery:
        for cache in caches:
            await nursery.start(partial(share_budget, cache.memory, path=path))
        yield
        nursery.cancel_scope.cancel()


async def settled(table: BudgetTable, budget: int) -> None:
    """Wait (briefly) until the published total fits `budget`: the nudged have evicted."""
    with trio.fail_after(5):
        while int(table.charge.sum()) > budget:
            await trio.sleep(0.001)


# --- the table --------------------------------------------------------------------------------


def test_a_slot_is_claimed_then_freed(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with BudgetTable(path) as table, inbox() as first, inbox() as second:
        assert table.claim(5000, first) == 0
        row = [x[0].item() for x in (table.pid, table.started, table.asked, table.charge)]
        assert row == [os.getpid(), _start_time(os.getpid()), 5000, 0]
        assert table.oldest[0] == math.inf
        assert first.getsockname() == f"{path}.0"
        assert table.claim(7000, second) == 1
        table.release(0)
        assert table.pid[0] == 0
        assert not os.path.exists(f"{path}.0")
        with inbox() as third:
            assert table.claim(1, third) == 0  # a freed slot is taken again
    assert path.stat().st_size == 64 + SLOTS * 64
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_file_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(b"x" * (64 + SLOTS * 64))
    with pytest.raises(ValueError, match="not a uvfs cache budget table"):
        BudgetTable(path)


def test_slots_of_dead_owners_are_freed_by_a_claim(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    zombie = subprocess.Popen(["true"])
    try:
        while _start_time(zombie.pid) is not None:  # exited, not yet waited for
            time.sleep(0.001)
        me = os.getpid()
        owners = [(dead.pid, 1), (zombie.pid, 1), (me, 1), (me, _start_time(me))]
        with BudgetTable(tmp_path / "b") as table, inbox() as sock:
            for slot, (pid, started) in enumerate(owners):  # (me, 1): a reused pid
                table.pid[slot], table.started[slot], table.charge[slot] = pid, started, 100
            assert table.claim(10, sock) == 0
            assert table.pid[:4].tolist() == [me, 0, 0, me]
            assert table.charge[:4].tolist() == [0, 0, 0, 100]
    finally:
        zombie.wait()


def _claim_and_hold(path: str) -> None:
    """In a process of its own: claim a slot, say which, hold it until stdin closes."""
    with BudgetTable(Path(path)) as table, inbox() as sock:
        slot = table.claim(1, sock)
        print(slot, flush=True)
        sys.stdin.read()
        assert slot is not None
        table.release(slot)


def python(function: str, *args: object) -> subprocess.Popen[str]:
    """A process running ``function(*args)`` of this module, talking through pipes."""
    code = f"import sys; from tests.test_budget import {function}; {function}(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_claim_distinct_slots_and_the_killed_lose_theirs(tmp_path: Path) -> None:
    path = tmp_path / "b"
    procs = [python("_claim_and_hold", path) for _ in range(4)]
    try:
        slots = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
        assert sorted(slots) == list(range(4))
        with BudgetTable(path) as table:
            assert [table.pid[s] for s in slots] == [p.pid for p in procs]
            procs[1].kill()  # SIGKILL: no release
            procs[1].wait()
            assert table.pid[slots[1]] == procs[1].pid
            with inbox() as sock:
                assert table.claim(1, sock) == slots[1]  # freed, socket and all, and taken
                table.release(slots[1])
            for p in procs[:1] + procs[2:]:
                p.communicate("")
                assert p.returncode == 0
            assert not table.pid.any()
    finally:
        for p in procs:
            p.kill()
            p.communicate()


async def test_a_full_table_leaves_the_cache_a_budget_of_its_own(tmp_path: Path, caplog) -> None:
    path = tmp_path / "b"
    with BudgetTable(path) as table:
        table.pid[:] = os.getpid()
        table.started[:] = _start_time(os.getpid())
        table.asked[:] = PIECE
        cache = BufferCache(4 * PIECE)
        with caplog.at_level(logging.WARNING, logger="uvfs.budget"):
            async with sharing(path, cache):
                for i in range(3):
                    await cache.read((1, i), 0, PIECE, fetch)
        assert caplog.messages == [
            f"cache budget not shared (all {SLOTS} slots of {path} taken): this mount keeps "
            f"{4 * PIECE} bytes of its own"
        ]
        assert cache.statistics().bytes_cached == 3 * PIECE  # over the others' budget: alone


async def test_the_periodic_check_publishes_hits_and_invalidations(tmp_path: Path) -> None:
    path = tmp_path / "b"
    cache = BufferCache(1 << 20)
    with BudgetTable(path) as table:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(share_budget, cache.memory, path=path, period=0.01))
            for i in range(2):
                await cache.read((1, 1), i * EXTENT_MAX, PIECE, fetch)
            assert (table.charge[0], table.oldest[0]) == (cost(2, 1), cache.oldest_use)
            await cache.read((1, 1), 0, 10, fetch)  # a hit: the tail is now the second extent
            assert table.oldest[0] < cache.oldest_use
            with trio.fail_after(5):
                while table.oldest[0] != cache.oldest_use:
                    await trio.sleep(0.001)
            cache.invalidate((1, 1))
            with trio.fail_after(5):
                while table.charge[0] or table.oldest[0] != math.inf:
                    await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        assert table.pid[0] == 0  # freed when the service ends


# --- who evicts -------------------------------------------------------------------------------


def cost(extents: int, files: int) -> int:
    return extents * (PIECE + EXTENT_CHARGE) + files * FILE_CHARGE


async def test_an_idle_process_with_the_oldest_tail_is_nudged_to_evict(tmp_path: Path) -> None:
    budget = cost(6, 2)
    a, b = BufferCache(budget), BufferCache(budget)
    with BudgetTable(tmp_path / "b") as table:
        async with sharing(tmp_path / "b", a, b):
            for i in range(5):
                await a.read((1, 1), i * EXTENT_MAX, PIECE, fetch)
            await a.read((1, 1), 0, PIECE, fetch)  # a hit: extent 0 is a's youngest
            for i in range(4):
                await b.read((2, 1), i * EXTENT_MAX, PIECE, fetch)
            await settled(table, budget)
            # a was idle: it evicted its three oldest, nudged, and b kept everything.
            assert extents(a) == [(1, 4 * EXTENT_MAX), (1, 0)]
            assert extents(b) == [(1, i * EXTENT_MAX) for i in range(4)]
            assert [a.statistics().evictions, b.statistics().evictions] == [3, 0]
            assert table.charge[:2].tolist() == [cost(2, 1), cost(4, 1)]


async def test_the_budget_is_the_largest_asked_for(tmp_path: Path, caplog) -> None:
    path = tmp_path / "b"
    small, large = BufferCache(cost(2, 1)), BufferCache(cost(6, 2))
    with BudgetTable(path) as table, caplog.at_level(logging.INFO, logger="uvfs.budget"):
        async with sharing(path, small, large):
            for i in range(4):
                await small.read((1, 1), i * EXTENT_MAX, PIECE, fetch)
            assert extents(small) == [(1, 2 * EXTENT_MAX), (1, 3 * EXTENT_MAX)]  # its own
            for i in range(5):
                await large.read((2, 1), i * EXTENT_MAX, PIECE, fetch)
            await settled(table, cost(6, 2))
            assert extents(small) == [(1, 3 * EXTENT_MAX)]
            assert extents(large) == [(1, i * EXTENT_MAX) for i in range(5)]
    assert caplog.messages == [
        f"cache budget: {cost(2, 1)} bytes for the 1 mount(s) of this user; "
        f"this one asked for {cost(2, 1)}",
        f"cache budget: {cost(6, 2)} bytes for the 2 mount(s) of this user; "
        f"this one asked for {cost(6, 2)}",
    ]


@pytest.mark.parametrize("seed", range(3))
async def test_evictions_are_those_of_one_merged_lru_list(tmp_path: Path, seed: int) -> None:
    """Two caches sharing a table evict exactly what one cache with both would."""
    rng = random.Random(seed)
    budget = cost(8, 6)
    merged = BufferCache(budget)
    shared = {1: BufferCache(budget), 2: BufferCache(budget)}
    with BudgetTable(tmp_path / "b") as table:
        async with sharing(tmp_path / "b", *shared.values()):
            for _ in range(150):
                mount, ino, chunk = rng.choice((1, 2)), rng.randrange(3), rng.randrange(6)
                key = (mount, ino)
                await merged.read(key, chunk * EXTENT_MAX, PIECE, fetch)
                await shared[mount].read(key, chunk * EXTENT_MAX, PIECE, fetch)
                await settled(table, budget)
                for m in (1, 2):
                    mine = [(e.file.key[1], e.start) for e in merged._lru if e.file.key[0] == m]
                    assert extents(shared[m]) == mine
            evictions = sum(c.statistics().evictions for c in shared.values())
            assert evictions == merged.statistics().evictions > 50


async def test_a_filler_keeps_the_excess_within_the_slack(tmp_path: Path) -> None:
    """The oldest owner never evicts (it listens to nobody): beyond the slack, the filler
    waits `PATIENCE` for it once, then pays from its own tail until the owner stirs."""
    budget = cost(16, 1)
    slack = int(budget * SLACK_FRACTION)
    with BudgetTable(tmp_path / "b") as table:
        me = os.getpid()
        table.pid[5], table.started[5], table.asked[5] = me, _start_time(me), budget
        table.charge[5], table.oldest[5] = budget, 0.0  # full, and older than anything
        cache = BufferCache(budget)
        async with sharing(tmp_path / "b", cache):

            async def waited(chunk: int) -> bool:
                started = trio.current_time()
                await cache.read((1, 1), chunk * EXTENT_MAX, PIECE, fetch)
                assert int(table.charge.sum()) <= budget + slack
                return trio.current_time() - started >= PATIENCE

            assert [await waited(i) for i in range(10)].count(True) == 1
            assert table.pid[5] == me  # not freed: alive, merely deaf
            kept = len(cache._lru)
            assert cache.charge == cost(kept, 1)
            assert slack - (PIECE + EXTENT_CHARGE) < cost(kept, 1) <= slack
            assert extents(cache) == [(1, i * EXTENT_MAX) for i in range(10 - kept, 10)]
            table.oldest[5] = 1.0  # it stirs: worth waiting for again
            assert await waited(10)


async def test_a_fill_beyond_the_slack_waits_for_a_slow_oldest(tmp_path: Path) -> None:
    """The oldest owner evicts only 20 ms after a nudge: the filler waits for it rather
    than evict its own new data."""
    path = tmp_path / "b"
    budget = cost(16, 1)
    with BudgetTable(path) as table, inbox() as owner:
        owner.bind(f"{path}.5")
        owner.setblocking(False)
        me = os.getpid()
        table.pid[5], table.started[5], table.asked[5] = me, _start_time(me), budget
        table.charge[5], table.oldest[5] = budget, 0.0

        async def answer_slowly() -> None:
            await trio.lowlevel.wait_readable(owner)
            await trio.sleep(0.02)
            table.charge[5] = 0  # evicted everything

        cache = BufferCache(budget)
        async with sharing(path, cache), trio.open_nursery() as nursery:
            nursery.start_soon(answer_slowly)
            started = trio.current_time()
            for i in range(10):
                await cache.read((1, 1), i * EXTENT_MAX, PIECE, fetch)
            assert trio.current_time() - started >= 0.02
        assert extents(cache) == [(1, i * EXTENT_MAX) for i in range(10)]
        assert cache.statistics().evictions == 0


async def test_a_dead_owner_is_freed_when_nudged(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    budget = cost(4, 1)
    with BudgetTable(tmp_path / "b") as table:
        table.pid[5], table.started[5], table.asked[5] = dead.pid, 1, budget
        table.charge[5], table.oldest[5] = budget, 0.0
        cache = BufferCache(budget)
        async with sharing(tmp_path / "b", cache):
            await cache.read((1, 1), 0, PIECE, fetch)  # over the budget: nudge the dead
            assert table.pid[5] == 0
            assert table.charge.sum() == cache.charge == cost(1, 1)


# --- the bound, with real processes -----------------------------------------------------------


def _load(path: str, seed: str, budget: str, reads: str) -> None:
    """In a process of its own: random reads through a cache sharing the table at `path`;
    then report, and hold the slot until stdin closes."""

    async def main() -> None:
        rng = random.Random(int(seed))
        cache = BufferCache(int(budget))
        async with sharing(Path(path), cache):
            print("ready", flush=True)
            sys.stdin.readline()  # go
            for _ in range(int(reads)):
                size = rng.choice((4096, 16384, PIECE))
                # Within the first 128 KiB of 16 chunks: extents of at most 3 pieces.
                off = rng.randrange(16) * EXTENT_MAX + rng.randrange(0, 2 * PIECE, 4096)
                assert await cache.read((1, rng.randrange(8)), off, size, fetch) == bytes(size)
                if rng.random() < 0.1:
                    await trio.sleep(0.0005)
            stats = cache.statistics()
            print(json.dumps([stats.evictions, stats.misses]), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(main)


def test_the_bound_holds_under_a_random_load_of_three_processes(tmp_path: Path) -> None:
    path = tmp_path / "b"
    budget = 1 << 20
    slack = int(budget * SLACK_FRACTION)
    with BudgetTable(path) as table:
        procs = [python("_load", path, seed, budget, 2000) for seed in range(3)]
        try:
            for p in procs:
                assert p.stdout.readline() == "ready\n"  # type: ignore[union-attr]
            samples: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    # Two equal copies: the slots held those values together between them
                    # (one copy alone may mix moments, when this thread is preempted).
                    first, second = table.charge.copy(), table.charge.copy()
                    if (first == second).all():
                        samples.append(int(first.sum()))

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                for p in procs:
                    p.stdin.write("go\n")  # type: ignore[union-attr]
                    p.stdin.flush()  # type: ignore[union-attr]
                reports = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
            finally:
                done.set()
                sampler.join()
            deadline = time.monotonic() + 5
            while int(table.charge.sum()) > budget and time.monotonic() < deadline:
                time.sleep(0.001)
            final = int(table.charge.sum())
            over = [s - budget for s in samples if s > budget]
            print(
                f"\n{len(samples)} samples, {len(over)} over the budget, by at most "
                f"{max(over, default=0)} bytes; settled at {final}; evictions, misses {reports}"
            )
            assert max(samples) <= budget + slack + 3 * (PIECE + EXTENT_CHARGE + FILE_CHARGE)
            # Under by less than the oldest extent, which may hold up to 3 pieces.
            assert budget - 3 * PIECE - EXTENT_CHARGE - FILE_CHARGE < final <= budget
            assert all(evictions > 100 for evictions, _ in reports)
            for p in procs:
                p.communicate("")
                assert p.returncode == 0
            assert not table.pid.any()
        finally:
            for p in procs:
                p.kill()
                p.communicate()


# --- two real mounts ------------------------------------------------------------------------


def stats(mountpoint: Path) -> dict[str, int]:
    lines = run_uvfs("stats", str(mountpoint)).stdout.splitlines()[1:]
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


@pytest.mark.slow
def test_two_mounts_share_one_budget(mount, tmp_path: Path, monkeypatch) -> None:
    need("mke2fs")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no other mount shares it
    mounts = []
    for name in ("a", "b"):
        tree = tmp_path / f"tree-{name}"
        tree.mkdir()
        (tree / "f").write_bytes(os.urandom(6 << 20))
        image = tmp_path / f"{name}.img"
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree), str(image), "32M"],
                       check=True)  # fmt: skip
        mounts.append(mount(image, options="ro,cache_size=8M"))
    for mnt, name in zip(mounts, "ab", strict=True):
        assert (mnt / "f").read_bytes() == (tmp_path / f"tree-{name}" / "f").read_bytes()
    deadline = time.monotonic() + 5
    while True:
        a, b = (stats(mnt) for mnt in mounts)
        total = a["cache.bytes_cached"] + b["cache.bytes_cached"]
        if total <= 8 << 20 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    # 12 MiB of 1 MiB extents in 8 MiB: a, read first, gave up its five oldest.
    assert (a["cache.bytes_cached"], a["cache.evictions"]) == (1 << 20, 5)
    assert (b["cache.bytes_cached"], b["cache.evictions"]) == (6 << 20, 0)
    assert b["cache.bytes_from_driver"] == 6 << 20
