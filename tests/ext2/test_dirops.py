"""Directory block editing: what the kernel's ext2 does, checked with the read side's parser."""

from __future__ import annotations

import errno

import pytest

from uvfs import FSError
from uvfs_fs.ext2.dirent import EXT2_FT_DIR, EXT2_FT_REG_FILE, dirent_rec_len, iter_dirents
from uvfs_fs.ext2.dirops import (
    add_entry,
    check_name,
    empty_block,
    first_block,
    remove_entry,
    retarget_entry,
    room,
    set_dotdot,
)

BS = 1024


def names(block: bytearray) -> list[tuple[int, bytes, int]]:
    return list(iter_dirents(bytes(block), filetype=True))


def rec_lens(block: bytearray) -> list[int]:
    out, offset = [], 0
    while offset < len(block):
        rec_len = int.from_bytes(block[offset + 4 : offset + 6], "little")
        out.append(rec_len)
        offset += rec_len
    return out


def test_first_block_holds_dot_and_dotdot() -> None:
    block = first_block(12, 2, BS, filetype=True)
    assert names(block) == [(12, b".", EXT2_FT_DIR), (2, b"..", EXT2_FT_DIR)]
    assert rec_lens(block) == [12, BS - 12]
    assert room(block) == BS - 24
    set_dotdot(block, 77)
    assert names(block)[1] == (77, b"..", EXT2_FT_DIR)


def test_add_splits_the_slack_of_the_last_record() -> None:
    block = first_block(12, 2, BS, filetype=True)
    left = add_entry(block, 13, b"a" * 5, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [12, 12, BS - 24]
    assert names(block)[-1] == (13, b"aaaaa", EXT2_FT_REG_FILE)
    assert left == room(block) == BS - 24 - dirent_rec_len(5)


def test_remove_merges_into_the_previous_record_and_space_is_reused() -> None:
    block = empty_block(BS)
    for i in range(3):
        assert add_entry(block, 20 + i, b"n%d" % i, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [12, 12, BS - 24]
    assert remove_entry(block, b"n1") == 21
    assert rec_lens(block) == [24, BS - 24]
    assert [n for _, n, _ in names(block)] == [b"n0", b"n2"]
    # The first record of a block is marked unused, not merged.
    assert remove_entry(block, b"n0") == 20
    assert rec_lens(block) == [24, BS - 24]
    assert remove_entry(block, b"absent") is None
    # The freed slot in front is reused by a name that fits it.
    assert add_entry(block, 30, b"x" * 16, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [24, BS - 24]
    assert names(block)[0] == (30, b"x" * 16, EXT2_FT_REG_FILE)


def test_full_block_refuses_and_255_byte_names_fit() -> None:
    block = empty_block(BS)
    added = 0
    while add_entry(block, 100 + added, bytes([65 + added]) * 255, EXT2_FT_REG_FILE) is not None:
        added += 1
    assert added == BS // dirent_rec_len(255)
    assert all(len(n) == 255 for _, n, _ in names(block))
    assert room(block) < dirent_rec_len(255)


def test_retarget() -> None:
    block = first_block(12, 2, BS, filetype=True)
    add_entry(block, 13, b"target", EXT2_FT_REG_FILE)
    assert retarget_entry(block, b"target", 99, EXT2_FT_DIR)
    assert names(block)[-1] == (99, b"target", EXT2_FT_DIR)
    assert not retarget_entry(block, b"other", 99, EXT2_FT_DIR)


def test_64k_blocks_encode_rec_len() -> None:
    block = empty_block(65536)
    assert block[4:6] == b"\xff\xff"
    assert add_entry(block, 5, b"f", EXT2_FT_REG_FILE)
    assert names(block) == [(5, b"f", EXT2_FT_REG_FILE)]
    assert remove_entry(block, b"f") == 5


@pytest.mark.parametrize(
    ("name", "code"),
    [(b"x" * 256, errno.ENAMETOOLONG), (b"", errno.EINVAL), (b"a/b", errno.EINVAL),
     (b"..", errno.EINVAL), (b"a\0", errno.EINVAL)],
)  # fmt: skip
def test_bad_names(name: bytes, code: int) -> None:
    with pytest.raises(FSError) as e:
        check_name(name)
    assert e.value.errno == code
    check_name(b"x" * 255)


def test_corrupt_chain_is_eio() -> None:
    block = empty_block(BS)
    block[4:6] = (0).to_bytes(2, "little")
    with pytest.raises(FSError) as e:
        add_entry(block, 1, b"a", 1)
    assert e.value.errno == errno.EIO
