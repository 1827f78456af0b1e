"""One cache budget for all the uvfs server processes of a user, kept in a shared table.

Theory of operation
===================

Why a table
-----------
pyfuse3 keeps one FUSE session per process, so every ``uvfs mount`` is a server process
with a `MemoryBudget` of its own (`uvfs._memory`: the broker's `BufferCache` and the
driver's caches, evicted as one LRU list). For them to keep to one budget, each process publishes
what its cache costs in a small table that all of them map into memory: the file
``cache-budget`` in the user's runtime directory (`uvfs._runtime.runtime_dir`, mode 0700,
so only the user's own processes see it). A process can free only its own memory, so the
table serves to agree on *who* evicts; each then evicts from its own cache.

The table
---------
A 64-byte header (a magic and the number of slots), then `SLOTS` slots of 64 bytes, one
cache line each, so that writers of different slots never share a line:

==========  ============================================================================
``pid``     the owning process; 0 marks a free slot
``started`` its start time (field 22 of ``/proc/PID/stat``): a reused pid is not its owner
``asked``   the budget of its own caches (``-o cache_size``)
``charge``  its `MemoryBudget.charge` (all its caches) when last published
``oldest``  when its least recently used entry was last used (`MemoryBudget.oldest_use`),
            inf when it has none. CLOCK_MONOTONIC is one clock for the whole machine
            on Linux, so these compare across processes.
==========  ============================================================================

A process claims a slot when its mount starts and frees it when the mount ends, both under
an exclusive ``flock`` of the file. Claiming first frees the slots of owners that died
without freeing theirs (no such pid, a zombie, or a pid now owned by a process started at
another time). In between, only the owner writes its slot, and only with aligned 8-byte
stores (numpy element assignments), which no reader sees half-done; readers take no lock.
What a reader sees may be a moment old: that costs one eviction too early or too late,
which the next check corrects.

The budget
----------
The shared budget is the largest ``cache_size`` any live mount asked for, and each cache
also keeps within its own ``cache_size``. Rejected: the first mount's size (the budget
would depend on the order of mounting, and a later mount asking for more would silently
get less) and the smallest (one ``-o cache_size=8M`` mount would shrink every default
mount's cache). With the largest, the default mounts of a user share 256 MiB instead of
taking 256 MiB each, no mount holds more than it asked for, and the budget changes only
when the mount with the largest size comes or goes.

Eviction: the oldest evicts
---------------------------
The caches evict as if their LRU lists were merged into one. When the total charge exceeds
the budget, the extent that has gone unused longest is the tail of the process with the
smallest ``oldest``; that process evicts from its tail until the total fits or its tail is
younger than the next process's tail. Then the next process is the oldest, and it is told
to go on. Up to the staleness of the table, the extents evicted are those a single merged
LRU list would evict (`test_budget.py` compares the two on random interleavings). Each
eviction frees a whole extent (up to 1 MiB), so the total lands up to one extent below the
budget, as in a single cache.

A process is told through a *nudge*: each binds a unix datagram socket
``cache-budget.<slot>`` beside the table. A process whose cache grew (`BudgetPool.grown`,
after every fill) checks the table, and when the total is over the budget and another
process holds the oldest tail, sends it one byte. The nudged process wakes at once, idle
or not, checks the table and evicts. Every process also checks every `PERIOD` seconds:
that publishes what hits and invalidations changed (a hit on the tail makes it younger;
neither is worth a table write on the hit path) and makes up for a nudge lost to a full
socket queue.

The bound
---------
The total exceeds the budget from a fill until the nudged process has evicted: well under
a millisecond on a quiet machine, longer when the oldest process waits for a CPU, for ever
if it is stopped or hung. Fills may push the total up to ``budget * (1 + SLACK_FRACTION)``
(1/8) unchecked. A fill that leaves it beyond that line marks the cache *crowded*, and the
request that made it (a read, write or truncate) does not answer until the total is back
within the line: it checks again (and nudges again) every ``PATIENCE / 50`` seconds, and
after `PATIENCE` evicts the overflow from its own tail, giving up LRU order only then.
The process it waited for in vain (stopped, hung, or starved of CPU) is then *deaf*:
until its ``oldest`` changes (it evicted or published), later fills beyond the line evict
their overflow at once instead of waiting again, so a stopped mount costs the others one
wait, not one per fill.
Holding the request back, rather than evicting at once, keeps the order across processes
on a busy machine: a reader that fills more than the slack while the idle oldest process
waits for a CPU would otherwise evict its own new data instead of the old data of the idle
mount.

Hence the published total is at most ``budget * 9/8`` plus one fill per request in
flight at that moment in all processes (a fill is one request's bytes: 128 KiB for FUSE
reads; a FUSE connection has at most ``max_background``, 12 by default, reads in flight),
and the memory a fill holds is ahead of the table only within one synchronous stretch.
Once the oldest process runs, the total is within the budget again. With the cache's own
bound (memory <= ~1.125 x charge) the caches of all processes together hold at most
~1.27 x budget plus the requests in flight. Measured (``tests/test_budget.py``, three
processes reading 4-64 KiB pieces non-stop through 1 MiB caches on a loaded 2-core
machine): 30-60% of the samples of the table over the budget (the three fill faster than
the nudged get a CPU), by at most 245-300 kB of the 330 kB allowed (the slack and one
fill per process), and within the budget a moment after the load stops.

Dead owners
-----------
A process killed with SIGKILL leaves its slot, and its charge would shrink the budget of
the others. Nobody listens on its socket any more, so the first nudge to it fails; the
nudger then frees the slot under the lock if its owner is really gone. A dead owner whose
tail is not the oldest becomes the oldest as the others' tails move on. Claims free dead
slots too.

Costs and limits
----------------
A hit pays nothing here beyond the cache stamping its extent with the clock (~0.1 us;
``test_hit_rate`` did not move: ~117,000 hits/s of 128 KiB at best before and after). A
fill pays one check of the table (a few numpy reductions over the slots: ~10 us measured
on the loaded machine, next to a driver call), unless the last check left room: then the fill
only publishes the new charge (one store), and each process may grow by its share of
half that room (the room divided by twice the number of processes) before it checks
again. Every view of the table stays exact, the total stays within the budget, and a cache
well below its budget skips the check at nearly every fill. An idle process wakes twice a second. At
most `SLOTS` mounts share a budget: one that finds no free slot keeps a budget of its own
and says so. Telling live owners from dead ones needs ``/proc``. Processes in different
time namespaces (containers) read CLOCK_MONOTONIC with different offsets; sharing a
runtime directory across them would skew whose tail is oldest (not the bound).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import mmap
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import trio

from uvfs import _runtime
from uvfs._memory import MemoryBudget

__all__ = ["PATIENCE", "PERIOD", "SLACK_FRACTION", "SLOTS", "BudgetTable", "share_budget"]

log = logging.getLogger("uvfs.budget")

SLOTS = 128
PERIOD = 0.5  # seconds between checks without a nudge
SLACK_FRACTION = 1 / 8  # how far over the budget fills may push the total unchecked
PATIENCE = 0.1  # seconds a fill beyond the slack waits for the oldest to evict

_HEADER = 64
_HEAD = b"uvfsbgt1" + SLOTS.to_bytes(8, "little")  # the magic, then the number of slots
_SLOT = np.dtype(
    {
        "names": ["pid", "started", "asked", "charge", "oldest"],
        "formats": ["<i8", "<i8", "<i8", "<i8", "<f8"],
        "itemsize": 64,
    }
)
_SIZE = _HEADER + SLOTS * _SLOT.itemsize


def _start_time(pid: int) -> int | None:
    """When live process `pid` started (clock ticks since boot); None if dead or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state (field 3) ... starttime (field 22).
    return None if fields[0] in "ZXx" else int(fields[19])


class BudgetTable:
    """The table of caches sharing one budget, mapped into this process.

    Args:
        path: the table's file; created (mode 0600) if missing.

    Raises:
        ValueError: the file exists but is not such a table.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked(fd):
                size = os.fstat(fd).st_size
                if size == 0:
                    os.ftruncate(fd, _SIZE)
                    os.pwrite(fd, _HEAD, 0)
                elif size != _SIZE or os.pread(fd, len(_HEAD), 0) != _HEAD:
                    raise ValueError(f"{path}: not a uvfs cache budget table")
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        slots = np.ndarray(SLOTS, _SLOT, buffer=self._map, offset=_HEADER)
        # One view per field: element stores through them are single aligned 8-byte stores.
        self.pid = slots["pid"]
        self.started = slots["started"]
        self.asked = slots["asked"]
        self.charge = slots["charge"]
        self.oldest = slots["oldest"]

    def close(self) -> None:
        del self.pid, self.started, self.asked, self.charge, self.oldest  # views of the map
        self._map.close()
        os.close(self._fd)

    def __enter__(self) -> BudgetTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    @contextlib.contextmanager
    def _locked(fd: int) -> Iterator[None]:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def socket_path(self, slot: int) -> str:
        """Where the owner of `slot` listens for nudges."""
        return f"{self.path}.{slot}"

    def claim(self, asked: int, inbox: socket.socket) -> int | None:
        """Take a free slot for this process's cache of budget `asked`, binding `inbox` to
        its nudge socket; None if every slot is taken by a live process."""
        with self._locked(self._fd):
            for slot in np.flatnonzero(self.pid):
                self._free_if_dead(int(slot))
            free = np.flatnonzero(self.pid == 0)
            if not len(free):
                return None
            slot = int(free[0])
            address = self.socket_path(slot)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)  # left by an owner that died
            inbox.bind(address)
            pid = os.getpid()
            self.started[slot] = _start_time(pid) or 0
            self.asked[slot] = asked
            self.charge[slot] = 0
            self.oldest[slot] = math.inf
            self.pid[slot] = pid  # last: readers take a slot with a pid as complete
            return slot

    def release(self, slot: int) -> None:
        """Free `slot` (ours): its charge no longer counts."""
        with self._locked(self._fd):
            self.charge[slot] = 0
            self.pid[slot] = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path(slot))

    def reap(self, slot: int) -> bool:
        """Free `slot` if its owner is dead (a nudge to it found nobody listening).

        Returns:
            Whether it was freed.
        """
        with self._locked(self._fd):
            return self._free_if_dead(slot)

    def _free_if_dead(self, slot: int) -> bool:
        pid = int(self.pid[slot])
        if not pid or _start_time(pid) == self.started[slot]:
            return False
        log.info("cache budget: freeing slot %d of dead process %d", slot, pid)
        self.charge[slot] = 0
        self.pid[slot] = 0
        return True


class _Share:
    """One process's membership of the table (its `BudgetPool`): publishes, evicts, nudges,
    and holds fills back while the table is crowded."""

    def __init__(self, table: BudgetTable, slot: int, cache: MemoryBudget) -> None:
        self.table = table
        self.slot = slot
        self.cache = cache  # the process's caches, all of them
        self.crowded = False  # the last fill left the total beyond budget + slack
        self.awaited = -1  # the slot last nudged to make room
        self.deaf: tuple[int, float] | None = None  # (slot, oldest): let a wait run out
        self.allowance = -1  # the charge this cache may grow to before checking the table
        self.outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.outbox.setblocking(False)

    def close(self) -> None:
        self.outbox.close()

    def grown(self) -> None:
        charge = self.cache.charge
        if charge <= self.allowance:
            # Within its share of the room the table showed at the last check. Published,
            # so the others' view of the total stays exact. Its oldest use moves only when
            # its first entry comes, it evicts or a hit touches its tail: the first is
            # published here, the others by the periodic check.
            self.table.charge[self.slot] = charge
            if self.table.oldest[self.slot] == math.inf:
                self.table.oldest[self.slot] = self.cache.oldest_use
            return
        overflow = self.settle()
        if overflow <= 0:
            return
        if self.deaf == self._awaited_state():
            self._pay(overflow)  # it let us wait in vain and has not stirred since
        else:
            self.crowded = True

    async def wait_room(self) -> None:
        """Wait up to `PATIENCE` for the oldest to evict; then evict from this cache."""
        deadline = trio.current_time() + PATIENCE
        while (overflow := self.settle()) > 0 and trio.current_time() < deadline:
            await trio.sleep(PATIENCE / 50)
        if overflow > 0:
            self.deaf = self._awaited_state()
            self._pay(overflow)
        self.crowded = False

    def _awaited_state(self) -> tuple[int, float]:
        return self.awaited, float(self.table.oldest[self.awaited])

    def _pay(self, overflow: int) -> None:
        """Evict `overflow` from this cache's own tail: the oldest process does not."""
        self.cache.shrink(self.cache.charge - overflow)
        self.publish()

    def publish(self) -> None:
        self.table.charge[self.slot] = self.cache.charge
        self.table.oldest[self.slot] = self.cache.oldest_use

    def settle(self) -> int:
        """Publish this cache's state; if the total is over the budget, evict from this
        cache while it holds the oldest tail, and nudge the process that holds it next.

        Returns:
            How far the total is beyond budget + slack (> 0: crowded).
        """
        table, me, cache = self.table, self.slot, self.cache
        self.publish()
        live = table.pid != 0
        budget = int(table.asked[live].max())
        slack = int(budget * SLACK_FRACTION)
        excess = int(table.charge[live].sum()) - budget
        self.allowance = cache.charge - excess // (2 * int(live.sum())) if excess < 0 else -1
        if excess <= 0:
            return excess - slack
        oldest = np.where(live, table.oldest, math.inf)
        first = int(oldest.argmin())
        if first == me:
            oldest[me] = math.inf
            runner_up = float(oldest.min())  # inf: nobody else holds anything
            excess -= cache.shrink(cache.charge - excess, used_by=runner_up)
            self.publish()
            if excess <= 0 or runner_up == math.inf:
                return excess - slack
            first = int(oldest.argmin())
        if not self.nudge(first):
            return self.settle()  # its owner was dead, and its charge no longer counts
        self.awaited = first
        return excess - slack

    def nudge(self, slot: int) -> bool:
        """Tell the owner of `slot` to check the table now; False if it turned out dead."""
        try:
            self.outbox.sendto(b"!", self.table.socket_path(slot))
        except BlockingIOError:
            pass  # its queue is full of nudges it has yet to read
        except (ConnectionRefusedError, FileNotFoundError):
            return not self.table.reap(slot)  # nobody listens: perhaps nobody lives
        return True

    async def serve(self, inbox: socket.socket, period: float) -> None:
        """Check the table when nudged, and every `period` seconds, until cancelled."""
        while True:
            with trio.move_on_after(period):
                await trio.lowlevel.wait_readable(inbox)
            with contextlib.suppress(BlockingIOError):
                while True:  # one check answers every nudge received so far
                    inbox.recv(16)
            self.settle()


async def share_budget(
    cache: MemoryBudget,
    *,
    path: Path | None = None,
    period: float = PERIOD,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Share the budget of `cache` with the caches of the user's other processes, until
    cancelled; then its charge no longer counts.

    If the table is unusable or full, `cache` keeps a budget of its own, with a warning.

    Args:
        cache: this process's caches (`BufferCache.memory`); their budget is what it asks for.
        path: the table; default ``cache-budget`` in the runtime directory.
        period: seconds between checks when not nudged.
        task_status: started once the cache is in the table (or on its own).
    """
    path = path or _runtime.runtime_dir() / "cache-budget"
    asked = cache.budget
    try:
        table = BudgetTable(path)
    except (OSError, ValueError) as e:
        log.warning("cache budget not shared (%s): this mount keeps %d bytes of its own", e, asked)
        task_status.started()
        return
    with table, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as inbox:
        inbox.setblocking(False)
        slot = table.claim(asked, inbox)
        if slot is None:
            log.warning(
                "cache budget not shared (all %d slots of %s taken): this mount keeps %d "
                "bytes of its own",
                SLOTS,
                path,
                asked,
            )
            task_status.started()
            return
        share = _Share(table, slot, cache)
        cache.join(share)
        try:
            live = table.pid != 0
            log.info(
                "cache budget: %d bytes for the %d mount(s) of this user; this one asked for %d",
                int(table.asked[live].max()),
                int(np.count_nonzero(live)),
                asked,
            )
            task_status.started()
            await share.serve(inbox, period)
        finally:
            cache.join(None)
            share.close()
            trio.lowlevel.notify_closing(inbox)
            table.release(slot)
