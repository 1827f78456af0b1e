"""Directory block editing: what the kernel's ext2 does, checked with the read side's parser."""

from __future__ import annotations

import errno

import pytest

from uvfs import FSError
from uvfs_fs.ext2.dirent import EXT2_FT_DIR, EXT2_FT_REG_FILE, dirent_rec_len, iter_dirents
from uvfs_fs.ext2.dirops import DirBlock, check_name, empty_block, first_block

BS = 1024


def names(block: DirBlock) -> list[tuple[int, bytes, int]]:
    return list(iter_dirents(bytes(block.data), filetype=True))


def rec_lens(block: DirBlock) -> list[int]:
    out, offset = [], 0
    while offset < len(block.data):
        rec_len = int.from_bytes(block.data[offset + 4 : offset + 6], "little")
        out.append(rec_len)
        offset += rec_len
    # The parsed chain the block keeps must be the one on disk.
    assert [r[2] for r in block.records] == out
    assert DirBlock(block.data).records == block.records
    return out


def test_first_block_holds_dot_and_dotdot() -> None:
    block = DirBlock(first_block(12, 2, BS, filetype=True))
    assert names(block) == [(12, b".", EXT2_FT_DIR), (2, b"..", EXT2_FT_DIR)]
    assert rec_lens(block) == [12, BS - 12]
    assert block.room() == BS - 24
    block.set_dotdot(77)
    assert names(block)[1] == (77, b"..", EXT2_FT_DIR)
    rec_lens(block)


def test_add_splits_the_slack_of_the_last_record() -> None:
    block = DirBlock(first_block(12, 2, BS, filetype=True))
    assert block.add(13, b"a" * 5, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [12, 12, BS - 24]
    assert names(block)[-1] == (13, b"aaaaa", EXT2_FT_REG_FILE)
    assert block.room() == BS - 24 - dirent_rec_len(5)


def test_remove_merges_into_the_previous_record_and_space_is_reused() -> None:
    block = DirBlock(empty_block(BS))
    for i in range(3):
        assert block.add(20 + i, b"n%d" % i, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [12, 12, BS - 24]
    assert block.remove(b"n1") == 21
    assert rec_lens(block) == [24, BS - 24]
    assert [n for _, n, _ in names(block)] == [b"n0", b"n2"]
    # The first record of a block is marked unused, not merged.
    assert block.remove(b"n0") == 20
    assert rec_lens(block) == [24, BS - 24]
    assert block.remove(b"absent") is None
    # The freed slot in front is reused by a name that fits it.
    assert block.add(30, b"x" * 16, EXT2_FT_REG_FILE)
    assert rec_lens(block) == [24, BS - 24]
    assert names(block)[0] == (30, b"x" * 16, EXT2_FT_REG_FILE)


def test_full_block_refuses_and_255_byte_names_fit() -> None:
    block = DirBlock(empty_block(BS))
    added = 0
    while block.add(100 + added, bytes([65 + added]) * 255, EXT2_FT_REG_FILE):
        added += 1
    assert added == BS // dirent_rec_len(255)
    assert all(len(n) == 255 for _, n, _ in names(block))
    assert block.room() < dirent_rec_len(255)
    rec_lens(block)


def test_retarget() -> None:
    block = DirBlock(first_block(12, 2, BS, filetype=True))
    block.add(13, b"target", EXT2_FT_REG_FILE)
    assert block.retarget(b"target", 99, EXT2_FT_DIR)
    assert names(block)[-1] == (99, b"target", EXT2_FT_DIR)
    assert not block.retarget(b"other", 99, EXT2_FT_DIR)
    rec_lens(block)


def test_64k_blocks_encode_rec_len() -> None:
    block = DirBlock(empty_block(65536))
    assert block.data[4:6] == b"\xff\xff"
    assert block.add(5, b"f", EXT2_FT_REG_FILE)
    assert names(block) == [(5, b"f", EXT2_FT_REG_FILE)]
    assert block.remove(b"f") == 5
    assert DirBlock(block.data).records == block.records


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
        DirBlock(block)
    assert e.value.errno == errno.EIO
