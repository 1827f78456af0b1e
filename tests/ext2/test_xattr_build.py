"""Attribute areas built for writing: what mke2fs wrote parses, rebuilds and parses the same."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError
from uvfs_fs.ext2.xattr import parse_block, parse_ibody
from uvfs_fs.ext2.xattr_build import (
    RawEntry,
    block_hash,
    build_block,
    build_ibody,
    entry_hash,
    parse_block_raw,
    split_name,
)

from .images import debugfs


def test_names() -> None:
    assert split_name(b"user.color") == (1, b"color")
    assert split_name(b"trusted.t") == (4, b"t")
    assert split_name(b"security.selinux") == (6, b"selinux")
    assert split_name(b"system.posix_acl_access") == (2, b"")
    assert split_name(b"system.posix_acl_default") == (3, b"")
    for bad in (b"system.posix_acl_other", b"system.data", b"user.", b"other.x"):
        with pytest.raises(FSError) as e:
            split_name(bad)
        assert e.value.errno == errno.ENOTSUP
    with pytest.raises(FSError) as e:
        split_name(b"user." + b"n" * 256)
    assert e.value.errno == errno.ERANGE


def test_hashes() -> None:
    # By hand: name "a" is 0x61; the value word 0x64636261 ("abcd") after a 16-bit rotate.
    assert entry_hash(RawEntry(1, b"a", b"")) == 0x61
    assert entry_hash(RawEntry(1, b"a", b"abcd")) == (0x61 << 16) ^ 0x64636261
    assert block_hash([1, 2]) == (1 << 16) ^ 2
    assert block_hash([1, 0, 2]) == 0


def test_block_and_ibody_round_trip() -> None:
    entries = [RawEntry(1, b"zz", b"v" * 5), RawEntry(1, b"a", b""), RawEntry(4, b"t", b"x" * 9)]
    block = build_block(entries, 1024)
    assert block is not None
    assert sorted(parse_block_raw(block)) == sorted(entries)
    assert sorted(parse_block(block)) == sorted(
        [(b"user.zz", b"vvvvv"), (b"user.a", b""), (b"trusted.t", b"x" * 9)]
    )
    area = build_ibody(entries[:2], 96)
    assert area is not None and len(area) == 96
    assert sorted(parse_ibody(area)) == [(b"user.a", b""), (b"user.zz", b"vvvvv")]
    assert build_ibody([], 96) == bytes(96)
    assert build_ibody([RawEntry(1, b"big", bytes(100))], 96) is None
    assert build_block([RawEntry(1, b"big", bytes(1000))], 1024) is None


def test_what_mke2fs_wrote_rebuilds_to_the_same_attributes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"")
    try:
        for i in range(12):
            os.setxattr(tree / "f", f"user.attr{i}", bytes([i]) * (i * 8))
    except OSError as e:
        pytest.skip(f"no user xattrs here: {e}")
    image = tmp_path / "img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-I", "256", "-d", str(tree),
                    str(image), "4M"], check=True, capture_output=True)  # fmt: skip
    acl_block = int(debugfs(image, "stat /f").split("File ACL: ")[1].split()[0])
    with open(image, "rb") as f:
        f.seek(acl_block * 1024)
        raw = f.read(1024)
    entries = parse_block_raw(raw)
    assert entries  # the 256-byte inode could not hold them all
    rebuilt = build_block(entries, 1024, refcount=int.from_bytes(raw[4:8], "little"))
    assert rebuilt is not None
    assert parse_block(rebuilt) == parse_block(raw)
    # Each entry's e_hash as e2fsprogs computed it (mke2fs leaves h_hash 0: never shared).
    assert entry_hashes(rebuilt) == entry_hashes(raw)


def entry_hashes(block: bytes) -> dict[bytes, int]:
    out, offset = {}, 32
    while block[offset : offset + 4] != bytes(4):
        name_len = block[offset]
        name = block[offset + 16 : offset + 16 + name_len]
        out[name] = int.from_bytes(block[offset + 12 : offset + 16], "little")
        offset = (offset + 16 + name_len + 3) & ~3
    return out
