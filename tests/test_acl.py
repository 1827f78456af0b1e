"""POSIX ACL arithmetic (uvfs/_acl.py) against what fs/posix_acl.c computes."""

from __future__ import annotations

import errno
import stat

import pytest

from uvfs import FSError
from uvfs._acl import (
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    USER,
    USER_OBJ,
    Entry,
    chmod,
    decode,
    encode,
    inherit,
    mode_from_acl,
)

MINIMAL = (Entry(USER_OBJ, 6), Entry(GROUP_OBJ, 4), Entry(OTHER, 0))
EXTENDED = (Entry(USER_OBJ, 7), Entry(USER, 7, 1002), Entry(GROUP_OBJ, 5),
            Entry(GROUP, 6, 3000), Entry(MASK, 7), Entry(OTHER, 1))  # fmt: skip


def test_encoding_is_the_kernels_xattr_form() -> None:
    value = encode(MINIMAL)
    assert value == bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff"
                                  "20000000ffffffff")  # fmt: skip
    assert decode(value) == MINIMAL


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01\0\0\0", encode(MINIMAL)[:-1], b"\x02\0\0\0" + bytes.fromhex("4000070000000000")],
)
def test_what_no_kernel_sends_is_einval(bad: bytes) -> None:
    with pytest.raises(FSError) as e:
        decode(bad)
    assert e.value.errno == errno.EINVAL


def test_mode_from_acl_takes_the_mask_for_the_group_bits() -> None:
    assert mode_from_acl(MINIMAL, stat.S_IFREG | 0o4777) == (stat.S_IFREG | 0o4640, False)
    assert mode_from_acl(EXTENDED, stat.S_IFDIR | 0o700) == (stat.S_IFDIR | 0o771, True)


def test_chmod_sets_owner_mask_and_other_and_keeps_named_entries() -> None:
    assert chmod(EXTENDED, 0o640) == (
        Entry(USER_OBJ, 6), Entry(USER, 7, 1002), Entry(GROUP_OBJ, 5),
        Entry(GROUP, 6, 3000), Entry(MASK, 4), Entry(OTHER, 0),
    )  # fmt: skip
    assert chmod(MINIMAL, 0o751) == (Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(OTHER, 1))


def test_without_a_default_acl_the_umask_applies() -> None:
    new = inherit(None, stat.S_IFREG | 0o666, 0o027)
    assert (new.mode, new.access, new.default) == (stat.S_IFREG | 0o640, None, None)


def test_a_file_inherits_the_default_acl_masked_by_its_mode() -> None:
    new = inherit(encode(EXTENDED), stat.S_IFREG | 0o640, 0o077)  # umask ignored
    assert new.mode == stat.S_IFREG | 0o640
    assert decode(new.access or b"") == (
        Entry(USER_OBJ, 6), Entry(USER, 7, 1002), Entry(GROUP_OBJ, 5),
        Entry(GROUP, 6, 3000), Entry(MASK, 4), Entry(OTHER, 0),
    )  # fmt: skip
    assert new.default is None


def test_a_directory_also_inherits_the_default_acl_itself() -> None:
    new = inherit(encode(EXTENDED), stat.S_IFDIR | 0o777, 0o022)
    assert new.mode == stat.S_IFDIR | 0o771
    assert new.default == encode(EXTENDED)
    assert decode(new.access or b"") == EXTENDED


def test_a_minimal_default_acl_gives_a_mode_and_no_access_acl() -> None:
    new = inherit(encode(MINIMAL), stat.S_IFREG | 0o666, 0o000)
    assert (new.mode, new.access) == (stat.S_IFREG | 0o640, None)


def test_symlinks_ignore_default_acls() -> None:
    new = inherit(encode(EXTENDED), stat.S_IFLNK | 0o777, 0o022)
    assert (new.mode, new.access, new.default) == (stat.S_IFLNK | 0o777, None, None)
