"""read_layout: where a file's bytes lie in the image; read there, they are what `read` says,
and it declines where they are not the image's bytes as they are."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from uvfs import ImageFile, Layout, MountOptions
from uvfs_fs.ext2 import DRIVER, Ext2FileSystem

from .conftest import open_image, resolve
from .images import HUGE_FILE, debugfs, make_image
from .writing import open_rw


def read_through(image: Path, layout: Layout, offset: int, size: int) -> bytes:
    """Bytes [offset, offset + size) of the file as `layout` places them in `image`."""
    end = min(offset + size, layout.size)
    data = bytearray(max(end - offset, 0))
    with open(image, "rb") as f:
        for e in layout.extents:
            lo, hi = max(offset, e.offset), min(end, e.offset + e.length)
            if lo < hi:
                data[lo - offset : hi - offset] = os.pread(
                    f.fileno(), hi - lo, e.position + lo - e.offset
                )
    return bytes(data)


def assert_well_formed(layout: Layout, offset: int, size: int) -> None:
    assert layout.start <= offset and min(offset + size, layout.size) <= layout.end <= layout.size
    at = layout.start
    for e in layout.extents:
        assert e.source == 0 and e.length > 0 and e.offset >= at
        at = e.offset + e.length
    assert at <= layout.end


async def regular_files(fs: Ext2FileSystem, tree: Path) -> list[tuple[str, int, int]]:
    """(path in the tree, inode number, size) of every regular file but the huge sparse one."""
    found = []
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree))
        if path.is_symlink() or not path.is_file() or rel == HUGE_FILE:
            continue
        attr = await resolve(fs, rel)
        found.append((rel, attr.ino, attr.size))
    return found


@pytest.mark.parametrize("which", ["ext2_image", "ext4_image"])
async def test_layout_reads_as_read(which: str, request: pytest.FixtureRequest, tree: Path) -> None:
    """Every regular file (holes, indirect levels, extent trees), at offsets across it and
    past its end: the image's bytes where the layout places them are `read`'s bytes."""
    image_path: Path = request.getfixturevalue(which)
    rng = random.Random(14)
    image, fs = await open_image(image_path)
    with image:
        files = await regular_files(fs, tree)
        assert len(files) > 10
        for rel, ino, size in files:
            ranges = [(0, size + 1), (size, 4096), (size + 5000, 10)]
            ranges += [(rng.randrange(size + 1), rng.choice([1, 4096, 70000])) for _ in range(4)]
            for offset, n in ranges:
                layout = await fs.read_layout(ino, offset, n)
                assert layout is not None, rel
                assert_well_formed(layout, offset, n)
                expected = await fs.read(ino, 0, offset, n)
                assert read_through(image_path, layout, offset, n) == expected, (rel, offset, n)


async def test_huge_sparse_file(ext4_image: Path) -> None:
    """A 5 GiB sparse file: its data is found, the gigabytes of hole hold no extent."""
    image, fs = await open_image(ext4_image)
    with image:
        attr = await resolve(fs, HUGE_FILE)
        for offset, n in [(0, 1 << 20), ((4 << 30) + 12000, 9000), ((5 << 30) - 100, 200)]:
            layout = await fs.read_layout(attr.ino, offset, n)
            assert layout is not None
            expected = await fs.read(attr.ino, 0, offset, n)
            assert read_through(ext4_image, layout, offset, n) == expected
        hole = await fs.read_layout(attr.ino, 1 << 30, 1 << 30)
        assert hole is not None and hole.extents == ()


async def test_declines_directories_and_inline_files(tmp_path: Path) -> None:
    """No layout for a directory, nor for a file whose bytes live in its inode."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "tiny").write_bytes(b"inline bytes")
    (tree / "big").write_bytes(b"x" * 10000)
    image_path = tmp_path / "inline.img"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "inline_data", "-d", str(tree),
         str(image_path), "8M"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert "Size of inline data" in debugfs(image_path, "stat /tiny")
    image, fs = await open_image(image_path)
    with image:
        assert await fs.read_layout(fs.root, 0, 4096) is None
        tiny = await resolve(fs, "tiny")
        assert await fs.read_layout(tiny.ino, 0, 4096) is None
        big = await resolve(fs, "big")
        layout = await fs.read_layout(big.ino, 0, 20000)
        assert layout is not None
        assert read_through(image_path, layout, 0, 20000) == b"x" * 10000


async def test_declines_a_journal_replayed_in_memory(small_tree: Path, tmp_path: Path) -> None:
    """A journal that rewrites a file's block is replayed in memory over the image: the
    image's bytes are stale there, so there is no layout, and `read` shows the new ones."""
    image_path = tmp_path / "journal.img"
    make_image(small_tree, image_path, fstype="ext4", block_size=1024, revision=1,
               filetype=True, size_mb=16)  # fmt: skip
    (block,) = (int(b) for b in debugfs(image_path, "blocks /files/size1024").split())
    new = tmp_path / "new"
    new.write_bytes(b"J" * 1024)
    script = f"jo\njw -b {block} {new}\njc\n"
    subprocess.run(["debugfs", "-w", "-f", "-", str(image_path)], input=script, text=True,
                   check=True, capture_output=True)  # fmt: skip
    image, fs = await open_image(image_path)
    with image:
        attr = await resolve(fs, "files/size1024")
        assert await fs.read(attr.ino, 0, 0, 1024) == b"J" * 1024
        assert await fs.read_layout(attr.ino, 0, 1024) is None


async def test_declines_on_a_writable_volume(tmp_path: Path) -> None:
    """A writable volume's blocks move under writes: no layout."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"data" * 1000)
    image_path = tmp_path / "rw.img"
    make_image(tree, image_path, fstype="ext2", block_size=1024, revision=1, filetype=True,
               size_mb=8)  # fmt: skip
    async with open_rw(image_path) as fs:
        attr = await resolve(fs, "f")
        assert stat.S_ISREG(attr.mode)
        assert await fs.read_layout(attr.ino, 0, 4096) is None
    with ImageFile(str(image_path)) as image:  # read-only, the same volume has one
        ro = await DRIVER.open([image], MountOptions())
        assert await ro.read_layout(attr.ino, 0, 4096) is not None
