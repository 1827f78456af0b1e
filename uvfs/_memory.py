"""One memory budget for all the caches of a server: the broker's file data and the drivers'.

Theory of operation
===================

Members
-------
A server process holds one `MemoryBudget` (``-o cache_size``). Every cache that holds image
data in that process is one of its *members*: the broker's `BufferCache` (file data by byte
range) and each `ChargedLRU` a driver asked for with `MemoryBudget.lru` (its metadata
blocks, parsed records, ...). A member has a *charge* (what its entries and their
bookkeeping cost, in bytes), stamps each entry with the `time.monotonic` of its last use,
and can `shrink`: evict its least recently used entries down to a charge, only those last
used before a given time.

Eviction: one merged LRU list
-----------------------------
After every fill a member has its budget settle (`MemoryBudget.settle`): while the
members' total charge exceeds the budget, the member whose least recently used entry is
the oldest evicts until the total fits or its tail is younger than the next member's tail;
then that member goes on. The entries evicted are exactly those one LRU list holding every
member's entries would evict, so a driver's hot metadata block outlives a file byte range
nobody has read since, and the reverse. A budget of 0 caches nothing, drivers' caches
included, and an entry heavier than the whole budget is not kept: a driver must work with
any of its caches empty (it reads again).

The same interface (`charge`, `oldest_use`, `shrink`) is what `uvfs._budget` shares across
the user's server processes, so the merged order extends over every member of every server
(`share_budget` joins a `MemoryBudget` to the table). A driver's puts are synchronous and
never wait for room; the broker's next fill does (`pace`), as in `uvfs._cache`.

A driver's puts are settled in batches of `BATCH_FRACTION` of the budget, since a tree walk
puts thousands of small entries: a put that finds the budget exceeded evicts down to
``budget * (1 - BATCH_FRACTION)``, not to the budget, so the next puts find room (each
eviction sums the members' charges and picks the oldest tail: ~10 us, which at every put of
a 20,000-file walk on a full budget cost a third of its CPU time); and the table hears of
the puts once they add up to a batch (or at its periodic check; a check costs 10-30 us,
which at every put doubled the CPU time of a cold ``du`` on ZFS). So each process may be up
to a batch further over the shared budget than `uvfs._budget` says, for at most one period;
its own budget always holds at once. The broker's fills evict exactly to the budget.

Why not a budget per cache
--------------------------
Fixed shares (say 3/4 for file data, 1/4 for the driver) would keep a driver's 64 MiB of
blocks while a streaming read of a big file wants every byte of the budget, or cap the
metadata of a tree walk at a quarter while the file data sits unused. One list lets the
workload decide. A driver may still give one of its caches a `capacity` of its own (a
cache of blocks it only needs briefly), which bounds it within the shared budget.

Costs
-----
A `ChargedLRU` hit is a dict lookup, a move to the young end and one clock read (~0.3 us).
A put adds `ENTRY_CHARGE` to the entry's weight for its bookkeeping (an OrderedDict node
and the record, ~165 bytes measured on CPython 3.11, and a key of a few ints, 60-110) and
takes it from the *room* the budget had when the members' charges were last summed: only
once that runs out are they summed again (a few us, over weak references). A broker fill
takes what it added from the same room (`settle`). Evictions, invalidations and
truncations only add room, so the room is never overstated and the budget holds at every
moment. A cold walk of 20,000 files on ZFS put 42,000 entries; summing at each put cost
~15% of its CPU; a cold 4 KiB read through the broker paid ~4 us for the sum at each fill.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from time import monotonic
from typing import Generic, Protocol, TypeVar

__all__ = [
    "BATCH_FRACTION",
    "DEFAULT_BUDGET",
    "ENTRY_CHARGE",
    "BudgetPool",
    "ChargedLRU",
    "MemoryBudget",
    "MemoryStatistics",
    "Reclaimable",
]

DEFAULT_BUDGET = 256 << 20  # a mount without cache_size=, and a driver opened outside a mount
ENTRY_CHARGE = 256  # budget bytes charged per ChargedLRU entry for its bookkeeping
BATCH_FRACTION = 1 / 64  # of the budget: drivers' puts are evicted for and told in batches

_K = TypeVar("_K")
_V = TypeVar("_V")


class Reclaimable(Protocol):
    """A member of a `MemoryBudget`: a cache that can give memory back, oldest first."""

    @property
    def charge(self) -> int:
        """What its entries and their bookkeeping cost now, in budget bytes."""
        ...

    @property
    def oldest_use(self) -> float:
        """When its least recently used entry was last used (`time.monotonic`); inf if none."""
        ...

    def shrink(self, limit: int, *, used_by: float = math.inf) -> int:
        """Evict least recently used entries while the charge exceeds `limit` and the
        oldest was last used at or before `used_by`; returns the charge freed."""
        ...


class BudgetPool(Protocol):
    """A budget that several processes share, each with a budget of its own (`uvfs._budget`)."""

    crowded: bool  # a fill took the pool too far over its budget: `wait_room` before answering

    def grown(self) -> None:
        """The charge grew and fits the process's budget: shrink it if the pool is over."""

    async def wait_room(self) -> None:
        """Return once the pool is back within its slack, evicting here if need be."""


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    """A snapshot of a `MemoryBudget`.

    Attributes:
        budget: what all the members may cost together, in bytes.
        charge: what they cost now.
        caches: each member's charge now, by name (members of one name added up).
        peaks: each `ChargedLRU`'s highest charge after a put settled, by name.
    """

    budget: int
    charge: int
    caches: dict[str, int]
    peaks: dict[str, int]


class MemoryBudget:
    """The memory all the caches of a server may hold together; see the module docstring.

    The broker makes one per server from ``-o cache_size`` and hands it to the driver's
    `open` as `MountOptions.memory`; a driver asks it for its caches with `lru`. Pickled (a
    driver in a process of its own), it becomes a budget of the same size with no members.

    Args:
        budget: bytes; 0 caches nothing.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        if budget < 0:
            raise ValueError(f"negative cache budget {budget}")
        self.budget = budget
        # (member, name), weakly: a list, as summing the charges over a WeakKeyDictionary
        # cost ~3 us per broker fill (its iteration guard), more than the fill itself.
        self._members: list[tuple[weakref.ref[Reclaimable], str]] = []
        self._pool: BudgetPool | None = None
        self._untold = 0  # what drivers' puts added since the pool last heard
        self._room = 0  # at most budget - charge: what puts may add before a new sum

    def __reduce__(self) -> tuple[type[MemoryBudget], tuple[int]]:
        return MemoryBudget, (self.budget,)

    def __repr__(self) -> str:
        return f"MemoryBudget({self.budget})"

    def lru(self, name: str, *, capacity: int | None = None) -> ChargedLRU:
        """A new LRU map whose entries charge this budget.

        Args:
            name: what `uvfs stats` calls it (``"zfs metadata"``).
            capacity: a bound of its own, in budget bytes, within the shared one.
        """
        lru: ChargedLRU = ChargedLRU(self, capacity)
        self.add(lru, name)
        return lru

    def add(self, member: Reclaimable, name: str) -> None:
        """Make `member` charge this budget until it is garbage."""
        self._members = [(ref, n) for ref, n in self._members if ref() not in (None, member)]
        self._members.append((weakref.ref(member), name))

    def _live(self) -> list[tuple[Reclaimable, str]]:
        """The members still alive, with their names."""
        return [(member, name) for ref, name in self._members if (member := ref()) is not None]

    # --- the whole budget, as `uvfs._budget` shares it -------------------------------------

    @property
    def charge(self) -> int:
        total = 0
        for ref, _ in self._members:
            member = ref()
            if member is not None:
                total += member.charge
        return total

    @property
    def oldest_use(self) -> float:
        return min((member.oldest_use for member, _ in self._live()), default=math.inf)

    def shrink(self, limit: int, *, used_by: float = math.inf) -> int:
        """Evict the members' least recently used entries, as one merged LRU list would,
        while the total charge exceeds `limit` and the oldest was last used by `used_by`.

        Returns:
            The charge freed.
        """
        members = [member for member, _ in self._live()]
        freed = 0
        while (excess := sum(m.charge for m in members) - limit) > 0:
            ages = sorted((m.oldest_use, i) for i, m in enumerate(members))
            oldest, first = ages[0]
            if oldest > used_by:  # inf too: nothing left to evict
                break
            runner_up = ages[1][0] if len(ages) > 1 else math.inf
            member = members[first]
            freed += member.shrink(member.charge - excess, used_by=min(runner_up, used_by))
        return freed

    def settle(self, grown: int) -> None:
        """A member's charge grew by `grown` in one synchronous stretch (a broker fill):
        bring the total within the budget, then tell the shared pool.

        The charges are summed only when `grown` exceeds the room the last sum left.
        """
        self._room -= grown
        if self._room < 0:
            self._fit(self.budget)
        if self._pool is not None:
            self._untold = 0
            self._pool.grown()

    def _fit(self, limit: int) -> None:
        """If the members' charges exceed the budget, evict down to `limit`; note the room."""
        charge = self.charge
        if charge > self.budget:
            charge -= self.shrink(limit)
        self._room = self.budget - charge

    def _grew(self, weight: int) -> None:
        """A `ChargedLRU` grew by `weight`: `settle` in batches (see the module docstring)."""
        self._room -= weight
        if self._room < 0:
            self._fit(int(self.budget * (1 - BATCH_FRACTION)))
        self._untold += weight
        if self._pool is not None and self._untold > self.budget * BATCH_FRACTION:
            self._untold = 0
            self._pool.grown()

    def join(self, pool: BudgetPool | None) -> None:
        """Tell `pool` whenever the charge may have grown (None: stop telling)."""
        self._pool = pool

    async def pace(self) -> None:
        """Hold a fill's answer back while the shared pool is crowded (see `uvfs._budget`)."""
        if self._pool is not None and self._pool.crowded:
            await self._pool.wait_room()

    def statistics(self) -> MemoryStatistics:
        caches: dict[str, int] = {}
        peaks: dict[str, int] = {}
        for member, name in self._live():
            caches[name] = caches.get(name, 0) + member.charge
            if isinstance(member, ChargedLRU):
                peaks[name] = max(peaks.get(name, 0), member.peak)
        return MemoryStatistics(self.budget, sum(caches.values()), caches, peaks)


class ChargedLRU(Generic[_K, _V]):
    """A least-recently-used map whose entries charge a `MemoryBudget`; make one with
    `MemoryBudget.lru`.

    An entry weighs what the caller says (its bytes, for a block) plus `ENTRY_CHARGE`.
    After each `put`, entries go, oldest first, while this map exceeds its own `capacity`
    (if any) and while the budget is exceeded and this map holds the oldest entries of all
    its members. An entry heavier than the budget or the capacity is not kept (rather than
    flushing everything else first). Any entry may be gone at the next `get`.
    """

    def __init__(self, memory: MemoryBudget, capacity: int | None = None) -> None:
        self.memory = memory
        self.capacity = capacity
        # key -> [value, weight, last use], oldest first; a list, so a hit stamps in place
        self._items: OrderedDict[_K, list] = OrderedDict()
        self._charge = 0
        self.peak = 0  # the highest charge after a put settled

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: _K, default: _V | None = None) -> _V | None:
        """The value for `key` (now the most recently used), or `default`."""
        item = self._items.get(key)
        if item is None:
            return default
        item[2] = monotonic()
        self._items.move_to_end(key)
        return item[0]

    def __contains__(self, key: object) -> bool:
        """Whether `key` is cached, without counting as a use."""
        return key in self._items

    def put(self, key: _K, value: _V, weight: int = 0) -> None:
        """Keep `value` under `key`, weighing `weight` bytes besides its bookkeeping."""
        self.pop(key)
        weight += ENTRY_CHARGE
        if weight > self.memory.budget or (self.capacity is not None and weight > self.capacity):
            return
        self._items[key] = [value, weight, monotonic()]
        self._charge += weight
        if self.capacity is not None and self._charge > self.capacity:
            self.shrink(self.capacity)
        self.memory._grew(weight)
        self.peak = max(self.peak, self._charge)

    def pop(self, key: _K) -> _V | None:
        """Remove `key`; its value, or None when absent."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._charge -= item[1]
        return item[0]

    def clear(self) -> None:
        self._items.clear()
        self._charge = 0

    # --- as a member of its budget ----------------------------------------------------------

    @property
    def charge(self) -> int:
        return self._charge

    @property
    def oldest_use(self) -> float:
        return next(iter(self._items.values()))[2] if self._items else math.inf

    def shrink(self, limit: int, *, used_by: float = math.inf) -> int:
        items = self._items
        before = self._charge
        while items and self._charge > limit:
            key, (_, weight, used) = next(iter(items.items()))
            if used > used_by:
                break
            del items[key]
            self._charge -= weight
        return before - self._charge
