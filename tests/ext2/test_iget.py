"""Inodes the kernel refuses to read (ext4_iget's checks): the driver fails the same inode
with the same errno, and the rest of the volume reads.

Each case damages one inode of a small volume with debugfs (``sif`` recomputes the inode
checksum, so only the field itself is wrong) and compares the driver's lookup of it with
``lstat`` on the kernel's read-only loop mount of the same bytes.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError

from .conftest import open_image, resolve
from .images import debugfs
from .test_corrupt import inode_offset, poke

pytestmark = pytest.mark.slow

# (case, volume, debugfs requests, errno of the damaged node's lookup)
CASES = [
    ("deleted", "ext4", ["sif /file links_count 0"], errno.EUCLEAN),
    ("bogus-mode", "ext4", ["sif /file mode 0170644"], errno.EUCLEAN),
    ("extra-isize-unaligned", "ext4", ["sif /file extra_isize 6"], errno.EUCLEAN),
    ("extra-isize-too-big", "ext4", ["sif /file extra_isize 200"], errno.EUCLEAN),
    ("xattr-block-past-end", "ext4", ["sif /file file_acl 0xfffffff"], errno.EUCLEAN),
    ("extent-root-magic", "ext4", ["sif /file block[0] 0x0001f30b"], errno.EUCLEAN),
    ("extent-root-eh-max-0", "ext4", ["sif /file block[1] 0"], errno.EUCLEAN),
    ("extent-past-end", "ext4", ["sif /file block[5] 0xfffffff"], errno.EUCLEAN),
    ("extent-empty", "ext4", ["sif /file block[4] 0"], errno.EUCLEAN),
    ("fast-symlink-too-long", "ext4", ["sif /link size 60"], errno.EUCLEAN),
    ("fast-symlink-empty", "ext4", ["sif /link size 0"], errno.EUCLEAN),
    ("fast-symlink-short", "ext4", ["sif /link size 3"], errno.EUCLEAN),
    ("immutable-symlink", "ext4", ["sif /link flags 0x10"], errno.EUCLEAN),
    ("ea-inode-flag", "ext4", ["sif /file flags 0x280000"], errno.EUCLEAN),
    ("casefold-flag", "ext4", ["sif /file flags 0x40080000"], errno.EUCLEAN),
    ("inline-and-extents-flags", "ext4", ["sif /file flags 0x10080000"], errno.EUCLEAN),
    # flagged inline without a system.data attribute: i_block (an extent root) is then
    # checked as block pointers
    ("inline-flag-without-data", "ext4", ["sif /file flags 0x10000000"], errno.EUCLEAN),
    ("checksum", "ext4", ["sif /file checksum 0x1234"], errno.EBADMSG),
    ("block-past-end", "ext2", ["sif /file block[2] 0xffffff0"], errno.EUCLEAN),
    # only the direct pointers are checked then: the indirect one fails the read alone
    ("indirect-past-end", "ext2", ["sif /file block[IND] 0xffffff0"], 0),
    ("block-is-superblock", "ext2", ["sif /file block[0] 1"], errno.EUCLEAN),
    # the system zone (block_validity): descriptors, reserved descriptors, bitmaps and
    # inode tables, in every group holding a superblock copy, flex_bg or not
    ("block-is-descriptor", "ext2", ["sif /file block[0] 2"], errno.EUCLEAN),
    ("block-is-reserved-gdt", "ext2", ["sif /file block[0] 3"], errno.EUCLEAN),
    ("block-in-inode-table", "ext2", ["sif /file block[0] 100"], errno.EUCLEAN),
    ("block-is-backup-super", "ext4-big", ["sif /file block[5] 73729"], errno.EUCLEAN),
    ("block-in-free-space", "ext4-big", ["sif /file block[5] 30000"], 0),
    # meta_bg: a descriptor block in the first and last group of each meta group
    ("block-is-meta-descriptor", "ext4-meta-bg", ["sif /file block[5] 122881"], errno.EUCLEAN),
    ("block-past-meta-descriptor", "ext4-meta-bg", ["sif /file block[5] 122882"], 0),
    ("block-is-next-meta-descriptor", "ext4-meta-bg", ["sif /file block[5] 131073"], errno.EUCLEAN),
    ("special-file-blocks-unchecked", "ext2", ["sif /fifo block[0] 0xffffff0"], 0),
]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Volumes holding a 20 KiB file (indirect blocks on ext2), a fast symlink, a fifo
    and a neighbour file: ext4 (4 KiB blocks, metadata_csum), ext2 (1 KiB), and two ext4
    of 160 MiB (1 KiB blocks, 20 groups, flex groups of 16; one with meta_bg)."""
    root = tmp_path_factory.mktemp("iget")
    tree = root / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(bytes(range(256)) * 80)
    (tree / "other").write_bytes(b"still readable\n")
    (tree / "xfile").write_bytes(b"x")
    os.setxattr(tree / "xfile", "user.colour", b"blue")  # kept in the inode
    os.symlink("target-of-the-link", tree / "link")
    os.symlink("t" * 100, tree / "slowlink")
    os.mkfifo(tree / "fifo")
    made = {}
    for name, fstype, block_size, size, *extra in (
        ("ext4", "ext4", 4096, "8M"),
        ("ext2", "ext2", 1024, "8M"),
        ("ext4-big", "ext4", 1024, "160M"),
        ("ext4-meta-bg", "ext4", 1024, "160M", "-O", "meta_bg,^resize_inode"),
    ):
        image = root / f"{name}.img"
        subprocess.run(
            ["mke2fs", "-q", "-F", "-t", fstype, "-b", str(block_size), *extra,
             "-d", str(tree), str(image), size],
            check=True, capture_output=True,
        )  # fmt: skip
        made[name] = image
    return made


def kernel_errno(mountpoint: Path, rel: str) -> int:
    try:
        os.lstat(mountpoint / rel)
    except OSError as e:
        return e.errno
    return 0


async def driver_view(image: Path, rel: str) -> tuple[int, bytes]:
    """The errno of looking `rel` up through the driver (0 if found), and the neighbour's
    contents."""
    img, fs = await open_image(image)
    with img:
        try:
            await resolve(fs, rel)
            code = 0
        except FSError as e:
            code = e.errno
        other = await resolve(fs, "other")
        return code, await fs.read(other.ino, 0, 0, 100)


@pytest.mark.parametrize(
    ("fstype", "requests", "code"),
    [pytest.param(fstype, requests, code, id=case) for case, fstype, requests, code in CASES],
)
async def test_inode_fails_as_on_the_kernel(
    volumes: dict[str, Path],
    tmp_path: Path,
    kernel_mount,
    fstype: str,
    requests: list[str],
    code: int,
) -> None:
    image = Path(shutil.copy(volumes[fstype], tmp_path / "image"))
    for request in requests:
        debugfs(image, request, "-w")
    rel = requests[0].split()[1].lstrip("/")
    assert await driver_view(image, rel) == (code, b"still readable\n")
    assert kernel_errno(kernel_mount(image), rel) == code


# (case, byte offset in the first in-inode entry, bytes written there, errno): entry
# fields e_name_len 0, e_name_index 1, e_value_offs 2, e_value_inum 4, e_value_size 8,
# then the name at 16
XATTR_CASES = [
    ("name-with-nul", 16 + 2, b"\0", errno.EUCLEAN),
    ("value-past-inode", 2, struct.pack("<H", 0x200), errno.EUCLEAN),
    ("value-over-names", 2, struct.pack("<H", 0), errno.EUCLEAN),
    ("value-too-long", 8, struct.pack("<I", 100), errno.EUCLEAN),
    ("value-inode-without-feature", 4, struct.pack("<I", 12), errno.EUCLEAN),
    ("value-moved-inside", 2, struct.pack("<H", 0x40), 0),
]


@pytest.mark.parametrize(
    ("at", "data", "code"),
    [pytest.param(at, data, code, id=case) for case, at, data, code in XATTR_CASES],
)
async def test_in_inode_xattrs_checked_as_on_the_kernel(
    volumes: dict[str, Path], tmp_path: Path, kernel_mount, at: int, data: bytes, code: int
) -> None:
    """The in-inode attributes are checked when the inode is read (check_xattrs); ext2
    has no inode checksum to fail first."""
    image = Path(shutil.copy(volumes["ext2"], tmp_path / "image"))
    slot = inode_offset(image, "xfile", 1024)
    with open(image, "rb") as f:
        f.seek(slot + 128)
        extra_isize = int.from_bytes(f.read(2), "little")
    poke(image, slot + 128 + extra_isize + 4 + at, data)  # past the 4-byte magic
    assert await driver_view(image, "xfile") == (code, b"still readable\n")
    assert kernel_errno(kernel_mount(image), "xfile") == code


@pytest.mark.parametrize(
    ("size", "target"),
    [
        (100, b"t" * 100),
        (0, b""),  # read as the empty string, not refused
        (50, b"t" * 50),  # cut at i_size
        (100000, b"t" * 100),  # past the block: cut at its first NUL
    ],
)
async def test_slow_symlink_reads_as_on_the_kernel(
    volumes: dict[str, Path], tmp_path: Path, kernel_mount, size: int, target: bytes
) -> None:
    """A slow symlink reads as the kernel's ext4_get_link reads it, whatever its i_size:
    its first block as a string, ending at i_size, the block's last byte or a NUL."""
    image = Path(shutil.copy(volumes["ext4"], tmp_path / "image"))
    debugfs(image, f"sif /slowlink size {size}", "-w")
    img, fs = await open_image(image)
    with img:
        assert await fs.readlink((await resolve(fs, "slowlink")).ino) == target
    assert os.readlink(os.fsencode(kernel_mount(image) / "slowlink")) == target
