"""RAID-Z geometry (vdev_raidz_map_alloc) and parity rebuild of every loss pattern."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs_fs.zfs.raidz import (
    RaidzCol,
    generate_parity,
    gf_inv,
    gf_mul,
    gf_pow,
    raidz_map,
    reconstruct,
)


def test_gf_arithmetic() -> None:
    assert gf_mul(0x80, 2) == 0x1D  # x^8 reduces by 0x11d
    assert gf_pow(2, 8) == 0x1D and gf_pow(2, 255) == 1
    assert all(gf_mul(a, gf_inv(a)) == 1 for a in range(1, 256))


def test_map_full_stripe() -> None:
    # 4 children, raidz1, ashift 9: 3 data sectors at raidz sector 5 = child 1, row 1.
    rm = raidz_map(5 << 9, 3 << 9, 9, 4, 1)
    assert rm.cols == (
        RaidzCol(1, 512, 512), RaidzCol(2, 512, 512), RaidzCol(3, 512, 512),
        RaidzCol(0, 1024, 512),
    )  # fmt: skip
    assert rm.nskip == 0


def test_map_short_block_with_skip() -> None:
    # raidz2 over 6, 1 data sector: 3 columns, padded to a multiple of 3: no skip; with
    # 2 data sectors: 4 columns, 2 skip sectors.
    rm = raidz_map(0, 512, 9, 6, 2)
    assert [c.devidx for c in rm.cols] == [0, 1, 2] and rm.nskip == 0
    rm = raidz_map(0, 1024, 9, 6, 2)
    assert [c.size for c in rm.cols] == [512] * 4 and rm.nskip == 2


def test_map_big_columns_and_rounding() -> None:
    # 7 sectors (6.5 rounded up) over raidz1 of 3: q=3, r=1, 2 big columns.
    rm = raidz_map(0, 6 * 512 + 100, 9, 3, 1)
    assert [c.size for c in rm.cols] == [2048, 2048, 1536]
    assert rm.nskip == 1


def test_map_raidz1_swaps_at_odd_megabytes() -> None:
    plain = raidz_map(0, 4096, 12, 3, 1)
    swapped = raidz_map(1 << 20, 4096, 12, 3, 1)
    assert [c.devidx for c in plain.cols] == [0, 1]
    # 1 MiB / 4K = sector 256, child 256 % 3 = 1: columns [1, 2], then swapped
    assert [c.devidx for c in swapped.cols] == [2, 1]


@pytest.mark.parametrize("nparity", [1, 2, 3])
def test_rebuild_every_loss_pattern(nparity: int) -> None:
    rng = random.Random(nparity)
    sizes = [1024, 1024, 512, 512, 512]
    data = [rng.randbytes(s) for s in sizes]
    parity = generate_parity(data, nparity, 1024)
    cols = len(data) + nparity
    for lost in range(1, nparity + 1):
        for gone in itertools.combinations(range(cols), lost):
            d = [None if i + nparity in gone else c for i, c in enumerate(data)]
            p = [None if j in gone else c for j, c in enumerate(parity)]
            assert reconstruct(d, p, sizes) == data, gone


def test_too_many_losses() -> None:
    data = [b"a" * 512, b"b" * 512]
    parity = generate_parity(data, 1, 512)
    with pytest.raises(ValueError, match="more lost"):
        reconstruct([None, None], parity, [512, 512])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 30), st.integers(1, 256), st.integers(9, 13), st.integers(2, 16),
       st.integers(1, 3))  # fmt: skip
def test_map_invariants(sector: int, sectors: int, ashift: int, dcols: int, nparity: int) -> None:
    if dcols <= nparity:
        return
    rm = raidz_map(sector << ashift, sectors << ashift, ashift, dcols, nparity)
    data = rm.cols[nparity:]
    assert sum(c.size for c in data) == sectors << ashift  # every data sector once
    assert all(c.size == rm.cols[0].size for c in rm.cols[:nparity])  # parity is widest
    assert len({(c.devidx, c.offset) for c in rm.cols}) == len(rm.cols)  # no overlap
    assert 0 <= rm.nskip <= nparity
    total = sum(c.size >> ashift for c in rm.cols) + rm.nskip
    assert total % (nparity + 1) == 0
