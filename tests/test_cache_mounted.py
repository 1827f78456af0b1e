"""Through a real mount: a file the kernel has let go of but the broker still caches is read
again without one driver call, and `uvfs stats` shows it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, run_uvfs

pytestmark = pytest.mark.slow
SIZE = 8 << 20


def stats(mountpoint: Path) -> dict[str, int]:
    lines = run_uvfs("stats", str(mountpoint)).stdout.splitlines()[1:]
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


def evict_from_kernel(path: Path) -> None:
    """Drop `path`'s pages from the kernel's page cache (nothing else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_reread_after_kernel_eviction_never_reaches_the_driver(mount, tmp_path: Path) -> None:
    need("mke2fs")
    tree = tmp_path / "tree"
    tree.mkdir()
    data = os.urandom(SIZE)
    (tree / "big").write_bytes(data)
    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree), str(image), "32M"],
                   check=True)  # fmt: skip
    mnt = mount(image, options="ro")

    assert (mnt / "big").read_bytes() == data
    first = stats(mnt)
    assert first["cache.bytes_from_driver"] == SIZE

    evict_from_kernel(mnt / "big")
    assert (mnt / "big").read_bytes() == data
    second = stats(mnt)
    assert second["cache.bytes_from_driver"] == SIZE  # not one more byte from the driver
    assert second["cache.misses"] == first["cache.misses"]
    assert second["cache.bytes_from_cache"] - first["cache.bytes_from_cache"] == SIZE
    assert second["cache.hits"] > first["cache.hits"]


def test_cache_size_zero_sends_every_read_to_the_driver(mount, tmp_path: Path) -> None:
    need("mke2fs")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "small").write_bytes(b"x" * 10000)
    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree), str(image), "8M"],
                   check=True)  # fmt: skip
    mnt = mount(image, options="ro,cache_size=0")
    assert (mnt / "small").read_bytes() == b"x" * 10000
    assert not any(key.startswith("cache.") for key in stats(mnt))


def test_rewriting_a_file_through_a_writable_mount_never_shows_old_bytes(
    mount, tmp_path: Path
) -> None:
    """O_TRUNC (the kernel leaves it to open), truncate up and overwrite, all through the
    broker's cache: every read shows exactly what was written last."""
    need("mke2fs")
    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(image), "8M"], check=True)
    mnt = mount(image, options="rw")
    f = mnt / "f"
    f.write_bytes(b"hello\nappended\n")
    assert f.read_bytes() == b"hello\nappended\n"
    f.write_bytes(b"new")  # open(O_TRUNC)
    assert f.read_bytes() == b"new"
    os.truncate(f, 20)
    assert f.read_bytes() == b"new" + bytes(17)
    evict_from_kernel(f)  # the broker's cache must agree with what the kernel showed
    assert f.read_bytes() == b"new" + bytes(17)
    with open(f, "r+b") as handle:
        handle.seek(18)
        handle.write(b"zz")
    evict_from_kernel(f)
    assert f.read_bytes() == b"new" + bytes(15) + b"zz"
