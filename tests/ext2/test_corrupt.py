"""Damaged images: each kind of corruption gives a Refusal at open or EIO for the request."""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Awaitable
from pathlib import Path

import pytest

from uvfs import FSError, ImageFile, MountOptions, Refusal
from uvfs_fs.ext2 import DRIVER, Ext2FileSystem

from .conftest import open_image, resolve
from .images import debugfs

BS = 4096  # the ext4 image's block size
EXT2_BS = 1024


def poke(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


def inode_offset(image: Path, rel: str, block_size: int) -> int:
    text = debugfs(image, f"imap /{rel}")
    block, offset = re.search(r"located at block (\d+), offset (0x[0-9a-f]+)", text).groups()
    return int(block) * block_size + int(offset, 16)


def first_block(image: Path, rel: str) -> int:
    return int(debugfs(image, f"blocks /{rel}").split()[0])


@pytest.fixture(params=["ext4_image", "ext4_nocsum_image"])
def ext4_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of the ext4 image, with metadata_csum and without: without, the checks on
    the records' contents must catch what the checksums catch first."""
    return Path(shutil.copy(request.getfixturevalue(request.param), tmp_path / "image"))


@pytest.fixture
def ext2_copy(ext2_image: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(ext2_image, tmp_path / "image"))


async def refusal(image: Path) -> str:
    with ImageFile(str(image)) as img, pytest.raises(Refusal) as info:
        await DRIVER.open([img], MountOptions())
    return str(info.value)


async def eio(call: Awaitable[object], code: int = errno.EIO) -> None:
    with pytest.raises(FSError) as info:
        await call
    assert info.value.errno == code


async def test_bad_magic(ext4_copy: Path) -> None:
    poke(ext4_copy, 1080, b"\0\0")
    assert not DRIVER.probe(ext4_copy.read_bytes()[:2048])
    assert await refusal(ext4_copy) == "not an ext2/ext3/ext4 filesystem: bad superblock magic"
    with ImageFile(str(ext4_copy)) as img, pytest.raises(Refusal):
        await DRIVER.describe([img])


async def test_truncated_image(ext4_copy: Path) -> None:
    os.truncate(ext4_copy, 32 << 20)
    assert await refusal(ext4_copy) == (
        f"ext2 image is truncated: {32 << 20} bytes, the superblock says 16384 blocks of 4096"
    )
    os.truncate(ext4_copy, 1500)
    assert await refusal(ext4_copy) == (
        "not an ext2/ext3/ext4 filesystem: image too small for a superblock"
    )


async def test_needs_recovery(ext4_copy: Path) -> None:
    """An empty journal flagged for recovery: read-only replays nothing and reads; a
    writable open clears the flag (tests/ext2/test_journal.py replays real transactions)."""
    debugfs(ext4_copy, "feature needs_recovery", "-w")
    with ImageFile(str(ext4_copy)) as img:
        fs = await DRIVER.open([img], MountOptions())
        assert (await resolve(fs, "files/small")).size == 12
    assert "needs_recovery" in debugfs(ext4_copy, "features")
    with ImageFile(str(ext4_copy), writable=True) as img:
        await DRIVER.open([img], MountOptions(writable=True))
    assert "needs_recovery" not in debugfs(ext4_copy, "features")
    done = subprocess.run(["e2fsck", "-fn", str(ext4_copy)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


async def test_unknown_features_are_named(ext4_copy: Path) -> None:
    (incompat,) = struct.unpack_from("<I", ext4_copy.read_bytes(), 1024 + 0x60)
    poke(ext4_copy, 1024 + 0x60, struct.pack("<I", incompat | 0x0001 | 0x1000 | 1 << 31))
    assert await refusal(ext4_copy) == (
        "unsupported ext2 feature(s): compression, dirdata, FEATURE_I31"
    )


@pytest.mark.parametrize("state", [3, 0], ids=["errors", "not-clean"])
async def test_errors_state_needs_force_to_write(
    ext2_copy: Path, state: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors or an unclean state: read-only goes on with one warning, writing needs force."""
    debugfs(ext2_copy, f"ssv state {state}", "-w")
    with ImageFile(str(ext2_copy), writable=True) as img, pytest.raises(Refusal) as info:
        await DRIVER.open([img], MountOptions(writable=True))
    assert "run e2fsck, or mount with force" in str(info.value)
    with ImageFile(str(ext2_copy)) as img:
        fs = await DRIVER.open([img], MountOptions())
        assert (await fs.getattr(fs.root)).ino == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{ext2_copy}: ext2 filesystem has errors or was not cleanly unmounted; "
        "reading it as it is (run e2fsck)"
    ]
    with ImageFile(str(ext2_copy), writable=True) as img:
        fs = await DRIVER.open([img], MountOptions(writable=True, force=True))
        assert (await fs.getattr(fs.root)).ino == 2


async def test_bad_superblock_geometry(ext4_copy: Path) -> None:
    poke(ext4_copy, 1024 + 0x18, struct.pack("<I", 9))  # s_log_block_size: 512 KiB blocks
    assert await refusal(ext4_copy) == "corrupt ext2 superblock: block size 2^19"


async def test_inode_table_out_of_range(ext4_copy: Path) -> None:
    debugfs(ext4_copy, "set_bg 0 inode_table 0xfffffff", "-w")
    assert (await refusal(ext4_copy)).startswith("corrupt ext2 filesystem: root directory")


@pytest.mark.parametrize("fill", [b"\xff", b"\0"])
async def test_garbage_inode(ext4_copy: Path, fill: bytes) -> None:
    csummed = "metadata_csum" in debugfs(ext4_copy, "features")
    poke(ext4_copy, inode_offset(ext4_copy, "files/small", BS), fill * 256)
    # as ext4_iget: i_extra_isize 0xffff first, then the checksum, then i_links_count 0
    code = errno.EBADMSG if fill == b"\0" and csummed else errno.EUCLEAN
    img, fs = await open_image(ext4_copy)
    with img:
        files = await resolve(fs, "files")
        await eio(fs.lookup(files.ino, b"small"), code)
        listed = [entry.name for entry in await fs.readdir(files.ino)]
        assert b"small" not in listed and b"empty" in listed  # the name alone is left out
        assert (await fs.lookup(files.ino, b"empty")).size == 0  # the rest still reads


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (4, struct.pack("<H", 0)),  # rec_len 0 would loop for ever
        (4, struct.pack("<H", 13)),  # unaligned
        (4, struct.pack("<H", 8000)),  # past the block
        (6, b"\xf0"),  # name longer than the record
        (12, struct.pack("<I", 0x7FFFFFFF)),  # ".." names an inode past s_inodes_count
    ],
)
async def test_bad_directory_block(
    ext4_copy: Path, kernel_mount, offset: int, value: bytes
) -> None:
    """As the kernel: a listing skips the rest of the block from the bad record on, a
    lookup that meets it fails (EUCLEAN)."""
    poke(ext4_copy, first_block(ext4_copy, "dirs") * BS + offset, value)
    assert await dir_view(ext4_copy, "dirs", b"wide") == kernel_dir_view(
        kernel_mount(ext4_copy), "dirs", b"wide"
    )


async def dir_view(image: Path, rel: str, name: bytes) -> tuple[object, int]:
    """Directory `rel`'s names (or the errno of listing it) and the errno of looking up
    `name` in it (0 when found), through the driver."""
    img, fs = await open_image(image)
    with img:
        ino = (await resolve(fs, rel)).ino
        try:
            listing: object = sorted(entry.name for entry in await fs.readdir(ino))
        except FSError as e:
            listing = e.errno
        try:
            await fs.lookup(ino, name)
            found = 0
        except FSError as e:
            found = e.errno
    return listing, found


def kernel_dir_view(mountpoint: Path, rel: str, name: bytes) -> tuple[object, int]:
    """`dir_view` as the kernel's mount shows it."""
    path = os.fsencode(mountpoint / rel)
    try:
        listing: object = sorted(os.listdir(path))
    except OSError as e:
        listing = e.errno
    try:
        os.lstat(path + b"/" + name)
        found = 0
    except OSError as e:
        found = e.errno
    return listing, found


async def test_indirect_pointer_out_of_range(ext2_copy: Path) -> None:
    """A pointer in an indirect block past the end fails the read of what it maps (the
    kernel checks i_block's own pointers when it reads the inode: test_iget.py)."""
    ind = int(debugfs(ext2_copy, "stat /files/block").split("(IND):")[1].split(",")[0])
    poke(ext2_copy, ind * EXT2_BS, struct.pack("<I", 0xFFFFFF0))
    img, fs = await open_image(ext2_copy)
    with img:
        attr = await resolve(fs, "files/block")
        assert len(await fs.read(attr.ino, 0, 0, 12 * EXT2_BS)) == 12 * EXT2_BS
        await eio(fs.read(attr.ino, 0, 12 * EXT2_BS, 10))


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("block[0]", 0x0001F30B),  # bad magic
        ("block[1]", 0x00090004),  # eh_max 4, eh_depth 9
        ("block[0]", 0x0009F30A),  # 9 entries in a root that holds 4
    ],
)
async def test_bad_extent_root(ext4_copy: Path, word: str, value: int) -> None:
    """A bad root fails the inode itself, as ext4_iget's ext4_ext_check_inode does."""
    debugfs(ext4_copy, f"sif /files/block {word} {value:#x}", "-w")
    img, fs = await open_image(ext4_copy)
    with img:
        await eio(resolve(fs, "files/block"), errno.EUCLEAN)


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (6, struct.pack("<H", 1)),  # a leaf claiming depth 1 below a depth-1 root
        (0, b"\0\0"),  # bad magic
        (12 + 8, struct.pack("<I", 0x0FFFFFFF)),  # first extent starts past the end
        (12 + 4, struct.pack("<H", 0)),  # empty extent
        (12 + 12, struct.pack("<I", 0)),  # second extent starts before the first
    ],
)
async def test_bad_extent_leaf(ext4_copy: Path, offset: int, value: bytes) -> None:
    text = debugfs(ext4_copy, "ex /sparse/islands")
    leaf = int(text.splitlines()[1].split()[7])  # level 0's only index entry: the leaf block
    poke(ext4_copy, leaf * BS + offset, value)
    img, fs = await open_image(ext4_copy)
    with img:
        attr = await resolve(fs, "sparse/islands")
        await eio(fs.read(attr.ino, 0, 0, 10))


async def test_bad_xattr_block(ext4_copy: Path) -> None:
    acl_block = int(debugfs(ext4_copy, "stat /files/block").split("File ACL:")[1].split()[0])
    poke(ext4_copy, acl_block * BS, b"\0\0\0\0")
    img, fs = await open_image(ext4_copy)
    with img:
        attr = await resolve(fs, "files/block")
        # EUCLEAN, as ext4's block check answers a bad magic (e2fsprogs f_ea_checks)
        await eio(fs.listxattr(attr.ino), errno.EUCLEAN)
        await eio(fs.getxattr(attr.ino, b"user.big"), errno.EUCLEAN)
        assert len(await fs.read(attr.ino, 0, 0, 10)) == 10


async def test_bad_symlink_size(ext4_copy: Path) -> None:
    debugfs(ext4_copy, "sif /links/slow60 size 100000", "-w")
    debugfs(ext4_copy, "sif /links/fast59 size 70", "-w")
    img, fs = await open_image(ext4_copy)
    with img:
        # ext4_get_link: the block's string, cut at the block's end or its first NUL
        assert await fs.readlink((await resolve(fs, "links/slow60")).ino) == b"t" * 60
        await eio(resolve(fs, "links/fast59"), errno.EUCLEAN)  # "invalid fast symlink length"


async def test_huge_directory_size_is_refused_not_scanned(ext4_copy: Path) -> None:
    debugfs(ext4_copy, "sif /dirs/empty size 0x7fffffffffff", "-w")
    img, fs = await open_image(ext4_copy)
    with img:
        await eio(fs.readdir((await resolve(fs, "dirs/empty")).ino))


async def test_huge_file_size_reads_holes(ext4_copy: Path) -> None:
    debugfs(ext4_copy, "sif /files/small size 0x7fffffffffffffff", "-w")
    img, fs = await open_image(ext4_copy)
    with img:
        attr = await resolve(fs, "files/small")
        assert await fs.read(attr.ino, 0, 1 << 62, 4096) == bytes(4096)


async def damaged_call(fs: Ext2FileSystem, where: str, rel: str) -> object:
    """The request that reads the damaged record."""
    if where == "inode":
        parent, _, name = rel.rpartition("/")
        return await fs.lookup((await resolve(fs, parent)).ino, name.encode())
    attr = await resolve(fs, rel)
    if where == "extent":
        return await fs.read(attr.ino, 0, 0, 10)
    if where == "xattr":
        return await fs.listxattr(attr.ino)
    return await fs.readdir(attr.ino)


@pytest.mark.parametrize(
    ("where", "rel"),
    [
        ("inode", "files/small"),  # i_faddr: a field nothing reads
        ("extent", "sparse/islands"),  # the leaf's unused entries
        ("xattr", "files/block"),  # h_hash
        ("dir", "dirs"),  # the padding after ".."
    ],
)
async def test_checksums_catch_silent_damage(
    ext4_image: Path, ext4_nocsum_image: Path, tmp_path: Path, kernel_mount, where: str, rel: str
) -> None:
    """A checksum catches what no field check sees: EIO for the object, EBADMSG for an
    inode (ext4_iget) or an xattr block (its block check), and a directory block reads as
    the kernel reads it (EBADMSG for a listing or lookup it stops)."""
    for source, caught in ((ext4_image, True), (ext4_nocsum_image, False)):
        image = Path(shutil.copy(source, tmp_path / f"image-{caught}"))
        if where == "inode":
            offset = inode_offset(image, rel, BS) + 0x70
        elif where == "extent":
            leaf = int(debugfs(image, f"ex /{rel}").splitlines()[1].split()[7])
            offset = leaf * BS + BS - 200
        elif where == "xattr":
            acl = int(debugfs(image, f"stat /{rel}").split("File ACL:")[1].split()[0])
            offset = acl * BS + 0x0C
        else:
            offset = first_block(image, rel) * BS + 23
        old = image.read_bytes()[offset]
        poke(image, offset, bytes([old ^ 0x5A]))
        if where == "dir":
            view = await dir_view(image, rel, b"wide")
            assert view == kernel_dir_view(kernel_mount(image), rel, b"wide")
            assert (errno.EBADMSG in view) == caught
            continue
        img, fs = await open_image(image)
        with img:
            if caught:
                await eio(
                    damaged_call(fs, where, rel),
                    errno.EBADMSG if where in ("inode", "xattr") else errno.EIO,
                )
            else:
                await damaged_call(fs, where, rel)
        image.unlink()


async def test_superblock_checksum(
    ext4_image: Path, ext4_nocsum_image: Path, tmp_path: Path
) -> None:
    for source, caught in ((ext4_image, True), (ext4_nocsum_image, False)):
        image = Path(shutil.copy(source, tmp_path / "image"))
        poke(image, 1024 + 0x78, b"renamed")  # s_volume_name
        if caught:
            assert await refusal(image) == "ext4 superblock checksum does not match: run e2fsck"
        else:
            img, _ = await open_image(image)
            img.close()
        image.unlink()
