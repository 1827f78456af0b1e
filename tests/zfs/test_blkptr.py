"""blkptr_t decoding: field offsets and bit positions, both byte orders, embedded pointers."""

import struct

import pytest

from uvfs_fs.zfs.blkptr import BLKPTR_SIZE, DVA, parse_blkptr, parse_blkptrs


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
