"""The driver against real images: every file of a mke2fs -d tree, as os.lstat and read see it."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from uvfs import Attr, DriverType, FSError, ImageFile, MountOptions, StatFS, Write
from uvfs._api import PROBE_SIZE
from uvfs_fs.ext2 import DRIVER, Ext2FileSystem

from .conftest import debugfs_field, debugfs_stat, open_image, resolve
from .images import FAST_SYMLINK, HUGE_FILE, HUGE_SIZE, ODD_NAMES, debugfs, make_image

CHUNK = 1 << 20


async def compare_file(fs: Ext2FileSystem, attr: Attr, path: Path) -> None:
    """Content, link target and xattrs of one node against the tree."""
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        if st.st_size > 64 << 20:  # the huge sparse file: its data and some of its holes
            offsets = [0, (4 << 30) + 12000, (4 << 30) + 12345 + 8990, HUGE_SIZE - 100, 1 << 31]
        else:
            offsets = list(range(0, st.st_size + 1, CHUNK))
        with open(path, "rb") as f:
            for offset in offsets:
                f.seek(offset)
                assert await fs.read(attr.ino, 0, offset, CHUNK) == f.read(CHUNK), (path, offset)
    elif stat.S_ISLNK(st.st_mode):
        assert await fs.readlink(attr.ino) == os.fsencode(os.readlink(path))
    names = sorted(os.fsencode(n) for n in os.listxattr(path, follow_symlinks=False))
    if "ext_attr" not in fs.geo.features:
        names = []  # mke2fs -d copies attributes only to volumes that can hold them
    assert sorted(await fs.listxattr(attr.ino)) == names
    for name in names:
        value = os.getxattr(path, name, follow_symlinks=False)
        assert await fs.getxattr(attr.ino, name) == value, (path, name)


async def compare_tree(fs: Ext2FileSystem, tree: Path, *, dir_ino: int | None = None) -> int:
    """Walk `tree` and the image together; returns how many nodes were compared."""
    ino = fs.root if dir_ino is None else dir_ino
    entries = {e.name: e.attr for e in await fs.readdir(ino)}
    expected = {os.fsencode(n) for n in os.listdir(tree)}
    if dir_ino is None:
        expected.add(b"lost+found")
    assert set(entries) == expected, tree
    count = 0
    for name, attr in entries.items():
        if dir_ino is None and name == b"lost+found":
            continue
        path = tree / os.fsdecode(name)
        st = path.lstat()
        assert attr == await fs.lookup(ino, name) == await fs.getattr(attr.ino)
        assert (attr.mode, attr.nlink, attr.uid, attr.gid) == (
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
        ), path
        if not stat.S_ISDIR(st.st_mode):
            assert attr.size == st.st_size, path
        assert attr.rdev == st.st_rdev, path
        # mke2fs -d copies whole seconds only.
        assert (attr.atime_ns, attr.mtime_ns, attr.ctime_ns) == (
            int(st.st_atime) * 10**9,
            int(st.st_mtime) * 10**9,
            int(st.st_ctime) * 10**9,
        ), path
        await compare_file(fs, attr, path)
        count += 1
        if stat.S_ISDIR(st.st_mode):
            count += await compare_tree(fs, path, dir_ino=attr.ino)
    return count


# Every feature this reader accepts without needing it, and bigalloc's 16 KiB clusters.
BIGALLOC = (
    "-O",
    "bigalloc,quota,project,metadata_csum_seed,large_dir,mmp,orphan_file,sparse_super2,"
    "stable_inodes",
    "-C",
    "16384",
)

CONFIGS = [
    # fstype, block size, revision, filetype, size MiB, extra mke2fs arguments
    pytest.param("ext2", 1024, 1, True, 64, (), id="ext2-1k"),
    pytest.param("ext2", 2048, 1, False, 64, (), id="ext2-2k-nofiletype"),
    pytest.param("ext2", 1024, 0, False, 64, (), id="ext2-1k-rev0"),
    pytest.param("ext2", 4096, 0, False, 64, (), id="ext2-4k-rev0"),
    pytest.param("ext3", 4096, 1, True, 64, (), id="ext3-4k"),
    pytest.param("ext3", 1024, 1, False, 64, (), id="ext3-1k-nofiletype"),
    pytest.param("ext4", 4096, 1, True, 64, (), id="ext4-4k"),
    pytest.param("ext4", 1024, 1, True, 64, (), id="ext4-1k"),
    pytest.param("ext4", 2048, 1, False, 64, ("-O", "^64bit"), id="ext4-2k-32bitdesc"),
    pytest.param("ext4", 4096, 1, True, 64, ("-O", "meta_bg,^resize_inode"), id="ext4-meta_bg"),
    pytest.param("ext4", 1024, 1, True, 64, ("-I", "128"), id="ext4-1k-small-inodes"),
    pytest.param("ext4", 65536, 1, True, 256, (), id="ext4-64k"),
    pytest.param("ext2", 4096, 1, False, 64, ("-o", "hurd"), id="ext2-hurd"),
    pytest.param("ext4", 1024, 1, True, 128, BIGALLOC, id="ext4-bigalloc-optional-features"),
]


@pytest.mark.parametrize(
    ("fstype", "block_size", "revision", "filetype", "size_mb", "extra"), CONFIGS
)
async def test_image_matches_tree(
    tree: Path,
    small_tree: Path,
    tmp_path: Path,
    fstype: str,
    block_size: int,
    revision: int,
    filetype: bool,
    size_mb: int,
    extra: tuple[str, ...],
) -> None:
    source = tree if revision else small_tree
    image = tmp_path / "image"
    make_image(
        source,
        image,
        fstype=fstype,
        block_size=block_size,
        revision=revision,
        filetype=filetype,
        size_mb=size_mb,
        extra=extra,
    )
    img, fs = await open_image(image)
    with img:
        assert fs.geo.block_size == block_size
        assert ("filetype" in fs.geo.features) == (filetype and revision == 1)
        assert await compare_tree(fs, source) > 650


@pytest.mark.parametrize("which", ["ext2_image", "ext4_image"])
async def test_blocks_and_generation_match_debugfs(
    which: str, request: pytest.FixtureRequest
) -> None:
    image: Path = request.getfixturevalue(which)
    img, fs = await open_image(image)
    with img:
        for rel in (HUGE_FILE, "sparse/islands", "files/block", "sparse/all_hole", "dirs/wide"):
            attr = await resolve(fs, rel)
            text = debugfs_stat(image, rel)
            assert attr.blocks == debugfs_field(text, "Blockcount:"), rel
            assert attr.generation == debugfs_field(text, "Generation:"), rel
            assert attr.ino == debugfs_field(text, "Inode:"), rel


async def test_hard_links_share_one_inode(ext2_image: Path) -> None:
    img, fs = await open_image(ext2_image)
    with img:
        inos = {
            (await resolve(fs, rel)).ino for rel in ("files/small", "links/hard1", "dirs/hard2")
        }
        assert len(inos) == 1
        assert (await resolve(fs, "files/small")).nlink == 3


class CountingImage(ImageFile):
    """An ImageFile that remembers the reads it served."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: list[tuple[int, int]] = []

    async def read(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return await super().read(offset, size)


@pytest.mark.parametrize(
    ("which", "rel", "size"),
    [
        ("ext4_image", "files/block", 300 * 1024 + 17),  # one extent
        ("ext2_image", "files/block", 12 * 1024),  # the direct blocks
        ("ext2_image", "files/size65539", 12 * 1024),
    ],
)
async def test_contiguous_blocks_are_one_read(
    which: str, rel: str, size: int, request: pytest.FixtureRequest
) -> None:
    image: Path = request.getfixturevalue(which)
    with CountingImage(str(image)) as img:
        fs = await DRIVER.open([img], MountOptions())
        attr = await resolve(fs, rel)
        await fs.read(attr.ino, 0, 0, 1)  # warm the inode and metadata caches
        img.reads.clear()
        data = await fs.read(attr.ino, 0, 0, size)
        assert len(data) == size
        assert len(img.reads) == 1
        assert img.reads[0][1] == size


async def test_htree_directories_listed_and_looked_up(tree: Path, tmp_path: Path) -> None:
    """Lookups in e2fsck -D's indexed directories go through the index (test_htree.py
    checks them name by name); listings scan linearly."""
    image = tmp_path / "image"
    make_image(tree, image, fstype="ext4", block_size=1024, revision=1, filetype=True, size_mb=64)
    # e2fsck -D re-packs every directory, indexing those of more than one block.
    subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True, check=False)
    assert debugfs_field(debugfs_stat(image, "dirs/wide"), "Flags:") & 0x1000  # EXT2_INDEX_FL
    img, fs = await open_image(image)
    with img:
        wide = await resolve(fs, "dirs/wide")
        expected = sorted(os.fsencode(n) for n in os.listdir(tree / "dirs/wide"))
        for name in expected[::37]:  # before the listing: through the index
            assert (await fs.lookup(wide.ino, name)).size > 0
        names = [e.name for e in await fs.readdir(wide.ino)]
        assert sorted(names) == expected
        assert await compare_tree(fs, tree) > 650


async def test_fast_symlink_with_extents_flag(ext4_image: Path, tmp_path: Path) -> None:
    image = tmp_path / "image"
    shutil.copy(ext4_image, image)
    # Some kernels left EXT4_EXTENTS_FL on fast symlinks: i_block is still the text.
    debugfs(image, f"sif /{FAST_SYMLINK} flags 0x80000", "-w")
    assert debugfs_field(debugfs_stat(image, FAST_SYMLINK), "Flags:") == 0x80000
    img, fs = await open_image(image)
    with img:
        attr = await resolve(fs, FAST_SYMLINK)
        assert await fs.readlink(attr.ino) == b"t" * 59


async def test_nanosecond_and_post_2038_times(ext4_image: Path, tmp_path: Path) -> None:
    image = tmp_path / "image"
    shutil.copy(ext4_image, image)
    debugfs(image, "sif /files/empty mtime 20400101000000", "-w")
    debugfs(image, "sif /files/empty mtime_extra 0x0abcdef5", "-w")  # epoch bits 1
    debugfs(image, "sif /files/empty atime @-100", "-w")
    debugfs(image, "sif /files/empty ctime_extra 0x00000010", "-w")  # 4 ns
    text = debugfs_stat(image, "files/empty")
    assert "mtime: 0x83aa7e80:0abcdef5 -- Sun Jan  1 00:00:00 2040" in text
    img, fs = await open_image(image)
    with img:
        attr = await resolve(fs, "files/empty")
        assert attr.mtime_ns == 2208988800 * 10**9 + (0x0ABCDEF5 >> 2)
        assert attr.atime_ns == -100 * 10**9
        assert attr.ctime_ns % 10**9 == 4


async def test_errors_of_requests(ext4_image: Path) -> None:
    img, fs = await open_image(ext4_image)
    with img:
        small = await resolve(fs, "files/small")
        files = await resolve(fs, "files")
        link = await resolve(fs, "links/rel")
        cases = [
            (fs.lookup(files.ino, b"missing"), errno.ENOENT),
            (fs.lookup(small.ino, b"x"), errno.ENOTDIR),
            (fs.lookup(files.ino, b"n" * 256), errno.ENAMETOOLONG),
            (fs.read(files.ino, 0, 0, 10), errno.EISDIR),
            (fs.read(link.ino, 0, 0, 10), errno.EINVAL),
            (fs.readlink(small.ino), errno.EINVAL),
            (fs.getxattr(small.ino, b"user.none"), errno.ENODATA),
        ]
        for call, code in cases:
            with pytest.raises(FSError) as info:
                await call
            assert info.value.errno == code
        assert await fs.read(small.ino, 0, 12, 10) == b""
        assert await fs.read(small.ino, 0, 7, 100) == b"ext2\n"
        names = await fs.readdir((await resolve(fs, "names")).ino)
        assert sorted(e.name for e in names) == sorted(ODD_NAMES)


async def test_writable_request_opens_read_only(ext4_image: Path) -> None:
    with ImageFile(str(ext4_image)) as img:
        fs = await DRIVER.open([img], MountOptions(writable=True))
        assert not isinstance(fs, Write)
        assert (await fs.getattr(fs.root)).ino == 2


@pytest.mark.parametrize("extra", [(), BIGALLOC], ids=["ext4", "bigalloc"])
async def test_statfs_matches_superblock(
    small_tree: Path, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    # These are the numbers the kernel's ext4 gives too (checked with a loop mount):
    # f_blocks leaves out s_overhead_clusters, f_bavail holds back the reserved blocks and
    # 2% of the clusters, at most 4096.
    image = tmp_path / "image"
    make_image(
        small_tree,
        image,
        fstype="ext4",
        block_size=1024,
        revision=1,
        filetype=True,
        size_mb=128,
        extra=extra,
    )
    img, fs = await open_image(image)
    with img:
        got = await fs.statfs()
    text = subprocess.run(
        ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
    ).stdout
    ratio = debugfs_field(text, "Cluster size:") // 1024 if extra else 1
    total = debugfs_field(text, "Block count:")
    free = debugfs_field(text, "Free blocks:")
    reserved = debugfs_field(text, "Reserved block count:")
    assert got == StatFS(
        block_size=1024,
        blocks=total - debugfs_field(text, "Overhead clusters:") * ratio,
        blocks_free=free,
        blocks_avail=free - reserved - min(total // ratio // 50, 4096) * ratio,
        files=debugfs_field(text, "Inode count:"),
        files_free=debugfs_field(text, "Free inodes:"),
        name_max=255,
    )


OVERHEAD_CONFIGS = [
    pytest.param("ext2", 1024, 0, (), id="ext2-rev0"),
    pytest.param("ext2", 1024, 1, (), id="ext2-1k"),
    pytest.param("ext3", 4096, 1, (), id="ext3-journal"),
    pytest.param("ext4", 1024, 1, (), id="ext4-flex_bg"),
    pytest.param("ext4", 1024, 1, ("-O", "meta_bg,^resize_inode"), id="ext4-meta_bg"),
    pytest.param("ext4", 1024, 1, ("-O", "^sparse_super,^resize_inode"), id="ext4-no-sparse"),
    pytest.param("ext4", 1024, 1, ("-O", "sparse_super2"), id="ext4-sparse_super2"),
]


@pytest.mark.parametrize(("fstype", "block_size", "revision", "extra"), OVERHEAD_CONFIGS)
async def test_computed_overhead_matches_mke2fs(
    small_tree: Path,
    tmp_path: Path,
    fstype: str,
    block_size: int,
    revision: int,
    extra: tuple[str, ...],
) -> None:
    image = tmp_path / "image"
    make_image(
        small_tree,
        image,
        fstype=fstype,
        block_size=block_size,
        revision=revision,
        filetype=False,
        size_mb=300,  # dozens of groups, so backups and meta groups repeat
        extra=extra,
    )
    text = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    expected = debugfs_field(text, "Overhead clusters:")
    debugfs(image, "ssv overhead_clusters 0", "-w")
    img, fs = await open_image(image)
    with img:
        assert fs.sb.s_overhead_clusters == 0
        got = await fs.statfs()
        assert got.blocks == fs.geo.blocks_count - expected


async def test_describe_agrees_with_dumpe2fs(
    ext4_image: Path, small_tree: Path, tmp_path: Path
) -> None:
    rev0 = tmp_path / "rev0"
    make_image(
        small_tree, rev0, fstype="ext2", block_size=1024, revision=0, filetype=False, size_mb=8
    )
    for image in (ext4_image, rev0):
        with ImageFile(str(image)) as img:
            text = await DRIVER.describe([img])
        reference = subprocess.run(
            ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
        ).stdout
        lines = {" ".join(line.split()) for line in reference.splitlines()}
        for line in text.splitlines():
            assert " ".join(line.split()) in lines, line
        assert len(text.splitlines()) >= 28


def test_probe(ext4_image: Path) -> None:
    head = ext4_image.read_bytes()[:PROBE_SIZE]
    assert DRIVER.probe(head)
    assert not DRIVER.probe(head[:1080] + b"\0\0" + head[1082:])
    assert not DRIVER.probe(b"")
    assert isinstance(DRIVER, DriverType)
    assert DRIVER.name == "ext2"
