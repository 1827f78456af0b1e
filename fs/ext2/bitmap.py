"""Block and inode bitmaps: one block per group, bit *i* set when item *i* of the group is used.

Bits are numbered from the least significant bit of byte 0 (e2fsprogs' ext2fs_test_bit).
A group uses only its first `count` bits (the last group may be short, and an inode
bitmap covers only s_inodes_per_group bits); the bits after them up to the end of the block
are padding that must stay set, or e2fsck reports "padding at end of bitmap is not set".
`Bitmap` therefore keeps the live bits unpacked in a numpy array, where searches are
vector operations, and the raw block for the padding, which it writes back untouched.
"""

from __future__ import annotations

import numpy as np


class Bitmap:
    """The first `count` bits of one bitmap block, editable, and the block they came from.

    Args:
        block: the bitmap block as stored.
        count: how many leading bits describe real blocks or inodes.
    """

    def __init__(self, block: bytes, count: int) -> None:
        if not 0 < count <= 8 * len(block):
            raise ValueError(f"{count} bits do not fit in a {len(block)}-byte bitmap")
        self._block = bytes(block)
        self.count = count
        self.bits = np.unpackbits(np.frombuffer(block, dtype=np.uint8), bitorder="little")[
            :count
        ].astype(bool)

    def to_block(self) -> bytes:
        """The block to store: the live bits packed, then the original padding."""
        packed = np.packbits(self.bits, bitorder="little").tobytes()
        full, rest = divmod(self.count, 8)
        if rest:
            # The byte shared by live bits and padding keeps its padding bits.
            tail_mask = 0xFF & ~((1 << rest) - 1)
            last = packed[full] | (self._block[full] & tail_mask)
            return packed[:full] + bytes([last]) + self._block[full + 1 :]
        return packed + self._block[full:]

    def used(self, index: int) -> bool:
        return bool(self.bits[index])

    def set_range(self, start: int, count: int = 1) -> None:
        """Mark items [start, start + count) used."""
        self.bits[start : start + count] = True

    def clear_range(self, start: int, count: int = 1) -> None:
        """Mark items [start, start + count) free."""
        self.bits[start : start + count] = False

    def free_count(self) -> int:
        return self.count - int(np.count_nonzero(self.bits))

    def find_free(self, start: int = 0) -> int | None:
        """The first free item at or after `start`, or None."""
        if start >= self.count:
            return None
        tail = self.bits[start:]
        first = int(np.argmin(tail))
        return None if tail[first] else start + first

    def free_run(self, start: int, limit: int) -> int:
        """How many items from `start` on are free, counting at most `limit`."""
        window = self.bits[start : start + limit]
        if not len(window):
            return 0
        first_used = int(np.argmax(window))
        return first_used if window[first_used] else len(window)

    def find_free_run(self, start: int, want: int) -> tuple[int, int] | None:
        """The first stretch of free items at or after `start`: (first, length <= want).

        A stretch of the full `want` is preferred anywhere at or after `start`; failing
        that, the first free item and the free items right after it.
        """
        first = self.find_free(start)
        if first is None:
            return None
        length = self.free_run(first, want)
        if length == want:
            return first, want  # the common case: no need to look further
        free = ~self.bits[first:]
        if len(free) >= want:
            # Free bits in each window of `want`, from a running count: O(bits), not O(bits * want).
            running = np.concatenate(([0], np.cumsum(free, dtype=np.int64)))
            full = np.flatnonzero(running[want:] - running[:-want] == want)
            if len(full):
                return first + int(full[0]), want
        return first, length
