"""uvfs.LRU keeps the most recently used entries within its weight budget."""

from uvfs import LRU


def test_least_recently_used_goes_first() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert len(lru) == 2


def test_weights_bound_the_total_and_the_newest_always_stays() -> None:
    lru: LRU[str, bytes] = LRU(10)
    lru.put("a", b"", weight=4)
    lru.put("b", b"", weight=4)
    lru.put("c", b"", weight=4)
    assert (lru.get("a"), lru.get("b") is not None, lru.get("c") is not None) == (None, True, True)
    lru.put("huge", b"", weight=50)
    assert len(lru) == 1 and lru.get("huge") == b""


def test_replacing_and_popping_keep_the_weight_exact() -> None:
    lru: LRU[str, int] = LRU(3)
    lru.put("a", 1, weight=2)
    lru.put("a", 2, weight=1)
    lru.put("b", 3, weight=2)
    assert (lru.get("a"), lru.get("b")) == (2, 3)
    assert lru.pop("a") == 2 and lru.pop("a") is None
    lru.put("c", 4, weight=1)
    assert (lru.get("b"), lru.get("c")) == (3, 4)
    lru.clear()
    assert len(lru) == 0
