"""A bounded least-recently-used map, for drivers' and the broker's small caches."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class LRU(Generic[_K, _V]):
    """A map bounded by the total weight of its entries (1 each unless given).

    When a `put` takes the total past `capacity`, the least recently used entries go; the
    newest entry always stays, even when it alone weighs more than `capacity`.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[_K, tuple[_V, int]] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: _K, default: _V | None = None) -> _V | None:
        """The value for `key` (now the most recently used), or `default`."""
        item = self._items.get(key)
        if item is None:
            return default
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: _K, value: _V, weight: int = 1) -> None:
        self.pop(key)
        self._items[key] = (value, weight)
        self._weight += weight
        while self._weight > self.capacity and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._weight -= dropped

    def pop(self, key: _K) -> _V | None:
        """Remove `key`; its value, or None when absent."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._weight -= item[1]
        return item[0]

    def clear(self) -> None:
        self._items.clear()
        self._weight = 0
