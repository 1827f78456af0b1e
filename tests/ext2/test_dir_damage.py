"""Directories the kernel reads despite their state: the driver lists and looks up as it does.

Each case damages a copy of the test volume the way e2fsprogs' test images are damaged and
compares the driver with the kernel's read-only mount of the same bytes.
"""

from __future__ import annotations

import errno
import shutil
import struct
from pathlib import Path

from .images import debugfs
from .test_corrupt import BS, dir_view, inode_offset, kernel_dir_view, poke

EXTENT_FIRST = 0x28 + 12 + 4  # i_block, past the extent header and ee_block: ee_len
EXT_INIT_MAX_LEN = 1 << 15


async def test_uninitialized_directory_extent_is_read(
    ext4_nocsum_image: Path, tmp_path: Path, kernel_mount
) -> None:
    """A directory whose extent is flagged uninitialized still lists its names: the kernel
    reads directory blocks whatever the flag says (e2fsprogs' f_uninit_dir)."""
    image = Path(shutil.copy(ext4_nocsum_image, tmp_path / "image"))
    at = inode_offset(image, "dirs", BS) + EXTENT_FIRST
    (ee_len,) = struct.unpack("<H", image.read_bytes()[at : at + 2])
    assert 0 < ee_len <= EXT_INIT_MAX_LEN
    poke(image, at, struct.pack("<H", ee_len + EXT_INIT_MAX_LEN))
    assert "[u]" in debugfs(image, "stat /dirs")
    view = await dir_view(image, "dirs", b"wide")
    assert view == kernel_dir_view(kernel_mount(image), "dirs", b"wide")
    assert b"wide" in view[0] and view[1] == 0


async def test_a_hole_for_the_only_block_fails_the_listing(
    ext2_image: Path, tmp_path: Path, kernel_mount
) -> None:
    """A directory of one block whose block is a hole: the kernel lists such a directory
    through its htree code, which finds the hole (EUCLEAN); a lookup in it finds nothing."""
    image = Path(shutil.copy(ext2_image, tmp_path / "image"))
    debugfs(image, "sif /dirs/empty block[0] 0", "-w")
    view = await dir_view(image, "dirs/empty", b"x")
    assert view == kernel_dir_view(kernel_mount(image), "dirs/empty", b"x")
    assert view[0] == errno.EUCLEAN
