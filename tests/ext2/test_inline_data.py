"""Inline data (ext4 inline_data): files, directories and symlinks held in their inode, read as
the kernel reads them, and damaged ones give EIO for themselves only."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError, ImageFile, MountOptions
from uvfs_fs.ext2.writable import DRIVER as WRITABLE_DRIVER
from uvfs_fs.ext2.writable import ReadOnlyVolume, WritableExt2

from .conftest import debugfs_field, debugfs_stat, open_image, resolve
from .images import debugfs
from .test_mount_vs_kernel import view

EXT4_INLINE_DATA_FL = 0x10000000
# mke2fs -d makes these from the tree; the kernel adds those under kernel/ (mke2fs moves a
# directory to a block when i_block is full; the kernel first grows it into system.data; it
# never makes inline symlinks).
FILES = {f"files/s{size}": size for size in (0, 1, 59, 60, 61, 100, 5000)} | {"kernel/s100": 100}
LINKS = {f"links/l{size}": size for size in (10, 59, 60, 70, 100, 300)} | {"kernel/l80": 80}
DIRS = {"dirs/tiny": 2, "dirs/five": 5, "dirs/many": 120, "dirs/empty": 0, "kernel/spill": 6}
XATTR_FILE = "files/with_xattr"  # inline data and a user attribute share the inode body


def _content(size: int) -> bytes:
    return bytes((i * 7 + size) % 251 for i in range(size))


def make_nodes(root: Path, kernel: bool) -> None:
    """The cases under `root`: those the kernel makes when `kernel`, else the others."""
    for rel, size in FILES.items():
        if rel.startswith("kernel/") == kernel:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(_content(size))
    for rel, size in LINKS.items():
        if rel.startswith("kernel/") == kernel:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink("t" * size, root / rel)
    for rel, count in DIRS.items():
        if rel.startswith("kernel/") == kernel:
            (root / rel).mkdir(parents=True)
            for i in range(count):
                (root / rel / f"n{i:03d}").write_bytes(b"%d" % i)
    if not kernel:
        (root / XATTR_FILE).write_bytes(b"small and inline")
        os.setxattr(root / XATTR_FILE, "user.note", b"beside system.data")


@pytest.fixture(scope="module")
def inline_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inline") / "tree"
    make_nodes(root, kernel=False)
    return root


def make_inline_image(
    tree: Path, image: Path, block_size: int, inode_size: int, csum: bool
) -> None:
    """mke2fs -d `tree`, then the kernel's cases made on a loop mount of the image."""
    if os.geteuid() != 0:
        pytest.skip("the kernel's inline nodes need a loop mount: root")
    features = "inline_data" + ("" if csum else ",^metadata_csum")
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(block_size), "-I", str(inode_size),
         "-O", features, "-d", str(tree), str(image), "16M"],
        check=True, capture_output=True,
    )  # fmt: skip
    mountpoint = image.with_name(image.name + ".mnt")
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        make_nodes(mountpoint, kernel=True)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture(scope="module")
def inline_image(inline_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("inline") / "image"
    make_inline_image(inline_tree, image, 4096, 256, csum=True)
    return image


def test_mke2fs_made_them_inline(inline_image: Path) -> None:
    """The cases hold what they claim: small files, directories and links are inline."""
    inline = {
        rel
        for rel in [*FILES, *LINKS, *DIRS, XATTR_FILE]
        if debugfs_field(debugfs_stat(inline_image, rel), "Flags:") & EXT4_INLINE_DATA_FL
    }
    assert inline == {
        "files/s0", "files/s1", "files/s59", "files/s60", "files/s61", "files/s100",
        "links/l60", "links/l70", "links/l100", XATTR_FILE,
        "dirs/tiny", "dirs/empty", "kernel/s100", "kernel/spill",
    }  # fmt: skip
    assert "system.data (68)" in debugfs(inline_image, "ea_list /kernel/spill")
    assert "system.data (40)" in debugfs(inline_image, "ea_list /kernel/s100")


async def test_inline_nodes_read_as_the_tree(inline_tree: Path, inline_image: Path) -> None:
    img, fs = await open_image(inline_image)
    with img:
        for rel, size in FILES.items():
            attr = await resolve(fs, rel)
            assert (attr.size, await fs.read(attr.ino, 0, 0, 1 << 16)) == (size, _content(size))
            assert await fs.read(attr.ino, 0, 3, 50) == _content(size)[3:53]
        for rel, size in LINKS.items():
            assert await fs.readlink((await resolve(fs, rel)).ino) == b"t" * size
        for rel, count in DIRS.items():
            ino = (await resolve(fs, rel)).ino
            names = [entry.name for entry in await fs.readdir(ino)]
            assert sorted(names) == [b"n%03d" % i for i in range(count)]
            for name in names:
                child = await fs.lookup(ino, name)
                assert await fs.read(child.ino, 0, 0, 10) == b"%d" % int(name[1:])
            parent = await resolve(fs, rel.split("/")[0])
            assert (await fs.lookup(ino, b"..")).ino == parent.ino
            with pytest.raises(FSError) as info:
                await fs.lookup(ino, b"absent")
            assert info.value.errno == errno.ENOENT
        ino = (await resolve(fs, XATTR_FILE)).ino
        assert await fs.read(ino, 0, 0, 100) == b"small and inline"
        assert await fs.listxattr(ino) == [b"user.note"]  # system.data is not shown
        assert await fs.getxattr(ino, b"user.note") == b"beside system.data"


async def test_writing_refused_read_only_instead(inline_image: Path, tmp_path: Path) -> None:
    """The writer does not keep inline data: a writable open is read-only, with the reason."""
    image = Path(shutil.copy(inline_image, tmp_path / "image"))
    with ImageFile(str(image), writable=True) as file:
        with pytest.raises(ReadOnlyVolume, match="inline_data"):
            await WritableExt2.load(file, MountOptions(writable=True))
        fs = await WRITABLE_DRIVER.open([file], MountOptions(writable=True))
        assert not getattr(fs, "_writable", False)
        assert await fs.read((await resolve(fs, "files/s59")).ino, 0, 0, 100) == _content(59)


def _sif(image: Path, rel: str, field: str, value: int) -> None:
    """Set an inode field with debugfs, which keeps the inode checksum right."""
    debugfs(image, f"sif /{rel} {field} {value:#x}", "-w")


@pytest.mark.parametrize("size", [400, 30])
async def test_inline_file_of_any_size_reads_as_on_the_kernel(
    inline_image: Path, tmp_path: Path, kernel_mount, size: int
) -> None:
    """An inline file reads what of i_size its area holds, then zeros up to i_size, as
    the kernel's ext4_read_inline_folio fills its page."""
    image = Path(shutil.copy(inline_image, tmp_path / "image"))
    _sif(image, "files/s59", "size", size)
    img, fs = await open_image(image)
    with img:
        data = await fs.read((await resolve(fs, "files/s59")).ino, 0, 0, 1 << 16)
        assert await fs.read((await resolve(fs, "files/s61")).ino, 0, 0, 100) == _content(61)
    assert len(data) == size and data[:30] == _content(59)[:30]
    assert data == (kernel_mount(image) / "files/s59").read_bytes()


@pytest.mark.parametrize("size", [900, 30, 0])
async def test_inline_symlink_of_any_size_reads_as_on_the_kernel(
    inline_image: Path, tmp_path: Path, kernel_mount, size: int
) -> None:
    """An inline symlink reads what of i_size its area holds, as ext4_read_inline_link:
    900 bytes give the whole target, 30 its start, 0 an empty one."""
    image = Path(shutil.copy(inline_image, tmp_path / "image"))
    _sif(image, "links/l70", "size", size)
    img, fs = await open_image(image)
    with img:
        target = await fs.readlink((await resolve(fs, "links/l70")).ino)
    assert len(target) == min(size, 70)
    assert target == os.readlink(os.fsencode(kernel_mount(image) / "links/l70"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("block[2]", 0),  # first record's rec_len 0
        ("block[2]", 0x100),  # rec_len 256: past the 56 bytes
        ("block[1]", 0x7FFFFFFF),  # record for an inode past the end
        ("block[4]", 0x7FFFFFFF),  # the second record's inode past the end
    ],
)
async def test_damaged_inline_directory_lists_as_on_the_kernel(
    inline_image: Path, tmp_path: Path, kernel_mount, field: str, value: int
) -> None:
    """A bad record ends an inline directory's listing without an error: the names
    before it are listed (ext4_read_inline_dir), the rest of the volume reads on."""
    image = Path(shutil.copy(inline_image, tmp_path / "image"))
    _sif(image, "dirs/tiny", field, value)
    img, fs = await open_image(image)
    with img:
        names = sorted(e.name for e in await fs.readdir((await resolve(fs, "dirs/tiny")).ino))
        assert await fs.read((await resolve(fs, "files/s61")).ino, 0, 0, 100) == _content(61)
    assert names == sorted(os.listdir(os.fsencode(kernel_mount(image) / "dirs/tiny")))


async def test_inline_flag_without_system_data(inline_image: Path, tmp_path: Path) -> None:
    """A file flagged inline without a system.data attribute is not inline to the kernel
    (ext4_find_inline_data_nolock finds nothing): its i_block, an extent root, is checked
    as block pointers, which lie past the end: EUCLEAN for the inode (test_iget.py has the
    kernel's answer for the same damage)."""
    image = Path(shutil.copy(inline_image, tmp_path / "image"))
    _sif(image, "files/s5000", "flags", EXT4_INLINE_DATA_FL)
    img, fs = await open_image(image)
    with img:
        with pytest.raises(FSError) as info:
            await resolve(fs, "files/s5000")
        assert info.value.errno == errno.EUCLEAN
        assert await fs.read((await resolve(fs, "files/s61")).ino, 0, 0, 100) == _content(61)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("block_size", "inode_size", "csum"),
    [(4096, 256, True), (1024, 1024, False), (2048, 512, True)],
)
def test_uvfs_view_equals_the_kernels(
    inline_tree: Path, tmp_path: Path, mount, kernel_mount, block_size, inode_size, csum
) -> None:
    """Names, attributes, contents, link targets and xattrs as the kernel shows them."""
    image = tmp_path / "image"
    make_inline_image(inline_tree, image, block_size, inode_size, csum)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    theirs = view(kernel_mount(image, "ext4"))
    ours = view(mount(image, options="ro"))
    assert ours.keys() == theirs.keys()
    assert {path: (ours[path], theirs[path]) for path in ours if ours[path] != theirs[path]} == {}
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
