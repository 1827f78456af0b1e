"""A set of disjoint byte ranges (module/zfs/range_tree.c): a metaslab's allocated space.

Ranges are half-open [start, end), kept sorted in two parallel lists and merged with
their neighbours when they touch, so a set holds as many entries as it has segments.
`add` refuses to add space already present and `remove` to remove space absent, as
range_tree_add and range_tree_remove do: either means the space maps disagree with each
other, which is corruption, not something to paper over. Both cost O(log n) to find the
place and O(n) to insert (list insertion); a metaslab holds some thousands of segments at
most.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeError(ValueError):
    """A range added over present space, or removed where space is absent."""


class RangeTree:
    """Disjoint half-open ranges of offsets, merged when adjacent."""

    __slots__ = ("_ends", "_starts", "space")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.space = 0  # total bytes held (rt_space)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The segments as (start, end), in order."""
        return zip(self._starts, self._ends, strict=True)

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, start: int, size: int) -> None:
        """Add [start, start + size), which must not overlap what is present."""
        if size <= 0:
            raise RangeError(f"adding an empty range at {start:#x}")
        end = start + size
        i = bisect.bisect_right(self._starts, start)
        n = len(self._starts)
        if (i > 0 and self._ends[i - 1] > start) or (i < n and self._starts[i] < end):
            raise RangeError(f"adding [{start:#x}, {end:#x}), which overlaps present space")
        joins_left = i > 0 and self._ends[i - 1] == start
        joins_right = i < n and self._starts[i] == end
        if joins_left and joins_right:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_left:
            self._ends[i - 1] = end
        elif joins_right:
            self._starts[i] = start
        else:
            self._starts.insert(i, start)
            self._ends.insert(i, end)
        self.space += size

    def remove(self, start: int, size: int) -> None:
        """Remove [start, start + size), which must lie wholly within one present segment."""
        end = start + size
        i = bisect.bisect_right(self._starts, start) - 1
        if size <= 0 or i < 0 or self._ends[i] < end:
            raise RangeError(f"removing [{start:#x}, {end:#x}), which is not all present")
        seg_start, seg_end = self._starts[i], self._ends[i]
        if seg_start == start and seg_end == end:
            del self._starts[i], self._ends[i]
        elif seg_start == start:
            self._starts[i] = end
        elif seg_end == end:
            self._ends[i] = start
        else:
            self._ends[i] = start
            self._starts.insert(i + 1, end)
            self._ends.insert(i + 1, seg_end)
        self.space -= size

    def contains(self, start: int, size: int) -> bool:
        """Whether all of [start, start + size) is present."""
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= start + size

    def complement(self, start: int, end: int) -> RangeTree:
        """The ranges of [start, end) that are absent here (a metaslab's free space)."""
        out = RangeTree()
        at = start
        for seg_start, seg_end in self:
            if seg_start > at:
                out.add(at, min(seg_start, end) - at)
            at = max(at, seg_end)
            if at >= end:
                break
        if at < end:
            out.add(at, end - at)
        return out
