"""EA inode value hashes are checked as the kernel checks them
(ext4_xattr_inode_verify_hashes): the value's crc32c, kept in the EA inode's i_atime, and
an in-inode entry's e_hash over its name and that crc; a mismatch is EUCLEAN for that
attribute alone, and a Lustre-style EA inode (i_mtime naming its owner, same generation)
is not checked.

Each case damages test_ea_inode's kernel-made image with debugfs or a poke and compares
getxattr through the driver with getxattr on the kernel's read-only loop mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
from pathlib import Path

import pytest

from uvfs import FSError

from .conftest import debugfs_field, debugfs_stat, open_image, resolve
from .images import debugfs
from .test_corrupt import poke
from .test_ea_inode import BIG, _entry_offset, _ino, ea_image  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def _ea_ino(image: Path) -> int:
    with open(image, "rb") as f:
        f.seek(_entry_offset(image, "victim", b"v") + 4)
        return struct.unpack("<I", f.read(4))[0]


def damage(image: Path, case: str) -> None:
    ea = _ea_ino(image)
    if case == "value-hash":  # the crc32c the EA inode keeps in i_atime
        debugfs(image, f"sif <{ea}> atime @12345", "-w")
    elif case == "entry-hash":  # the in-inode entry's e_hash
        poke(image, _entry_offset(image, "victim", b"v") + 12, struct.pack("<I", 0xDEADBEEF))
    elif case == "lustre":  # a wrong i_atime, but i_mtime and i_generation name the owner
        owner = _ino(image, "victim")
        generation = debugfs_field(debugfs_stat(image, "victim"), "Generation:")
        debugfs(image, f"sif <{ea}> atime @12345", "-w")
        debugfs(image, f"sif <{ea}> mtime @{owner}", "-w")
        debugfs(image, f"sif <{ea}> generation {generation}", "-w")


async def driver_getxattr(image: Path) -> bytes | int:
    img, fs = await open_image(image)
    with img:
        ino = (await resolve(fs, "victim")).ino
        assert await fs.getxattr(ino, b"user.s") == b"small"
        try:
            return await fs.getxattr(ino, b"user.v")
        except FSError as e:
            return e.errno


def kernel_getxattr(mountpoint: Path) -> bytes | int:
    try:
        return os.getxattr(mountpoint / "victim", "user.v")
    except OSError as e:
        return e.errno


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("value-hash", errno.EUCLEAN),
        ("entry-hash", errno.EUCLEAN),
        ("lustre", BIG[::-1]),
        ("intact", BIG[::-1]),
    ],
)
async def test_ea_inode_hashes_as_on_the_kernel(
    ea_image: Path,  # noqa: F811
    tmp_path: Path,
    kernel_mount,
    case: str,
    expected: bytes | int,
) -> None:
    image = Path(shutil.copy(ea_image, tmp_path / "image"))
    damage(image, case)
    before = hashlib.sha256(image.read_bytes()).digest()
    assert await driver_getxattr(image) == expected
    assert hashlib.sha256(image.read_bytes()).digest() == before
    assert kernel_getxattr(kernel_mount(image, "ext4")) == expected
