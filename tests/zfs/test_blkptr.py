"""blkptr_t decoding: field offsets and bit positions, both byte orders, embedded pointers."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs_fs.zfs.blkptr import BLKPTR_SIZE, DVA, BlockPtrs, parse_blkptr, parse_blkptrs


def _prop(lsize: int, psize: int, comp: int, cksum: int, typ: int, level: int, little: bool) -> int:
    return (
        ((lsize >> 9) - 1)
        | (((psize >> 9) - 1) << 16)
        | (comp << 32)
        | (cksum << 40)
        | (typ << 48)
        | (level << 56)
        | (int(little) << 63)
    )


def _words(order: str, words: list[int]) -> bytes:
    return struct.pack(order + "16Q", *words)


@pytest.mark.parametrize("order", ["<", ">"])
def test_plain_pointer(order: str) -> None:
    words = [0] * 16
    words[0] = (1 << 32) | (3 << 24) | 8  # vdev 1, grid 3, asize 8 sectors
    words[1] = 0x1234
    words[2] = 16
    words[3] = (1 << 63) | 0x99  # a gang copy
    words[6] = _prop(131072, 4096, 3, 7, 19, 2, little=True)
    words[9] = 41
    words[10] = 42
    words[11] = 5
    words[12:16] = [11, 12, 13, 14]
    bp = parse_blkptr(_words(order, words), order)
    assert bp.dvas == (
        DVA(vdev=1, offset=0x1234 << 9, asize=4096, gang=False),
        DVA(vdev=0, offset=0x99 << 9, asize=8192, gang=True),
    )
    assert (bp.lsize, bp.psize, bp.compress, bp.checksum, bp.type, bp.level) == (
        131072, 4096, 3, 7, 19, 2,
    )  # fmt: skip
    assert bp.byteorder == "<"
    assert (bp.birth_txg, bp.phys_birth, bp.fill, bp.cksum) == (42, 41, 5, (11, 12, 13, 14))
    assert not bp.embedded and not bp.is_hole and not bp.encrypted and not bp.dedup


def test_hole_and_big_endian_data() -> None:
    words = [0] * 16
    words[6] = _prop(512, 512, 0, 0, 20, 0, little=False)
    words[10] = 7
    bp = parse_blkptr(_words("<", words), "<")
    assert bp.is_hole and bp.dvas == () and bp.byteorder == ">" and bp.birth_txg == 7


@pytest.mark.parametrize("order", ["<", ">"])
def test_embedded_pointer(order: str) -> None:
    payload = bytes(range(1, 113))
    words = [0] * 16
    it = iter(struct.unpack("<14Q", payload))
    for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 14, 15):
        words[i] = next(it)
    words[6] = (4000 - 1) | ((100 - 1) << 25) | (15 << 32) | (1 << 39) | (19 << 48) | (1 << 63)
    words[10] = 99
    bp = parse_blkptr(_words(order, words), order)
    assert bp.embedded and not bp.is_hole and bp.dvas == ()
    assert (bp.lsize, bp.psize, bp.compress, bp.etype, bp.type) == (4000, 100, 15, 0, 19)
    assert bp.payload == payload[:100] and bp.birth_txg == 99


def test_indirect_block() -> None:
    words = [0] * 16
    words[6] = _prop(512, 512, 2, 7, 10, 0, little=True)
    raw = _words("<", words) * 4
    assert len(parse_blkptrs(raw, "<")) == 4 and BLKPTR_SIZE == 128


def test_lazy_pointers_are_the_parsed_ones() -> None:
    """BlockPtrs knows its length unparsed and then gives exactly parse_blkptrs' records."""
    words = [0] * 16
    raw = b"".join(
        _words(">", [*words[:6], _prop(512 << i, 512, 2, 7, 19, 0, False), *words[7:]])
        for i in range(3)
    )
    lazy = BlockPtrs(raw, ">")
    assert len(lazy) == 3
    assert lazy == tuple(parse_blkptrs(raw, ">")) and lazy[1].lsize == 1024
    assert [bp.lsize for bp in lazy] == [512, 1024, 2048] and lazy[-2:] == tuple(lazy)[1:]
    assert hash(lazy) == hash(BlockPtrs(raw, ">"))


def _bits(word: int, low: int, count: int) -> int:
    return (word >> low) & ((1 << count) - 1)


def _dva_fields(word0: int, word1: int) -> tuple[int, int, int, bool]:
    """A DVA read bit by bit from the layout in spa.h: (vdev, offset, asize, gang)."""
    return (_bits(word0, 32, 24), _bits(word1, 0, 63) * 512, _bits(word0, 0, 24) * 512,
            bool(_bits(word1, 63, 1)))  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=16, max_size=16),
       st.sampled_from("<>"), st.sets(st.integers(0, 5)))  # fmt: skip
def test_fast_decode_agrees_with_the_bit_layout(
    words: list[int], order: str, zeroed: set[int]
) -> None:
    """The positional fast path gives every field the bit layout defines; empty DVAs (all
    fields zero, grid bits aside) are dropped and an empty first DVA makes a hole."""
    words[6] &= ~(1 << 39)  # not embedded (the embedded form has its own test)
    for i in zeroed:  # empty DVAs are common: zero some words, keep some grid bits
        words[i] = words[i] & (0xFF << 24) if i % 2 == 0 else 0
    bp = parse_blkptr(_words(order, words), order)
    prop = words[6]
    dvas = [_dva_fields(words[i], words[i + 1]) for i in (0, 2, 4)]
    empty = [d[:3] == (0, 0, 0) and not d[3] for d in dvas]
    assert [(d.vdev, d.offset, d.asize, d.gang) for d in bp.dvas] == [
        d for d, e in zip(dvas, empty, strict=True) if not e
    ]
    assert bp.is_hole == empty[0]
    assert (bp.lsize, bp.psize) == ((_bits(prop, 0, 16) + 1) * 512, (_bits(prop, 16, 16) + 1) * 512)
    assert (bp.compress, bp.checksum, bp.type, bp.level) == (
        _bits(prop, 32, 7), _bits(prop, 40, 8), _bits(prop, 48, 8), _bits(prop, 56, 5))  # fmt: skip
    assert (bp.encrypted, bp.dedup, bp.embedded) == (bool(_bits(prop, 61, 1)),
                                                     bool(_bits(prop, 62, 1)), False)  # fmt: skip
    assert bp.byteorder == ("<" if _bits(prop, 63, 1) else ">")
    assert (bp.phys_birth, bp.birth_txg, bp.fill) == (words[9], words[10], words[11])
    assert bp.cksum == tuple(words[12:16])
