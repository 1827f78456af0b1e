"""Directory blocks: records with and without file types, htree blocks, malformed records."""

from __future__ import annotations

import errno
import struct

import pytest

from uvfs import FSError
from uvfs_fs.ext2.dirent import (
    EXT2_FT_DIR,
    EXT2_FT_REG_FILE,
    decode_rec_len,
    dirent_rec_len,
    encode_rec_len,
    ext2_dir_entry_2,
    find_dirent,
    iter_dirents,
    pack_dirent,
    scan_dirents,
)

BS = 1024


def block(*records: tuple[int, bytes, int], size: int = BS) -> bytes:
    """Records packed tight, the last one stretched to the block's end."""
    out = b""
    for i, (inode, name, ftype) in enumerate(records):
        rec_len = size - len(out) if i == len(records) - 1 else dirent_rec_len(len(name))
        out += pack_dirent(inode, name, ftype, rec_len, size)
    return out


def test_header_and_record_lengths() -> None:
    assert ext2_dir_entry_2.size == 8
    assert [dirent_rec_len(n) for n in (1, 4, 5, 255)] == [12, 12, 16, 264]
    assert pack_dirent(5, b"ab", 1, 12, BS) == struct.pack("<IHBB", 5, 12, 2, 1) + b"ab\0\0"


def test_filetype_and_unused_records() -> None:
    data = block((2, b".", EXT2_FT_DIR), (0, b"gone", 0), (12, b"file", EXT2_FT_REG_FILE))
    assert list(iter_dirents(data, filetype=True)) == [(2, b".", 2), (12, b"file", 1)]
    # Without the filetype feature that byte means nothing.
    assert list(iter_dirents(data, filetype=False)) == [(2, b".", 0), (12, b"file", 0)]


def test_htree_blocks_scan_linearly() -> None:
    # The index root: "." then ".." whose rec_len hides the dx_root info and entries.
    dx_root = struct.pack("<IBBBB", 0, 1, 8, 0, 0) + struct.pack("<HHI", 123, 2, 1) + b"\x55" * 100
    root = pack_dirent(2, b".", 2, 12, BS) + (pack_dirent(2, b"..", 2, BS - 12, BS)[:12] + dx_root)
    assert list(iter_dirents(root.ljust(BS, b"\xaa"), filetype=True)) == [
        (2, b".", 2),
        (2, b"..", 2),
    ]
    # An index node: one unused record spanning the block, index entries inside it.
    node = (struct.pack("<IHBB", 0, BS, 0, 0) + struct.pack("<HHI", 123, 5, 1)).ljust(BS, b"\x77")
    assert list(iter_dirents(node, filetype=True)) == []
    # metadata_csum's tail: an unused 12-byte record with file_type 0xde.
    tail = struct.pack("<IHBBI", 0, 12, 0, 0xDE, 0x12345678)
    leaf = block((11, b"x", 1), size=BS - 12) + tail
    assert list(iter_dirents(leaf, filetype=True)) == [(11, b"x", 1)]


def test_64k_rec_len_encoding() -> None:
    big = 65536
    for length in (12, 65532, 65536, 4096, 16 * 4096 - 12):
        assert decode_rec_len(encode_rec_len(length, big), big) == length
    assert encode_rec_len(big, big) == 0xFFFF
    assert decode_rec_len(0, big) == big
    assert decode_rec_len(12, BS) == 12
    data = block((2, b".", 2), (3, b"name", 1), size=big)
    assert list(iter_dirents(data, filetype=True)) == [(2, b".", 2), (3, b"name", 1)]


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("<IHBB", 2, 0, 1, 2) + b".".ljust(BS - 8, b"\0"),  # rec_len 0
        struct.pack("<IHBB", 2, 13, 1, 2) + b".".ljust(BS - 8, b"\0"),  # unaligned
        struct.pack("<IHBB", 2, BS + 4, 1, 2) + b".".ljust(BS - 8, b"\0"),  # past the end
        struct.pack("<IHBB", 2, 12, 9, 2) + b".".ljust(BS - 8, b"\0"),  # name past the record
        block((2, b"a/b", 1)),
        block((2, b"a\0b", 1)),
        block((2, b"", 1)),
        block((2, b"x", 1))[: BS - 4] + b"\0" * 3,  # cut inside a header
    ],
)
def test_malformed_records(data: bytes) -> None:
    with pytest.raises(FSError) as info:
        list(iter_dirents(data, filetype=True))
    assert info.value.errno == errno.EIO


def _damaged(at: int, data: bytes) -> bytes:
    """Three records, a, b and c, with `data` written at byte `at` (b starts at 12)."""
    raw = bytearray(block((11, b"a", 1), (12, b"b", 1), (13, b"c", 1)))
    raw[at : at + len(data)] = data
    return bytes(raw)


@pytest.mark.parametrize(
    ("at", "data", "why"),
    [
        (12 + 4, struct.pack("<H", 8), "bad rec_len"),  # under 12
        (12 + 4, struct.pack("<H", 14), "bad rec_len"),  # unaligned
        (12 + 6, b"\x20", "bad rec_len"),  # the name past the record
        (12 + 4, struct.pack("<H", BS - 16), "bad rec_len"),  # ends 4 bytes before the end
        (12, struct.pack("<I", 10_000), "out of bounds"),  # an inode past the count
    ],
)
def test_a_listing_keeps_the_records_before_a_bad_one(at: int, data: bytes, why: str) -> None:
    records, problem = scan_dirents(_damaged(at, data), filetype=True, inodes_count=100)
    assert records == [(11, b"a", 1)]
    assert problem is not None and why in problem


def test_a_lookup_follows_rec_len_and_checks_only_its_match() -> None:
    """As ext4_search_dir: b's name too long for its record is passed over to find c; b
    naming an inode past the count is EUCLEAN when b is the name looked up; a rec_len of 0
    stops the walk (EUCLEAN)."""
    damaged = _damaged(12 + 6, b"\x20")
    assert find_dirent(damaged, lambda name: name == b"c", inodes_count=100) == 13
    assert find_dirent(damaged, lambda name: name == b"x", inodes_count=100) is None
    for name, at, data in ((b"b", 12, struct.pack("<I", 10_000)), (b"c", 12 + 4, b"\0\0")):
        with pytest.raises(FSError) as e:
            find_dirent(_damaged(at, data), lambda n, name=name: n == name, inodes_count=100)
        assert e.value.errno == errno.EUCLEAN
