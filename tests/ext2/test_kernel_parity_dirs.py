"""A listed name shows the inode its lookup finds, as the kernel's stat after readdir does:
of two records with one name, the one the kernel's search meets first (e2fsprogs
f_dup_de2); in an index whose root routes hashes to the wrong leaves (f_h_badroot), the
names its lookups miss are left out (the kernel lists them and fails their stat with
ENOENT), the others found. Each against the kernel's read-only loop mount of the same
bytes; the image is not written.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from uvfs import FSError

from .conftest import open_image, resolve
from .images import debugfs
from .test_corrupt import poke
from .test_htree import DIR, _dx_root_offset, make_dir_image

pytestmark = pytest.mark.slow


def kernel_view(mountpoint: Path) -> tuple[list[bytes], dict[bytes, int]]:
    """The sorted listing of `mountpoint`, and each listed name's lstat: inode or -errno."""
    names = sorted(os.listdir(os.fsencode(mountpoint)))
    found = {}
    for name in names:
        try:
            found[name] = os.lstat(os.fsencode(mountpoint) + b"/" + name).st_ino
        except OSError as e:
            found[name] = -e.errno
    return names, found


async def driver_view(image: Path, rel: str) -> tuple[list[bytes], dict[bytes, int], dict]:
    """The driver's sorted listing of `rel` ("" for the root), the inode each listed entry
    carries, and each name's lookup (inode or -errno)."""
    img, fs = await open_image(image)
    with img:
        ino = (await resolve(fs, rel)).ino if rel else fs.root
        entries = await fs.readdir(ino)
        carried: dict[bytes, set[int]] = {}
        for entry in entries:
            carried.setdefault(entry.name, set()).add(entry.attr.ino)
        looked_up = {}
        for name in carried:
            try:
                looked_up[name] = (await fs.lookup(ino, name)).ino
            except FSError as e:
                looked_up[name] = -e.errno
    return sorted(entry.name for entry in entries), looked_up, carried


async def test_duplicate_name_shows_the_first_record(tmp_path: Path, kernel_mount) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "dupname1").write_bytes(b"first\n")
    (tree / "other").write_bytes(b"second\n")
    image = tmp_path / "image"
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^metadata_csum", "-d", str(tree),
         str(image), "8M"],
        check=True, capture_output=True,
    )  # fmt: skip
    debugfs(image, "ln /other dupname2", "-w")  # then renamed in place: a second dupname1
    block = int(debugfs(image, "bmap / 0")) * 1024
    with open(image, "rb") as f:
        f.seek(block)
        at = f.read(1024).index(b"dupname2")
    poke(image, block + at + 7, b"1")
    before = hashlib.sha256(image.read_bytes()).digest()
    names, looked_up, carried = await driver_view(image, "")
    assert hashlib.sha256(image.read_bytes()).digest() == before
    theirs, found = kernel_view(kernel_mount(image))
    assert names == theirs and names.count(b"dupname1") == 2
    first = found[b"dupname1"]
    assert looked_up == {name: found[name] for name in carried}
    assert carried[b"dupname1"] == {first} and first != found[b"other"]


async def test_misrouted_names_are_left_out_as_the_kernel_misses_them(
    tmp_path: Path, kernel_mount
) -> None:
    image = tmp_path / "image"
    make_dir_image(image, 1024, [b"file-%04d" % i for i in range(150)], csum=False)
    root = _dx_root_offset(image, 1024)
    with open(image, "rb") as f:  # swap the blocks of the root's first two entries
        f.seek(root + 0x20)
        table = f.read(16)
    poke(image, root + 0x24, table[12:16])
    poke(image, root + 0x2C, table[4:8])
    before = hashlib.sha256(image.read_bytes()).digest()
    names, looked_up, carried = await driver_view(image, DIR)
    assert hashlib.sha256(image.read_bytes()).digest() == before
    theirs, found = kernel_view(kernel_mount(image) / DIR)
    missed = {name for name, ino in found.items() if ino < 0}
    assert 0 < len(missed) < len(theirs)  # the case holds what it claims
    assert names == [name for name in theirs if name not in missed]
    assert looked_up == {name: found[name] for name in names}
    assert carried == {name: {found[name]} for name in names}
    img, fs = await open_image(image)
    with img:  # the missed names fail their lookup as on the kernel
        ino = (await resolve(fs, DIR)).ino
        for name in missed:
            with pytest.raises(FSError) as info:
                await fs.lookup(ino, name)
            assert -info.value.errno == found[name]
