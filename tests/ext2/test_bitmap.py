"""Bitmaps: bit order, padding kept, searches for free items and free stretches."""

from __future__ import annotations

import pytest

from uvfs_fs.ext2.bitmap import Bitmap


def test_bit_order_is_lsb_first() -> None:
    bm = Bitmap(bytes([0b0000_0101]) + bytes(3), 32)
    assert [bm.used(i) for i in range(4)] == [True, False, True, False]
    bm.set_range(9, 2)
    assert bm.to_block() == bytes([0b0000_0101, 0b0000_0110, 0, 0])


def test_padding_bits_survive_a_round_trip() -> None:
    # 13 live bits: bits 13..15 of byte 1 and all later bytes are padding, set to 1.
    block = bytes([0, 0b1110_0000]) + b"\xff" * 2
    bm = Bitmap(block, 13)
    assert bm.free_count() == 13
    bm.set_range(0, 13)
    assert bm.to_block() == b"\xff" * 4
    bm.clear_range(12)
    assert bm.to_block() == bytes([0xFF, 0b1110_1111]) + b"\xff" * 2


def test_find_free_and_runs() -> None:
    bm = Bitmap(bytes(8), 64)
    bm.set_range(0, 10)
    bm.set_range(12, 3)
    assert bm.find_free() == 10
    assert bm.find_free(11) == 11
    assert bm.find_free(12) == 15
    assert bm.free_run(10, 5) == 2
    # A stretch of the whole request wins over the first free item.
    assert bm.find_free_run(0, 4) == (15, 4)
    # None that long: the first free item and what follows it.
    bm.set_range(20, 44)
    assert bm.find_free_run(0, 8) == (10, 2)
    bm.set_range(0, 64)
    assert bm.find_free(0) is None
    assert bm.find_free_run(0, 3) is None
    assert bm.find_free(64) is None


def test_count_must_fit() -> None:
    with pytest.raises(ValueError):
        Bitmap(bytes(2), 17)
