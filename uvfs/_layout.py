"""Reading files from the images where their driver says their bytes lie (`ReadLayout`),
without a driver call per read.

A `LayoutReader` asks the driver once per `WINDOW` of a file (a 64 MiB stretch, aligned)
where its bytes lie, keeps that `Layout`, and answers each read in the window with reads of
the images: an isolated driver's broker spares a round trip to the driver process per cold
read (a random 4 KiB read cost twice as much isolated as in-process). A window the driver
declined (None: its bytes are not the image's, as they are) or failed to place (damage: an
errno) is remembered too, and its reads go to the driver's `read`, which says what the
read's own bytes hold; so do reads of a layout the driver got wrong (a bad source index or
a range it does not cover).

Coherence is the owner's: a layout holds until the file is written or truncated, or the
driver restarts (`ReadLayout`), so the owner calls `clear` then. A layout
learnt while `clear` ran is not kept: it may describe the old state. The isolation proxy
uses layouts only on read-only mounts, where neither writes nor truncates exist.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence

from uvfs._api import FSError, Layout
from uvfs._lru import LRU
from uvfs._window import BlockDevice

WINDOW = 64 << 20  # bytes of a file asked about at once (a few indirect blocks' worth)
# Extents kept over all files, oldest windows dropped first: about 220 bytes each, so at most
# ~4 MiB (outside the cache budget: a contiguous file's window is a few extents, and
# cache_size=0 must not make every read ask for its layout again).
EXTENTS_KEPT = 1 << 14

FetchLayout = Callable[[int, int, int], Awaitable[Layout | None]]


class _Placed:
    """A window's layout with its extents' start offsets, for bisecting."""

    __slots__ = ("layout", "starts")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.starts = [e.offset for e in layout.extents]


_UNKNOWN = _Placed(Layout(0, 0, 0, ()))  # a sentinel: a window not asked about yet


class LayoutReader:
    """Reads files through the layouts `fetch(ino, offset, size)` gives, from `devices`
    (the driver's sources, in the order it was given them)."""

    def __init__(self, devices: Sequence[BlockDevice], fetch: FetchLayout) -> None:
        self._devices = devices
        self._fetch = fetch
        self._placed: LRU[tuple[int, int], _Placed | None] = LRU(EXTENTS_KEPT)
        self._generation = 0  # moved by `clear`
        self.layouts_fetched = 0  # statistics: driver calls made
        self.reads = 0  # reads answered from the images

    async def read(self, ino: int, offset: int, size: int) -> bytes | None:
        """Bytes [offset, offset + size) of file `ino`, fewer at its end, read from the
        images; None when the driver's `read` must answer them."""
        window = offset // WINDOW
        key = (ino, window)
        placed = self._placed.get(key, _UNKNOWN)
        if placed is _UNKNOWN:
            placed = await self._learn(key, offset + size)
        if placed is None:
            return None
        layout = placed.layout
        end = min(offset + size, layout.size)
        if offset >= end:
            return b""
        if offset < layout.start or end > layout.end:
            return None
        extents = layout.extents
        parts: list[bytes] = []
        at = offset
        for i in range(max(bisect_right(placed.starts, offset) - 1, 0), len(extents)):
            extent = extents[i]
            if extent.offset >= end:
                break
            lo, hi = max(at, extent.offset), min(end, extent.offset + extent.length)
            if lo >= hi:
                continue
            if not 0 <= extent.source < len(self._devices):
                return None
            if lo > at:
                parts.append(bytes(lo - at))  # a hole
            device = self._devices[extent.source]
            parts.append(await device.read(extent.position + lo - extent.offset, hi - lo))
            at = hi
        if at < end:
            parts.append(bytes(end - at))
        self.reads += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _learn(self, key: tuple[int, int], end: int) -> _Placed | None:
        """Ask the driver for the layout of window ``key = (ino, window)`` (and up to `end`,
        for a read that crosses into the next one); kept unless a `clear` came meanwhile."""
        ino, window = key
        generation = self._generation
        start = window * WINDOW
        self.layouts_fetched += 1
        try:
            layout = await self._fetch(ino, start, max(start + WINDOW, end) - start)
        except FSError:
            layout = None
        placed = None if layout is None else _Placed(layout)
        if generation == self._generation:
            self._placed.put(key, placed, 1 if layout is None else len(layout.extents) + 1)
        return placed

    def clear(self) -> None:
        """Forget every layout (the driver restarted, or files changed)."""
        self._placed.clear()
        self._generation += 1
